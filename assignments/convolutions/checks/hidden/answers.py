"""The answer key of this assignment, in NumPy alone, for the trusted side of grading.

Hidden checks load it with ``load_helpers(__file__, "answers")`` and compare a student's
output with it. It lives in ``checks/hidden``, so it never ships to students and the sandbox
never shows it. Its functions compute the same numbers as their TensorFlow counterparts in
the repository's ``reference`` package (`corr2d`, `edge_image`, `detect_edges`,
`diagonal_edge_image`, `kernel_matrix`; tests/test_reference_answers.py holds each pair
equal within explicit tolerances), but loading this module does not import TensorFlow.
That matters for throughput: a grading process that imports TensorFlow pays about three
CPU-seconds at the start of every batch, competing with the worker zygote's own import, and
every check that runs a TensorFlow op pays TensorFlow's per-op cost again (measured in
issue 7).

Computed answers are float64 NumPy arrays: the checks compare in float64 anyway, and a
float64 answer is at least as exact as the float32 one TensorFlow would give. The test
images are float32, as in the TensorFlow versions, because checks pass them on to the
student's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EDGE_KERNEL = np.array([[1.0, -1.0]])


def _matrix(value, name: str, func: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"`{func}` expects a non-empty 2-D `{name}`. Received: {name}.shape={array.shape}"
        )
    return array


def _fits(input_shape: tuple[int, int], kernel_shape: tuple[int, int], func: str) -> None:
    if kernel_shape[0] > input_shape[0] or kernel_shape[1] > input_shape[1]:
        raise ValueError(
            f"`{func}` needs a kernel no larger than the input. "
            f"Received: input shape {input_shape}, kernel shape {kernel_shape}"
        )


def corr2d(X, K) -> np.ndarray:
    """2-D cross-correlation (no padding, stride 1) of array-likes `X` and `K`.

    Returns:
        A float64 array of shape ``(h - kh + 1, w - kw + 1)``.

    Raises:
        ValueError: If `X` or `K` is not a non-empty 2-D array, or `K` does not fit in `X`.
    """
    X = _matrix(X, "X", "corr2d")
    K = _matrix(K, "K", "corr2d")
    _fits(X.shape, K.shape, "corr2d")
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    return np.einsum("ijkl,kl->ij", windows, K)


def edge_image(height: int = 6, width: int = 8) -> np.ndarray:
    """Float32 ones with a zero stripe over columns ``width // 4`` to ``width - width // 4 - 1``."""
    if height < 1 or width < 4:
        raise ValueError(
            f"`edge_image` needs height >= 1 and width >= 4. Received: {height}, {width}"
        )
    image = np.ones((height, width), dtype=np.float32)
    image[:, width // 4 : width - width // 4] = 0.0
    return image


def detect_edges(X, K=EDGE_KERNEL) -> np.ndarray:
    """``corr2d(X, K)``, with the horizontal-difference kernel ``[[1, -1]]`` by default."""
    return corr2d(X, K)


def diagonal_edge_image(n: int = 8) -> np.ndarray:
    """A float32 ``n x n`` image: 1 on and above the main diagonal, 0 below it."""
    if n < 2:
        raise ValueError(f"`diagonal_edge_image` needs n >= 2. Received: n={n}")
    return np.triu(np.ones((n, n), dtype=np.float32))


def kernel_matrix(K, input_shape: Sequence[int]) -> np.ndarray:
    """The matrix ``W`` with ``W @ X.ravel() == corr2d(X, K).ravel()`` for `X` of `input_shape`.

    Returns:
        A float64 array of shape ``((h - kh + 1) * (w - kw + 1), h * w)``.

    Raises:
        ValueError: If `K` is not a non-empty 2-D array or does not fit in `input_shape`.
    """
    K = _matrix(K, "K", "kernel_matrix")
    h, w = (int(d) for d in input_shape)
    _fits((h, w), K.shape, "kernel_matrix")
    (kh, kw), oh, ow = K.shape, h - K.shape[0] + 1, w - K.shape[1] + 1
    W = np.zeros((oh, ow, h, w))
    # Output pixel (i, j) reads the window whose top-left corner is input pixel (i, j).
    for i in range(oh):
        for j in range(ow):
            W[i, j, i : i + kh, j : j + kw] = K
    return W.reshape(oh * ow, h * w)
