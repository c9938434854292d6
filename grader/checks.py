"""Helpers for check authors: comparisons whose failure messages a student can act on."""

from __future__ import annotations

import numpy as np

from .proxy import (
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
    "expect_close",
    "expect_shape",
]


def as_array(got, what: str) -> np.ndarray:
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


def expect_shape(got, shape: tuple, what: str) -> np.ndarray:
    arr = as_array(got, what)
    if arr.shape != tuple(shape):
        raise CheckFailure(f"{what} has shape {arr.shape}, expected shape {tuple(shape)}")
    return arr


def expect_close(got, want, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> np.ndarray:
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
