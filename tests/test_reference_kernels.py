"""Specification of exercise 4: hand-designed kernels.

The finite-difference coefficients are cross-checked with `numpy.diff`, and
the kernels are applied to polynomial samples where the exact answer is known.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from reference import (
    corr2d,
    derivative_kernel,
    integral_kernel,
    min_kernel_size,
    second_derivative_kernel,
)


def row_of_samples(func, length=12):
    """func sampled at x = 0, 1, ..., length - 1 as a (1, length) float64 image."""
    return func(np.arange(length, dtype=np.float64))[None, :]


@pytest.mark.parametrize("d", range(0, 9))
def test_derivative_kernel_matches_numpy_diff(d):
    K = derivative_kernel(d)
    assert K.shape == (1, d + 1) and K.dtype == tf.float32
    # Row i of diff(eye) is the d-th difference of unit vector e_i.
    expected = np.diff(np.eye(d + 1), n=d, axis=0)
    np.testing.assert_array_equal(K.numpy(), expected)


@pytest.mark.parametrize("d", range(0, 9))
def test_derivative_of_x_to_the_d_is_d_factorial(d):
    Y = corr2d(row_of_samples(lambda x: x**d, length=d + 6), derivative_kernel(d))
    np.testing.assert_allclose(Y.numpy(), np.full((1, 6), math.factorial(d)), rtol=1e-12)


@pytest.mark.parametrize("d", range(1, 7))
def test_derivative_of_a_lower_degree_polynomial_is_zero(d):
    coefficients = np.random.default_rng(d).uniform(-2.0, 2.0, size=d)  # degree d - 1
    Y = corr2d(row_of_samples(np.polynomial.Polynomial(coefficients)), derivative_kernel(d))
    np.testing.assert_allclose(Y.numpy(), np.zeros(Y.shape), atol=1e-8)


def test_second_derivative_of_x_squared_is_two():
    K = second_derivative_kernel()
    np.testing.assert_array_equal(K.numpy(), [[1.0, -2.0, 1.0]])
    Y = corr2d(row_of_samples(np.square), K)
    np.testing.assert_allclose(Y.numpy(), np.full((1, 10), 2.0), rtol=1e-12)


def test_second_derivative_kernel_works_down_columns_when_transposed():
    X = np.repeat(np.arange(7.0)[:, None] ** 2, 3, axis=1)
    Y = corr2d(X, tf.transpose(second_derivative_kernel()))
    np.testing.assert_allclose(Y.numpy(), np.full((5, 3), 2.0), rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_integral_kernel_of_ones_is_n(n):
    K = integral_kernel(n)
    assert K.shape == (1, n) and K.dtype == tf.float32
    Y = corr2d(np.ones((3, 12)), K)
    np.testing.assert_array_equal(Y.numpy(), np.full((3, 13 - n), float(n)))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_integral_kernel_gives_window_sums(n):
    X = np.random.default_rng(n).standard_normal((4, 10))
    running = np.cumsum(np.pad(X, ((0, 0), (1, 0))), axis=1)
    np.testing.assert_allclose(
        corr2d(X, integral_kernel(n)).numpy(), running[:, n:] - running[:, :-n], atol=1e-12
    )


@pytest.mark.parametrize("d", range(0, 7))
def test_min_kernel_size(d):
    assert min_kernel_size(d) == d + 1 == derivative_kernel(d).shape[1]


@pytest.mark.parametrize(
    "func, argument, message",
    [
        (derivative_kernel, -1, r"`derivative_kernel` expects `d` to be an integer >= 0\. "),
        (derivative_kernel, 1.5, r"Received: d=1\.5"),
        (derivative_kernel, True, r"Received: d=True"),
        (min_kernel_size, -2, r"`min_kernel_size` expects `d`.*Received: d=-2"),
        (integral_kernel, 0, r"`integral_kernel` expects `n` to be an integer >= 1\. "),
        (integral_kernel, "3", r"Received: n='3'"),
    ],
)
def test_bad_arguments(func, argument, message):
    with pytest.raises(ValueError, match=message):
        func(argument)
