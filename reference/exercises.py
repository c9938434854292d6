"""Computed answers to exercises 1 (diagonal edges) and 2 (gradients of `Conv2D`).

Exercises 3 and 4 live in `reference.matmul` and `reference.kernels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from reference._checks import check_int
from reference.correlation import corr2d, corr2d_loop
from reference.edges import EDGE_KERNEL, detect_edges, edge_image
from reference.layers import Conv2D


def diagonal_edge_image(n: int = 8) -> tf.Tensor:
    """An ``n x n`` image whose only edge is the main diagonal.

    Pixels on and above the main diagonal (``col >= row``) are 1, pixels
    below it are 0: the upper triangle is white, the lower-left triangle
    black, and every row and every column crosses the edge exactly once.

    Args:
        n: Side length, >= 2.

    Returns:
        A float32 `tf.Tensor` of shape ``(n, n)``.

    Raises:
        ValueError: If `n` is not an integer >= 2.
    """
    n = check_int(n, "n", "diagonal_edge_image", 2)
    return tf.constant(np.triu(np.ones((n, n), dtype=np.float32)))


class DiagonalEdgeAnswers(NamedTuple):
    """Exercise 1: `EDGE_KERNEL` (``K = [[1, -1]]``) meets `diagonal_edge_image`.

    Attributes:
        image: ``X = diagonal_edge_image(n)``.
        apply_kernel: ``corr2d(X, K)``, shape ``(n, n - 1)``: -1 at
            ``(i, i - 1)`` for ``i >= 1``, else 0. A diagonal edge changes
            value along every row, so K finds it; each row steps 0->1 just
            left of the diagonal, hence -1.
        transpose_image: ``corr2d(X.T, K)``, shape ``(n, n - 1)``: +1 at
            ``(i, i)`` for ``i <= n - 2``, else 0. Transposing swaps the
            black and white triangles, so every row now steps 1->0 and the
            sign flips; unlike the vertical stripe of `edge_image`, whose
            transpose gives all zeros, the diagonal edge is still found.
        transpose_kernel: ``corr2d(X, K.T)``, shape ``(n - 1, n)``: +1 at
            ``(i, i)`` for ``i <= n - 2``, else 0. ``K.T = [[1], [-1]]``
            measures change down the columns, and a diagonal edge also
            crosses every column, so it is detected too (from the white side
            above to the black side below, hence +1). It equals
            ``transpose_image`` transposed, since
            ``corr2d(X, K.T) == corr2d(X.T, K).T``.
    """

    image: tf.Tensor
    apply_kernel: tf.Tensor
    transpose_image: tf.Tensor
    transpose_kernel: tf.Tensor


def diagonal_edge_answers(n: int = 8) -> DiagonalEdgeAnswers:
    """Computes exercise 1's three answers on ``diagonal_edge_image(n)``.

    See `DiagonalEdgeAnswers` for what each array contains and why.

    Args:
        n: Side length of the image, >= 2.

    Returns:
        A `DiagonalEdgeAnswers`.
    """
    image = diagonal_edge_image(n)
    kernel = tf.constant(EDGE_KERNEL)
    return DiagonalEdgeAnswers(
        image=image,
        apply_kernel=corr2d(image, kernel),
        transpose_image=corr2d(tf.transpose(image), kernel),
        transpose_kernel=corr2d(image, tf.transpose(kernel)),
    )


@dataclass(frozen=True)
class LayerGradients:
    """Exercise 2: what `tf.GradientTape` and a Keras optimizer make of `Conv2D`.

    Attributes:
        weight: Gradient of the loss with respect to the layer's ``weight``:
            ``None`` when the correlation writes its output through
            `tf.Variable.assign` (`corr2d_loop`), a tensor for `corr2d`.
        bias: Gradient with respect to ``bias``. Never ``None``: the bias is
            added after the correlation, outside the broken path.
        apply_warning: Text of the warning that Keras 3's
            ``optimizer.apply_gradients`` gives for the tape's
            ``(weight, bias)`` gradients, or ``None``. Keras 3 does not raise
            when only some gradients are missing: it warns ("Gradients do not
            exist for variables [...]"), skips those variables and updates
            the rest, so the kernel silently stops learning.
        apply_error: ``"<ExceptionType>: <message>"`` raised by
            ``apply_gradients`` when given the ``weight`` gradient alone (as
            for a layer without bias), or ``None`` if it succeeds. With
            `corr2d_loop` this is Keras's "No gradients provided for any
            variable." error.
    """

    weight: tf.Tensor | None
    bias: tf.Tensor | None
    apply_warning: str | None
    apply_error: str | None


def _apply(gradients: list[Any], variables: list[Any]) -> tuple[str | None, str | None]:
    """Applies gradients with a fresh SGD optimizer; returns (warning, error) texts."""
    optimizer = keras.optimizers.SGD(learning_rate=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            error = None
        except Exception as exc:  # record whatever Keras raises, whatever its type
            error = f"{type(exc).__name__}: {exc}"
    warning = "\n".join(str(w.message) for w in caught) or None
    return warning, error


def custom_layer_gradients(corr: Callable[..., Any] = corr2d_loop, seed: int = 0) -> LayerGradients:
    """Differentiates a loss through `Conv2D` built on `corr` and reports the outcome.

    Builds ``Conv2D((1, 2), corr=corr)`` with ``weight`` and ``bias`` drawn
    from ``keras.initializers.RandomNormal`` seeded with `seed` and
    ``seed + 1``, computes the summed squared error between its output on
    `edge_image()` and the true edges, and asks the default `tf.GradientTape`
    for the gradients of ``weight`` and ``bias``. It then hands those gradients to a Keras SGD
    optimizer, first both, then the ``weight`` gradient alone, and records
    what Keras says (the texts are measured at run time, not stored).

    The answer to exercise 2: with `corr2d_loop` the ``weight`` gradient is
    ``None`` because `tf.Variable.assign` is not differentiable, so the tape
    loses the path from the kernel to the output; an optimizer then warns
    that gradients do not exist for ``weight``, or raises "No gradients
    provided for any variable." if nothing else has a gradient.

    Args:
        corr: Correlation function the layer uses (`corr2d_loop` by default).
        seed: Seed of the layer's initializers.

    Returns:
        A `LayerGradients`.
    """
    images = edge_image()
    targets = detect_edges(images)
    layer = Conv2D(
        (1, 2),
        corr=corr,
        kernel_initializer=keras.initializers.RandomNormal(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 1),
    )
    layer.build(images.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(images) - targets))
    weight_grad, bias_grad = tape.gradient(loss, [layer.weight, layer.bias])
    apply_warning, _ = _apply([weight_grad, bias_grad], [layer.weight, layer.bias])
    _, apply_error = _apply([weight_grad], [layer.weight])
    return LayerGradients(
        weight=weight_grad,
        bias=bias_grad,
        apply_warning=apply_warning,
        apply_error=apply_error,
    )
