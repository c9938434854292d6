"""Specification of exercises 1 and 2: diagonal edges and gradients through `Conv2D`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from reference import (
    DiagonalEdgeAnswers,
    LayerGradients,
    corr2d,
    corr2d_loop,
    corr2d_matmul,
    custom_layer_gradients,
    diagonal_edge_answers,
    diagonal_edge_image,
)


def np_diagonal_image(n):
    """1 where column >= row, else 0 (independent construction)."""
    return np.array([[1.0 if col >= row else 0.0 for col in range(n)] for row in range(n)])


def np_corr2d(X, K):
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    return np.einsum("ijab,ab->ij", windows, K)


# --- exercise 1 -----------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 8, 13])
def test_diagonal_image(n):
    X = diagonal_edge_image(n)
    assert X.dtype == tf.float32
    np.testing.assert_array_equal(X.numpy(), np_diagonal_image(n))


@pytest.mark.parametrize("n", [2, 5, 8])
def test_answers_match_numpy(n):
    answers = diagonal_edge_answers(n)
    assert isinstance(answers, DiagonalEdgeAnswers)
    X, K = np_diagonal_image(n), np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(answers.image.numpy(), X)
    np.testing.assert_array_equal(answers.apply_kernel.numpy(), np_corr2d(X, K))
    np.testing.assert_array_equal(answers.transpose_image.numpy(), np_corr2d(X.T, K))
    np.testing.assert_array_equal(answers.transpose_kernel.numpy(), np_corr2d(X, K.T))


def test_answers_as_documented():
    n = 8
    answers = diagonal_edge_answers(n)
    # K finds the edge on every row but the first, as a 0 -> 1 step: -1.
    np.testing.assert_array_equal(answers.apply_kernel.numpy(), -np.eye(n, n - 1, k=-1))
    # Transposing X flips the step to 1 -> 0: the edge is still found, now +1.
    np.testing.assert_array_equal(answers.transpose_image.numpy(), np.eye(n, n - 1))
    # K.T looks down the columns, and the diagonal edge crosses those too.
    np.testing.assert_array_equal(answers.transpose_kernel.numpy(), np.eye(n - 1, n))
    np.testing.assert_array_equal(
        answers.transpose_kernel.numpy(), answers.transpose_image.numpy().T
    )


@pytest.mark.parametrize("n", [1, 0, 2.0])
def test_diagonal_image_bad_size(n):
    with pytest.raises(ValueError, match=rf"`n` to be an integer >= 2\. Received: n={n!r}"):
        diagonal_edge_image(n)


# --- exercise 2 -----------------------------------------------------------------


def test_loop_correlation_loses_the_weight_gradient():
    result = custom_layer_gradients()
    assert isinstance(result, LayerGradients)
    assert result.weight is None
    assert result.bias is not None and result.bias.shape == (1,)
    assert np.all(np.isfinite(result.bias.numpy()))
    assert result.apply_warning is not None
    assert "Gradients do not exist for variables" in result.apply_warning
    assert "weight" in result.apply_warning
    assert result.apply_error == "ValueError: No gradients provided for any variable."


@pytest.mark.parametrize("corr", [corr2d, corr2d_matmul], ids=["corr2d", "corr2d_matmul"])
def test_differentiable_correlation_gives_both_gradients(corr):
    result = custom_layer_gradients(corr)
    assert result.weight is not None and result.weight.shape == (1, 2)
    assert result.bias is not None
    assert result.apply_warning is None
    assert result.apply_error is None


def test_bias_gradient_is_the_same_either_way():
    loop, vectorized = custom_layer_gradients(corr2d_loop), custom_layer_gradients(corr2d)
    np.testing.assert_allclose(loop.bias.numpy(), vectorized.bias.numpy(), rtol=1e-6)


def test_weight_gradient_matches_numpy():
    # The documented initial weights: RandomNormal seeded with seed and seed + 1.
    result = custom_layer_gradients(corr2d, seed=5)
    w0 = keras.initializers.RandomNormal(seed=5)((1, 2)).numpy()
    b0 = keras.initializers.RandomNormal(seed=6)((1,)).numpy()
    X = np.ones((6, 8))
    X[:, 2:6] = 0.0
    Y = np_corr2d(X, [[1.0, -1.0]])
    residual = np_corr2d(X, w0) + b0[0] - Y
    np.testing.assert_allclose(result.weight.numpy(), 2 * np_corr2d(X, residual), rtol=1e-5)
    np.testing.assert_allclose(result.bias.numpy(), [2 * residual.sum()], rtol=1e-5)
