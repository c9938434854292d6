"""Exercise 4: kernels designed by hand from finite differences.

All kernels here are horizontal (one row), act along the width axis with a
sample spacing of 1, and are meant for `corr2d`, which does not flip the
kernel. Transpose a kernel to act along the height axis instead.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from reference._checks import check_int


def derivative_kernel(d: int) -> tf.Tensor:
    """Forward-difference kernel of degree `d`, shape ``(1, d + 1)``.

    Entry ``k`` is ``(-1) ** (d - k) * comb(d, k)``, so ``corr2d(X, kernel)``
    at ``(i, j)`` is the ``d``-th forward difference of row ``i`` starting at
    column ``j``: the discrete ``d``-th derivative for unit spacing. Applied
    to samples of ``x ** d`` it gives ``d!`` everywhere; degree 1 is
    ``[[-1, 1]]`` (the negative of `EDGE_KERNEL`), degree 2 is
    ``[[1, -2, 1]]``, degree 0 is the identity ``[[1]]``.

    Args:
        d: Degree of the derivative, >= 0.

    Returns:
        A float32 `tf.Tensor` of shape ``(1, d + 1)``.

    Raises:
        ValueError: If `d` is not an integer >= 0.
    """
    d = check_int(d, "d", "derivative_kernel", 0)
    weights = [(-1) ** (d - k) * math.comb(d, k) for k in range(d + 1)]
    return tf.constant([weights], dtype=tf.float32)


def second_derivative_kernel() -> tf.Tensor:
    """Second-derivative kernel ``[[1, -2, 1]]`` (shape ``(1, 3)``).

    ``f(x) - 2 f(x + 1) + f(x + 2)`` is the second difference of a row, so
    on samples of ``x ** 2`` the output is 2 everywhere. For both axes at
    once, the 3 x 3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` sums
    this kernel and its transpose (centred).

    Returns:
        A float32 `tf.Tensor` of shape ``(1, 3)``.
    """
    return derivative_kernel(2)


def integral_kernel(n: int) -> tf.Tensor:
    """Running-sum (discrete integral) kernel: ``n`` ones in a row.

    ``corr2d(X, kernel)`` at ``(i, j)`` sums ``X[i, j : j + n]``, the
    integral of the row over a window of ``n`` unit-spaced samples (left
    Riemann sum); on an image of ones it gives ``n``. For a 2-D integral over
    an ``n x n`` window use ``tf.ones((n, n))``.

    Args:
        n: Window length, >= 1.

    Returns:
        A float32 `tf.Tensor` of shape ``(1, n)``.

    Raises:
        ValueError: If `n` is not an integer >= 1.
    """
    n = check_int(n, "n", "integral_kernel", 1)
    return tf.constant(np.ones((1, n), dtype=np.float32))


def min_kernel_size(d: int) -> int:
    """Smallest number of taps of a kernel that computes a degree-`d` derivative.

    Why not fewer: a kernel with ``m <= d`` taps reads only ``m`` samples,
    and through ``m`` points there is a polynomial of degree below ``m``
    (hence below ``d``) that agrees with ``x ** d`` there. The kernel cannot
    tell the two apart, yet their ``d``-th derivatives are ``d!`` and 0. So
    at least ``d + 1`` taps are needed, and `derivative_kernel` shows
    ``d + 1`` suffice: shape ``(1, d + 1)``, or ``(d + 1, 1)`` along the
    height axis.

    Args:
        d: Degree of the derivative, >= 0.

    Returns:
        ``d + 1``.

    Raises:
        ValueError: If `d` is not an integer >= 0.
    """
    return check_int(d, "d", "min_kernel_size", 0) + 1
