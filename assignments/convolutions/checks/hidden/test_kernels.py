"""Hidden checks of Exercise 4 (kernels): polynomials of every degree, other windows."""

import math

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


def apply(kernel, samples):
    k = kernel.reshape(-1)
    return np.array([np.dot(samples[j : j + k.size], k) for j in range(samples.size - k.size + 1)])


@pytest.mark.points(2)
def test_derivative_kernels_on_polynomials(student, rng):
    """derivative_kernel(d) for d = 0..5 on random polynomials"""
    x = np.arange(-3.0, 7.0)
    for d in range(6):
        kernel = np.asarray(student.derivative_kernel(d), dtype=np.float64)
        if kernel.shape != (1, d + 1):
            raise AssertionError(
                f"derivative_kernel({d}) has shape {kernel.shape}: wrong size. A derivative of "
                f"degree {d} needs d + 1 = {d + 1} entries, shape (1, {d + 1})."
            )
        coeffs = rng.integers(-3, 4, size=d + 1).astype(np.float64)
        coeffs[0] = rng.choice([1.0, 2.0, 3.0])  # leading coefficient, > 0
        out = apply(kernel, np.polyval(coeffs, x))
        want = coeffs[0] * math.factorial(d)
        if d % 2 == 1 and np.allclose(out, -want):
            raise AssertionError(
                f"derivative_kernel({d}) has the wrong sign convention: on a polynomial of "
                f"degree {d} with leading coefficient {coeffs[0]:g} it gives {-want:g} instead "
                f"of {want:g}. The result must be positive for increasing functions, so "
                "derivative_kernel(1) is [[-1, 1]], computing f(x + 1) - f(x)."
            )
        assert np.allclose(out, want, atol=1e-6 * max(1.0, np.abs(np.polyval(coeffs, x)).max())), (
            f"derivative_kernel({d}) on samples of a polynomial of degree {d} should give "
            f"{want:g} everywhere (leading coefficient times {d}!), got "
            f"{np.round(out, 3).tolist()}."
        )
        if d >= 1:
            lower = apply(kernel, np.polyval(coeffs[1:], x))
            assert np.allclose(lower, 0.0, atol=1e-6 * max(1.0, np.abs(coeffs).sum() * 7**d)), (
                f"derivative_kernel({d}) should give 0 on polynomials of degree below {d}."
            )


@pytest.mark.points(1)
def test_integral_kernel(student, rng):
    """integral_kernel(n) sums n consecutive samples"""
    for n in (1, 2, 4, 5):
        kernel = np.asarray(student.integral_kernel(n), dtype=np.float64)
        assert kernel.shape == (1, n), (
            f"integral_kernel({n}) has shape {kernel.shape}, expected (1, {n})"
        )
        samples = rng.normal(size=9)
        want = np.array([samples[j : j + n].sum() for j in range(9 - n + 1)])
        assert np.allclose(apply(kernel, samples), want), (
            f"integral_kernel({n}) must sum {n} consecutive samples: on ones it should give {n}."
        )


@pytest.mark.points(1)
def test_min_kernel_size(student):
    """min_kernel_size(d) for d = 0..6"""
    for d in range(7):
        got = helpers.number(student.min_kernel_size(d), f"min_kernel_size({d})")
        assert got == d + 1, (
            f"min_kernel_size({d}) is {got:g}, which is not right: how many samples must a "
            f"kernel see to tell x ** {d} apart from every polynomial of lower degree?"
        )
