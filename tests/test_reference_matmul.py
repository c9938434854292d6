"""Specification of exercise 3: `kernel_matrix` and `corr2d_matmul`.

The matrix is checked entry by entry against a NumPy construction written
here with explicit loops, and both routines against a NumPy correlation.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import corr2d, corr2d_matmul, kernel_matrix

PROPERTY = settings(max_examples=30, deadline=None)
RTOL, ATOL = 1e-5, 1e-4


def np_corr2d(X, K):
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    return np.einsum("ijab,ab->ij", windows, K)


def np_kernel_matrix(K, input_shape):
    """Row (i, j) of W places K over the window of X that starts at (i, j)."""
    K = np.asarray(K, dtype=np.float64)
    (h, w), (kh, kw) = input_shape, K.shape
    oh, ow = h - kh + 1, w - kw + 1
    W = np.zeros((oh * ow, h * w))
    for i in range(oh):
        for j in range(ow):
            image = np.zeros((h, w))
            image[i : i + kh, j : j + kw] = K
            W[i * ow + j] = image.ravel()
    return W


@st.composite
def problems(draw, max_side=9):
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (
        rng.standard_normal((h, w)).astype(np.float32),
        rng.standard_normal((kh, kw)).astype(np.float32),
    )


@PROPERTY
@given(problems())
def test_kernel_matrix_matches_numpy_and_corr2d(pair):
    X, K = pair
    W = kernel_matrix(K, X.shape)
    assert isinstance(W, tf.Tensor) and W.dtype == tf.float32
    np.testing.assert_array_equal(W.numpy(), np_kernel_matrix(K, X.shape))
    flat = np.asarray(W, dtype=np.float64) @ X.ravel().astype(np.float64)
    np.testing.assert_allclose(flat, corr2d(X, K).numpy().ravel(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        tf.linalg.matvec(W, tf.reshape(X, [-1])).numpy(),
        np_corr2d(X, K).ravel(),
        rtol=RTOL,
        atol=ATOL,
    )


@PROPERTY
@given(problems())
def test_corr2d_matmul_matches_numpy(pair):
    X, K = pair
    Y = corr2d_matmul(X, K)
    assert Y.shape == (X.shape[0] - K.shape[0] + 1, X.shape[1] - K.shape[1] + 1)
    np.testing.assert_allclose(Y.numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


def test_chapter_example():
    X = [[0.0, 1, 2], [3, 4, 5], [6, 7, 8]]
    K = [[0.0, 1], [2, 3]]
    np.testing.assert_array_equal(corr2d_matmul(X, K).numpy(), [[19, 25], [37, 43]])
    W = kernel_matrix(K, (3, 3)).numpy()
    np.testing.assert_array_equal(W @ np.arange(9.0), [19, 25, 37, 43])


@pytest.mark.parametrize(
    "shape, kernel_shape",
    [((4, 6), (1, 1)), ((4, 6), (4, 6)), ((1, 5), (1, 2)), ((5, 1), (2, 1))],
    ids=["1x1", "full", "row", "column"],
)
def test_edge_case_shapes(shape, kernel_shape):
    rng = np.random.default_rng(0)
    X, K = rng.standard_normal(shape), rng.standard_normal(kernel_shape)
    np.testing.assert_allclose(corr2d_matmul(X, K).numpy(), np_corr2d(X, K), rtol=1e-12)
    np.testing.assert_allclose(kernel_matrix(K, shape).numpy(), np_kernel_matrix(K, shape))


def test_corr2d_matmul_has_the_same_gradients_as_corr2d():
    rng = np.random.default_rng(1)
    X, K = tf.Variable(rng.standard_normal((5, 7))), tf.Variable(rng.standard_normal((2, 3)))
    grads = []
    for func in (corr2d, corr2d_matmul):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(func(X, K)))
        grads.append(tape.gradient(loss, [X, K]))
    for ours, theirs in zip(*grads, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_kernel_matrix_is_differentiable_in_the_kernel():
    K = tf.Variable([[1.0, 2.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(kernel_matrix(K, (2, 3)))
    # Every kernel entry appears once in each of the 2 * 2 rows.
    np.testing.assert_array_equal(tape.gradient(total, K).numpy(), [[4.0, 4.0]])


def test_dtypes_follow_corr2d():
    assert kernel_matrix(np.ones((2, 2), np.int32), (3, 3)).dtype == tf.float32
    assert kernel_matrix(np.ones((2, 2)), (3, 3)).dtype == tf.float64
    assert corr2d_matmul(np.ones((3, 3), np.int32), np.ones((2, 2), np.float32)).dtype == tf.float32


@pytest.mark.parametrize(
    "K, input_shape, message",
    [
        (np.ones((2, 2)), (3,), r"pair of positive ints.*Received: input_shape=\(3,\)"),
        (np.ones((2, 2)), (0, 3), r"Received: input_shape=\(0, 3\)"),
        (np.ones((2, 2)), "33", r"Received: input_shape='33'"),
        (np.ones((2, 2)), (1, 3), r"X\.shape=\(1, 3\), K\.shape=\(2, 2\)"),
        (np.ones(2), (3, 3), r"2-D `K`.*Received: K\.shape=\(2,\)"),
        (np.ones((0, 2)), (3, 3), r"non-empty `K`"),
    ],
    ids=["shape-1d", "shape-zero", "shape-str", "too-small", "K-1d", "K-empty"],
)
def test_kernel_matrix_bad_input(K, input_shape, message):
    with pytest.raises(ValueError, match=message):
        kernel_matrix(K, input_shape)


@pytest.mark.parametrize(
    "X, K, message",
    [
        (np.ones((2, 2)), np.ones((3, 1)), r"X\.shape=\(2, 2\), K\.shape=\(3, 1\)"),
        (np.ones((2, 2, 1)), np.ones((1, 1)), r"Received: X\.shape=\(2, 2, 1\)"),
        (np.ones((2, 0)), np.ones((1, 1)), r"non-empty `X`"),
    ],
    ids=["too-large", "X-3d", "X-empty"],
)
def test_corr2d_matmul_bad_input(X, K, message):
    with pytest.raises(ValueError, match=message):
        corr2d_matmul(X, K)
