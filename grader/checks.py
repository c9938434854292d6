"""Helpers for check authors: comparisons whose failure messages a student can act on."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from grader.engine.proxy import (
    CheckFailure,
    MissingName,
    NotPlainData,
    Remote,
    StudentCodeRaised,
    WorkerGone,
)

__all__ = [
    "CheckFailure",
    "MissingName",
    "NotPlainData",
    "StudentCodeRaised",
    "WorkerGone",
    "as_array",
    "load_helpers",
    "expect_close",
    "expect_shape",
]


def as_array(got: object, what: str) -> np.ndarray:
    """``got`` as a float64 array, or a failure that says what the student returned instead."""
    if isinstance(got, Remote):
        raise CheckFailure(f"{what} returned a {got._label.split('-> ')[-1]}, expected an array")
    try:
        arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailure(
            f"{what} returned {type(got).__name__}, expected an array of numbers"
        ) from None
    return arr


def expect_shape(got: object, shape: Sequence[int], what: str) -> np.ndarray:
    arr = as_array(got, what)
    if arr.shape != tuple(shape):
        raise CheckFailure(f"{what} has shape {arr.shape}, expected shape {tuple(shape)}")
    return arr


def expect_close(
    got: object, want: npt.ArrayLike, what: str, atol: float = 1e-4, rtol: float = 1e-4
) -> np.ndarray:
    """Fail with a message naming the shape or the first wrong entry; returns the array."""
    want = np.asarray(want, dtype=np.float64)
    arr = expect_shape(got, want.shape, what)
    if not np.all(np.isfinite(arr)):
        raise CheckFailure(f"{what} contains NaN or infinite values")
    bad = ~np.isclose(arr, want, atol=atol, rtol=rtol)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CheckFailure(
            f"{what} is wrong at index {idx}: got {arr[idx]:.6g}, expected {want[idx]:.6g} "
            f"({int(bad.sum())} of {bad.size} entries differ)"
        )
    return arr


def load_helpers(check_file: str, name: str = "helpers") -> ModuleType:
    """A module the assignment's checks share, ``<name>.py``, loaded for a check file.

    Looked for beside the check file first, then in ``checks/public``. So a hidden check
    reaches both ``checks/hidden/<name>.py`` (an answer key: never released) and the public
    helpers, while a public check reaches the public helpers only (``checks/public`` ships to
    students, so its helpers must hold nothing hidden). Check files are not a package, so
    helpers are loaded by path, once per path; pytest collects only ``test_*.py``, so a
    helper is never taken for a check file.

    Raises:
        FileNotFoundError: neither folder holds ``<name>.py``.
    """
    here = Path(check_file).resolve().parent
    candidates = (here / f"{name}.py", here.parent / "public" / f"{name}.py")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"no shared check module {name}.py at {' or '.join(map(str, candidates))}"
        )
    key = "convgrade_check_helpers_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"no shared check module at {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
