"""`Conv2D`: the chapter's hand-written convolutional layer, as a Keras 3 layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from reference._checks import check_kernel_fits, normalize_kernel_size, shape_repr
from reference.correlation import corr2d, corr2d_loop
from reference.matmul import corr2d_matmul

#: Correlation functions `Conv2D` can be built on, by the name stored in its config.
CORRELATIONS: dict[str, Callable[..., Any]] = {
    "corr2d": corr2d,
    "corr2d_loop": corr2d_loop,
    "corr2d_matmul": corr2d_matmul,
}


def _resolve_corr(corr: str | Callable[..., Any]) -> Callable[..., Any]:
    if isinstance(corr, str):
        if corr not in CORRELATIONS:
            raise ValueError(
                f"`Conv2D` knows the correlations {sorted(CORRELATIONS)}. Received: corr={corr!r}"
            )
        return CORRELATIONS[corr]
    if not callable(corr):
        raise ValueError(
            "`Conv2D` expects `corr` to be a function or one of "
            f"{sorted(CORRELATIONS)}. Received: corr={corr!r}"
        )
    return corr


@keras.saving.register_keras_serializable(package="reference")
class Conv2D(keras.layers.Layer):
    """Single-channel 2-D convolutional layer: ``corr2d(X, weight) + bias``.

    Unlike `keras.layers.Conv2D` it works on one 2-D image of shape
    ``(height, width)`` with no batch or channel axes, which keeps the
    arithmetic visible. Its two trainable weights are created in `build`:

    * ``weight``, shape `kernel_size`, the kernel;
    * ``bias``, shape ``(1,)``, a scalar added to every output pixel.

    Both start from a normal distribution (as in the chapter) unless other
    initializers are given, and both receive gradients when `corr` is
    differentiable (the default `corr2d`).

    Args:
        kernel_size: ``(kh, kw)``, or one int for a square kernel.
        corr: The correlation function, or its name: ``"corr2d"`` (default),
            ``"corr2d_matmul"``, or ``"corr2d_loop"`` (exercise 2: its
            output carries no gradient back to ``weight``). Any callable
            ``corr(X, K)`` also works, but then the config holds the function
            object and cannot be written to JSON.
        kernel_initializer: Keras initializer for ``weight``.
        bias_initializer: Keras initializer for ``bias``.
        **kwargs: Passed to `keras.layers.Layer` (``name``, ``dtype``, ...).

    Raises:
        ValueError: On an invalid `kernel_size` or `corr` (at construction),
            or when built for an input that is not 2-D or is smaller than the
            kernel.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        corr: str | Callable[..., Any] = "corr2d",
        kernel_initializer: Any = "random_normal",
        bias_initializer: Any = "random_normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size = normalize_kernel_size(kernel_size, "Conv2D")
        self.corr = _resolve_corr(corr)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape: Any) -> None:
        """Checks that inputs are 2-D and fit the kernel, then creates the weights."""
        shape = tf.TensorShape(input_shape)
        if shape.rank != 2:
            raise ValueError(
                "`Conv2D` expects 2-D inputs (height, width) without batch or "
                f"channel axes. Received: input_shape={shape_repr(shape)}"
            )
        check_kernel_fits(shape, self.kernel_size, "Conv2D")
        self.weight = self.add_weight(
            name="weight", shape=self.kernel_size, initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(1,), initializer=self.bias_initializer)

    def call(self, inputs: Any) -> tf.Tensor:
        """Returns ``corr(inputs, weight) + bias``."""
        return self.corr(inputs, self.weight) + self.bias

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        height, width = tf.TensorShape(input_shape).as_list()
        kh, kw = self.kernel_size
        return (
            None if height is None else height - kh + 1,
            None if width is None else width - kw + 1,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        names = {fn: name for name, fn in CORRELATIONS.items()}
        config.update(
            kernel_size=self.kernel_size,
            corr=names.get(self.corr, self.corr),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
