"""Public checks of Exercise 4 (kernels): the examples stated in the notebook."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


def apply(kernel, samples):
    """Cross-correlate a row of samples with a (1, m) kernel, as corr2d would."""
    k = kernel.reshape(-1)
    return np.array([np.dot(samples[j : j + k.size], k) for j in range(samples.size - k.size + 1)])


@pytest.mark.points(1)
def test_second_derivative_of_squares(student):
    """second_derivative_kernel() on samples of x ** 2 gives 2"""
    kernel = np.asarray(student.second_derivative_kernel(), dtype=np.float64)
    assert kernel.shape == (1, 3), (
        f"second_derivative_kernel() has shape {kernel.shape}, expected (1, 3)"
    )
    out = apply(kernel, np.arange(8.0) ** 2)
    assert np.allclose(out, 2.0), (
        f"on samples of x ** 2 the kernel gives {np.round(out, 3).tolist()}, expected 2 everywhere."
    )


@pytest.mark.points(1)
def test_first_derivative(student):
    """derivative_kernel(1) on samples of x gives 1"""
    kernel = np.asarray(student.derivative_kernel(1), dtype=np.float64)
    assert kernel.shape == (1, 2), (
        f"derivative_kernel(1) has shape {kernel.shape}: a first derivative needs a kernel of "
        "shape (1, 2)."
    )
    out = apply(kernel, np.arange(8.0))
    if np.allclose(out, -1.0):
        raise AssertionError(
            "derivative_kernel(1) gives -1 on the increasing samples of x: wrong sign "
            "convention. It must compute f(x + 1) - f(x), so the kernel is [[-1, 1]]."
        )
    assert np.allclose(out, 1.0), (
        f"derivative_kernel(1) gives {np.round(out, 3).tolist()} on samples of x, expected 1."
    )


@pytest.mark.points(0)
def test_formats_of_the_other_kernels(student):
    """integral_kernel(n) and min_kernel_size(d) can be called and give what the checks read"""
    kernel = np.asarray(student.integral_kernel(3), dtype=np.float64)
    assert kernel.shape == (1, 3), f"integral_kernel(3) has shape {kernel.shape}, expected (1, 3)."
    helpers.number(student.min_kernel_size(2), "min_kernel_size(2)")
