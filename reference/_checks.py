"""Input conversion and validation shared by the reference routines.

Every public routine funnels its arguments through these helpers so that the
same input is accepted (or rejected with the same message) everywhere.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

#: Anything `tf.convert_to_tensor` understands: tensors, variables (tf and
#: Keras), numpy arrays, nested Python lists.
TensorLike = Any

# Rank used to pick a common float dtype when X and K disagree.
_FLOAT_RANK = {tf.float16: 1, tf.bfloat16: 1, tf.float32: 2, tf.float64: 3}


def shape_repr(shape: Any) -> str:
    """Formats a shape as a Python tuple, e.g. ``(3,)`` or ``(2, None)``."""
    shape = tf.TensorShape(shape)
    if shape.rank is None:
        return "<unknown rank>"
    return repr(tuple(shape.as_list()))


def to_float_tensor(value: TensorLike, name: str, func: str) -> tf.Tensor:
    """Converts `value` to a floating tensor.

    Integer and boolean inputs become float32; float16, bfloat16, float32 and
    float64 are kept as they are. Python lists follow TensorFlow's rules, so a
    list of Python floats becomes float32.

    Raises:
        TypeError: If the value is not real-valued (complex, string, ...).
    """
    tensor = tf.convert_to_tensor(value)
    dtype = tensor.dtype
    if dtype.is_integer or dtype == tf.bool:
        return tf.cast(tensor, tf.float32)
    if dtype in _FLOAT_RANK:
        return tensor
    raise TypeError(
        f"`{func}` needs a real-valued `{name}` (integer or floating point). "
        f"Received: {name}.dtype={dtype.name}"
    )


def common_float_dtype(a: tf.DType, b: tf.DType) -> tf.DType:
    """Returns the float dtype both operands are computed in.

    Equal dtypes are kept; otherwise the wider one wins, and the two 16-bit
    formats (which cannot represent each other) meet in float32.
    """
    if a == b:
        return a
    rank_a, rank_b = _FLOAT_RANK[a], _FLOAT_RANK[b]
    if rank_a == rank_b:
        return tf.float32
    return a if rank_a > rank_b else b


def check_matrix(tensor: tf.Tensor, name: str, func: str) -> None:
    """Raises `ValueError` unless `tensor` is 2-D with no zero-length axis.

    A tensor of unknown rank (possible only inside `tf.function`) is let through.
    """
    shape = tensor.shape
    if shape.rank is None:
        return
    if shape.rank != 2:
        raise ValueError(
            f"`{func}` expects a 2-D `{name}` (height, width), but it has "
            f"{shape.rank} dimension(s). Received: {name}.shape={shape_repr(shape)}"
        )
    if 0 in shape.as_list():
        raise ValueError(
            f"`{func}` expects a non-empty `{name}`. Received: {name}.shape={shape_repr(shape)}"
        )


def check_kernel_fits(input_shape: Any, kernel_shape: Any, func: str) -> None:
    """Raises `ValueError` if the kernel is taller or wider than the input.

    Unknown dimensions (None, or an unknown rank inside `tf.function`) are
    not checked.
    """
    input_shape, kernel_shape = tf.TensorShape(input_shape), tf.TensorShape(kernel_shape)
    if input_shape.rank is None or kernel_shape.rank is None:
        return
    in_dims, k_dims = input_shape.as_list(), kernel_shape.as_list()
    for size, ksize in zip(in_dims, k_dims, strict=True):
        if size is not None and ksize is not None and ksize > size:
            raise ValueError(
                f"`{func}` needs a kernel no larger than the input in each "
                f"dimension. Received: X.shape={shape_repr(in_dims)}, "
                f"K.shape={shape_repr(k_dims)}"
            )


def prepare_pair(X: TensorLike, K: TensorLike, func: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Converts, validates and casts an (input, kernel) pair to one float dtype."""
    X = to_float_tensor(X, "X", func)
    K = to_float_tensor(K, "K", func)
    check_matrix(X, "X", func)
    check_matrix(K, "K", func)
    check_kernel_fits(X.shape, K.shape, func)
    dtype = common_float_dtype(X.dtype, K.dtype)
    return tf.cast(X, dtype), tf.cast(K, dtype)


def check_int(value: Any, name: str, func: str, minimum: int) -> int:
    """Returns `value` as an int, raising `ValueError` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"`{func}` expects `{name}` to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def normalize_kernel_size(kernel_size: Any, func: str) -> tuple[int, int]:
    """Turns an int or a pair of ints into a `(height, width)` tuple.

    Follows Keras: a single int ``n`` means ``(n, n)``.

    Raises:
        ValueError: If it is not one or two positive integers.
    """
    if isinstance(kernel_size, numbers.Integral) and not isinstance(kernel_size, bool):
        dims: Sequence[Any] = (kernel_size, kernel_size)
    elif isinstance(kernel_size, Sequence | tf.TensorShape) and not isinstance(kernel_size, str):
        dims = tuple(kernel_size)
    else:
        dims = ()
    valid = len(dims) == 2 and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims
    )
    if not valid:
        raise ValueError(
            f"`{func}` expects `kernel_size` to be a positive int or a pair of "
            f"positive ints. Received: kernel_size={kernel_size!r}"
        )
    return int(dims[0]), int(dims[1])
