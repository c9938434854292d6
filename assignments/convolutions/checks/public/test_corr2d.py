"""Public checks of Part 1 (`corr2d`): the worked example of the notebook."""

import numpy as np
import pytest


def np_corr2d(X, K):
    """Cross-correlation in plain NumPy (the definition, written out)."""
    X, K = np.asarray(X, np.float64), np.asarray(K, np.float64)
    kh, kw = K.shape
    out = np.zeros((X.shape[0] - kh + 1, X.shape[1] - kw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(X[i : i + kh, j : j + kw] * K)
    return out


@pytest.mark.points(1)
def test_worked_example(student):
    """corr2d on the 3x3 worked example gives [[19, 25], [37, 43]]"""
    X = np.arange(9, dtype=np.float32).reshape(3, 3)
    K = np.arange(4, dtype=np.float32).reshape(2, 2)
    got = np.asarray(student.corr2d(X, K), dtype=np.float64)
    want = np_corr2d(X, K)
    if got.shape != want.shape:
        off_by_one = len(got.shape) == 2 and all(
            abs(g - w) <= 1 for g, w in zip(got.shape, want.shape, strict=True)
        )
        hint = (
            " The output shape is off by one: a kernel of height kh fits in "
            "h - kh + 1 positions, not h - kh or h - kh + 2."
            if off_by_one
            else ""
        )
        raise AssertionError(
            f"corr2d(X, K) has shape {got.shape}, expected {want.shape} "
            f"for X of shape (3, 3) and K of shape (2, 2).{hint}"
        )
    if np.allclose(got, np_corr2d(X, K[::-1, ::-1]), atol=1e-4):
        raise AssertionError(
            "corr2d(X, K) looks like true convolution: the kernel is flipped. "
            "Cross-correlation uses K as it is: output[i, j] = sum of X[i + a, j + b] * K[a, b]."
        )
    np.testing.assert_allclose(
        got, want, atol=1e-4, err_msg="corr2d(X, K) gives wrong values on the worked example"
    )
