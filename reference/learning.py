"""Learning a kernel from an input/output pair by gradient descent."""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from reference._checks import (
    TensorLike,
    check_int,
    check_kernel_fits,
    check_matrix,
    normalize_kernel_size,
    shape_repr,
    to_float_tensor,
)


class KernelFit(NamedTuple):
    """Result of `learn_kernel`.

    Attributes:
        kernel: The learned kernel, a float32 numpy array of shape `kernel_size`.
        losses: Summed squared error before each update, one float per epoch.
    """

    kernel: np.ndarray
    losses: list[float]


def learn_kernel(
    X: TensorLike,
    Y: TensorLike,
    kernel_size: int | tuple[int, int] = (1, 2),
    lr: float = 3e-2,
    num_epochs: int = 10,
    seed: int = 0,
) -> KernelFit:
    """Recovers the kernel that maps `X` to `Y` by plain gradient descent.

    Trains a bias-free ``keras.layers.Conv2D(1, kernel_size)`` on the single
    example (`X`, `Y`), viewed as a batch of one single-channel image. Each
    epoch computes the summed squared error ``sum((conv(X) - Y) ** 2)``,
    takes its gradient with respect to the layer's ``kernel`` variable
    (recorded by the default `tf.GradientTape`, which watches trainable
    variables it sees being read) and steps ``kernel -= lr * gradient``.
    No optimizer object is involved.

    The initial kernel comes from Glorot-uniform initialization seeded with
    `seed`, so the result is the same on every run for a given seed. On the
    chapter's data (``edge_image()`` and its edges) 10 epochs at the default
    learning rate bring the kernel within 0.1 of ``[[1, -1]]``.

    Args:
        X: 2-D input image ``(h, w)``.
        Y: 2-D target ``(h - kh + 1, w - kw + 1)``, e.g. ``corr2d(X, K_true)``.
        kernel_size: Shape of the kernel to learn, ``(kh, kw)`` or one int.
        lr: Learning rate, > 0. Too large a step makes the loss grow; the
            usable limit depends on the scale of `X`.
        num_epochs: Number of gradient steps, >= 1.
        seed: Seed of the kernel initializer.

    Returns:
        A `KernelFit` ``(kernel, losses)``.

    Raises:
        ValueError: If `X` or `Y` is not 2-D and non-empty, the kernel does not
            fit in `X`, `Y` does not have the output shape, or `lr`,
            `num_epochs` or `kernel_size` is out of range.
    """
    func = "learn_kernel"
    kh, kw = normalize_kernel_size(kernel_size, func)
    num_epochs = check_int(num_epochs, "num_epochs", func, 1)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"`{func}` expects a positive, finite `lr`. Received: lr={lr!r}")
    X = tf.cast(to_float_tensor(X, "X", func), tf.float32)
    Y = tf.cast(to_float_tensor(Y, "Y", func), tf.float32)
    check_matrix(X, "X", func)
    check_matrix(Y, "Y", func)
    check_kernel_fits(X.shape, (kh, kw), func)
    h, w = X.shape
    expected = (h - kh + 1, w - kw + 1)
    if tuple(Y.shape) != expected:
        raise ValueError(
            f"`{func}` expects `Y` to have the output shape {expected} of a "
            f"{(kh, kw)} kernel on `X`. Received: X.shape={shape_repr(X.shape)}, "
            f"Y.shape={shape_repr(Y.shape)}"
        )

    conv = keras.layers.Conv2D(
        1,
        (kh, kw),
        use_bias=False,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )
    images = tf.reshape(X, (1, h, w, 1))
    targets = tf.reshape(Y, (1, *expected, 1))
    conv.build(images.shape)

    losses: list[float] = []
    for _ in range(num_epochs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(conv(images) - targets))
        gradient = tape.gradient(loss, conv.kernel)
        conv.kernel.assign_sub(lr * gradient)
        losses.append(float(loss))
    return KernelFit(kernel=np.asarray(conv.kernel).reshape(kh, kw), losses=losses)
