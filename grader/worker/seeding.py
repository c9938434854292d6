"""Seeding every random generator a notebook may draw from, in the worker.

The grader sends a seed before the notebook runs and before each check's calls (see
``grader/seeding.py``), so the same submission always sees the same numbers: Keras 3
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


def seed_new_libraries() -> None:
    """Seed TensorFlow if it was imported since the last seed.

    Only TensorFlow's own generators: Keras's seeding would also reseed ``random`` and
    NumPy, undoing a seed the student set on purpose. Keras draws its default seeds from
    ``random``, which is seeded already.
    """
    if _seed is not None and "tensorflow" not in _seeded and "tensorflow" in sys.modules:
        _seed_library("tensorflow", _seed)
