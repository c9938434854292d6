"""Exercise 3: cross-correlation written as a single matrix multiplication.

Two equivalent views, both built from the same table of indices:

* `kernel_matrix` reshapes the *kernel*: a sparse matrix ``W`` of shape
  ``(oh * ow, h * w)`` whose row ``r`` holds the kernel's values at the
  positions of the window for output pixel ``r``, so that
  ``W @ vec(X) == vec(corr2d(X, K))`` (row-major ``vec``).
* `corr2d_matmul` reshapes the *input* ("im2col"): a dense matrix of shape
  ``(oh * ow, kh * kw)`` with one flattened window per row, multiplied by the
  flattened kernel. This is how many libraries implement convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from reference._checks import (
    TensorLike,
    check_kernel_fits,
    check_matrix,
    prepare_pair,
    to_float_tensor,
)


def _window_indices(input_shape: tuple[int, int], kernel_shape: tuple[int, int]) -> np.ndarray:
    """Row-major positions in ``vec(X)`` covered by each output pixel's window.

    Returns an int array of shape ``(oh * ow, kh * kw)``: entry ``[r, c]`` is
    the flat index of the input pixel that kernel element ``c`` meets when
    computing output pixel ``r``.
    """
    (h, w), (kh, kw) = input_shape, kernel_shape
    oh, ow = h - kh + 1, w - kw + 1
    rows = np.arange(oh)[:, None, None, None] + np.arange(kh)[None, None, :, None]
    cols = np.arange(ow)[None, :, None, None] + np.arange(kw)[None, None, None, :]
    return (rows * w + cols).reshape(oh * ow, kh * kw)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int]:
    dims = tuple(input_shape) if isinstance(input_shape, Sequence | tf.TensorShape) else ()
    if len(dims) != 2 or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(
            "`kernel_matrix` expects `input_shape` to be a pair of positive ints "
            f"(height, width). Received: input_shape={input_shape!r}"
        )
    return int(dims[0]), int(dims[1])


def kernel_matrix(K: TensorLike, input_shape: Sequence[int]) -> tf.Tensor:
    """Builds the matrix that applies `corr2d` with kernel `K` to a flattened input.

    For any ``X`` of shape `input_shape`,
    ``tf.linalg.matvec(W, tf.reshape(X, [-1]))`` equals
    ``tf.reshape(corr2d(X, K), [-1])`` (or with numpy:
    ``np.asarray(W) @ X.ravel()``). Each row contains the kernel's
    ``kh * kw`` values and zeros elsewhere; the matrix is differentiable with
    respect to `K`. It is mostly zeros and grows as ``(h * w) ** 2``, so it is
    for understanding and for small inputs.

    Args:
        K: Kernel of shape ``(kh, kw)``; ints are promoted to float32.
        input_shape: ``(h, w)``, the shape of the inputs the matrix will
            multiply; ``h >= kh`` and ``w >= kw``.

    Returns:
        A `tf.Tensor` of shape ``((h - kh + 1) * (w - kw + 1), h * w)`` with
        the dtype of `K`.

    Raises:
        ValueError: If `K` is not a non-empty 2-D array, `input_shape` is not
            two positive ints, or the kernel does not fit in the input.
    """
    K = to_float_tensor(K, "K", "kernel_matrix")
    check_matrix(K, "K", "kernel_matrix")
    h, w = _check_input_shape(input_shape)
    check_kernel_fits((h, w), K.shape, "kernel_matrix")
    kh, kw = K.shape
    columns = _window_indices((h, w), (kh, kw))
    num_rows = columns.shape[0]
    rows = np.repeat(np.arange(num_rows), kh * kw).reshape(columns.shape)
    positions = np.stack([rows, columns], axis=-1).reshape(-1, 2)
    values = tf.tile(tf.reshape(K, [-1]), [num_rows])
    return tf.scatter_nd(positions, values, shape=(num_rows, h * w))


def corr2d_matmul(X: TensorLike, K: TensorLike) -> tf.Tensor:
    """Cross-correlation as one matrix product, using the im2col layout.

    Gathers every ``kh x kw`` window of `X` into one row of a patch matrix of
    shape ``(oh * ow, kh * kw)``, multiplies it by the flattened kernel (a
    column of length ``kh * kw``) and reshapes the product to ``(oh, ow)``.
    Same inputs, dtype rules, errors and values as `corr2d`; differentiable
    with respect to both arguments.

    Args:
        X: Input of shape ``(h, w)``.
        K: Kernel of shape ``(kh, kw)``, no larger than `X`.

    Returns:
        A `tf.Tensor` of shape ``(h - kh + 1, w - kw + 1)``.

    Raises:
        ValueError: As for `corr2d`.
    """
    X, K = prepare_pair(X, K, "corr2d_matmul")
    (h, w), (kh, kw) = X.shape, K.shape
    patches = tf.gather(tf.reshape(X, [-1]), _window_indices((h, w), (kh, kw)))
    product = tf.matmul(patches, tf.reshape(K, [-1, 1]))
    return tf.reshape(product, (h - kh + 1, w - kw + 1))
