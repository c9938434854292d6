"""Seeding every random generator a notebook may draw from, in the worker.

The grader sends a seed before the notebook runs (:func:`seed_everything`) and before each
check's calls (:func:`seed_for_check`; see ``grader/seeding.py``), so the same submission
always sees the same numbers: Keras 3
initialisers without a seed draw theirs from Python's ``random``, TensorFlow's op-level
seeds come from its global seed, and ``tf.random.get_global_generator()`` is a separate
generator, replaced here by a seeded one.

TensorFlow imported after the last seed (a notebook that imports it itself when the zygote
did not preload it) is seeded right after the cell's import statement, through
:func:`seed_new_libraries`, with the same seed.
"""

from __future__ import annotations

import random
import sys

import numpy as np

_seed: int | None = None
_seeded: set[str] = set()


def _seed_library(name: str, seed: int) -> None:
    module = sys.modules.get(name)
    if module is None:
        return
    if name == "tensorflow":
        module.random.set_seed(seed)
        module.random.set_global_generator(module.random.Generator.from_seed(seed))
    elif name == "keras":
        module.utils.set_random_seed(seed)
    _seeded.add(name)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy, and TensorFlow and Keras if they are imported."""
    global _seed
    _seed = int(seed) % 2**31
    _seeded.clear()
    random.seed(_seed)
    np.random.seed(_seed)
    for name in ("tensorflow", "keras"):
        _seed_library(name, _seed)


def seed_for_check(seed: int) -> None:
    """Before a check's calls: reseed ``random``, NumPy and Keras's default seeds.

    Not TensorFlow's global seed: ``tf.random.set_seed`` clears TensorFlow's kernel caches,
    which made every later call slower (measured: a five-notebook batch took twice as long).
    TensorFlow's own op seeds, set once before the notebook ran, then advance the same way
    on every re-grade, because the calls that draw from them are the same.
    """
    seed = int(seed) % 2**31
    random.seed(seed)
    np.random.seed(seed)
    if "keras" in sys.modules:
        try:  # what keras.utils.set_random_seed does, minus its tf.random.set_seed
            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator

            global_state.set_global_attribute("global_random_seed", seed)
            global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        except (ImportError, AttributeError):  # another Keras: its defaults come from random
            pass


def seed_new_libraries() -> None:
    """Seed TensorFlow if it was imported since the last seed.

    Only TensorFlow's own generators: Keras's seeding would also reseed ``random`` and
    NumPy, undoing a seed the student set on purpose. Keras draws its default seeds from
    ``random``, which is seeded already.
    """
    if _seed is not None and "tensorflow" not in _seeded and "tensorflow" in sys.modules:
        _seed_library("tensorflow", _seed)
