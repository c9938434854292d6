"""Two-dimensional cross-correlation, the operation a convolutional layer computes.

`corr2d` is the one to use: a single `tf.nn.conv2d` call, differentiable with
respect to both the input and the kernel. `corr2d_loop` computes the same
numbers one output pixel at a time by assigning into a `tf.Variable`; it exists
for teaching, and because assignment cuts the gradient path (exercise 2).
"""

from __future__ import annotations

import itertools

import tensorflow as tf

from reference._checks import TensorLike, prepare_pair


def corr2d(X: TensorLike, K: TensorLike) -> tf.Tensor:
    """Cross-correlates a 2-D input with a 2-D kernel (no padding, stride 1).

    Output pixel ``(i, j)`` is the sum of the elementwise product of `K` with
    the window of `X` whose top-left corner is ``(i, j)``. The kernel is not
    flipped (that would be a convolution in the strict mathematical sense).

    The work is one vectorized `tf.nn.conv2d` call on the inputs viewed as a
    batch of one single-channel image, so gradients flow to both `X` and `K`.

    Args:
        X: Input of shape ``(h, w)``: a tensor, variable, numpy array or nested
            list. Integer and boolean inputs are promoted to float32; float16,
            bfloat16, float32 and float64 are kept.
        K: Kernel of shape ``(kh, kw)`` with ``kh <= h`` and ``kw <= w``, same
            accepted types. If `X` and `K` have different float dtypes, both
            are cast to the wider one.

    Returns:
        A `tf.Tensor` of shape ``(h - kh + 1, w - kw + 1)``.

    Raises:
        ValueError: If `X` or `K` is not 2-D, is empty, or if `K` is larger
            than `X` in either dimension.
        TypeError: If an input is not real-valued (complex, string).

    Example:
        >>> corr2d([[0.0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0.0, 1], [2, 3]])
        <tf.Tensor: shape=(2, 2), dtype=float32, numpy=
        array([[19., 25.],
               [37., 43.]], dtype=float32)>
    """
    X, K = prepare_pair(X, K, "corr2d")
    # Reshapes (unlike slicing with new axes) reuse the buffers, no copy.
    image = tf.expand_dims(tf.expand_dims(X, 0), -1)  # (batch=1, h, w, channels=1)
    filters = tf.expand_dims(tf.expand_dims(K, -1), -1)  # (kh, kw, in=1, out=1)
    out = tf.nn.conv2d(image, filters, strides=1, padding="VALID")
    return tf.squeeze(out, axis=(0, 3))


def corr2d_loop(X: TensorLike, K: TensorLike) -> tf.Variable:
    """Cross-correlation computed one output pixel at a time (teaching version).

    Same inputs, promotion rules and errors as `corr2d`, and the same values,
    but each output pixel is written with `tf.Variable.assign` inside two
    Python loops. That makes it slow (one small TensorFlow op per pixel) and
    opaque to `tf.GradientTape`: an assignment is not differentiable, so the
    gradient of anything computed from the result with respect to `K` (or `X`)
    is ``None``. Eager mode only, since it creates a variable.

    Args:
        X: Input of shape ``(h, w)``.
        K: Kernel of shape ``(kh, kw)``, no larger than `X`.

    Returns:
        A new `tf.Variable` of shape ``(h - kh + 1, w - kw + 1)``.

    Raises:
        ValueError: As for `corr2d`.
        TypeError: As for `corr2d`.
    """
    X, K = prepare_pair(X, K, "corr2d_loop")
    kh, kw = K.shape
    out_h, out_w = X.shape[0] - kh + 1, X.shape[1] - kw + 1
    result = tf.Variable(tf.zeros((out_h, out_w), dtype=X.dtype), trainable=False)
    for row, col in itertools.product(range(out_h), range(out_w)):
        window = X[row : row + kh, col : col + kw]
        result[row, col].assign(tf.reduce_sum(window * K))
    return result
