"""The chapter's edge-detection example: a striped image and a difference kernel."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from reference._checks import TensorLike, check_int
from reference.correlation import corr2d

#: Horizontal difference kernel ``[[1, -1]]``: the output is ``X[i, j] - X[i, j+1]``,
#: so it is 1 where the image steps from 1 down to 0, -1 where it steps from 0
#: up to 1, and 0 on flat regions. Read-only float32 numpy array.
EDGE_KERNEL: np.ndarray = np.array([[1.0, -1.0]], dtype=np.float32)
EDGE_KERNEL.flags.writeable = False


def edge_image(height: int = 6, width: int = 8) -> tf.Tensor:
    """Builds the chapter's test image: white borders around a black stripe.

    All pixels are 1 except the columns ``width // 4`` up to (not including)
    ``width - width // 4``, which are 0. For the default 6 x 8 image that is
    columns 2..5, giving a 1->0 edge between columns 1 and 2 and a 0->1 edge
    between columns 5 and 6 on every row.

    Args:
        height: Number of rows, at least 1.
        width: Number of columns, at least 4 so that both edges exist.

    Returns:
        A float32 `tf.Tensor` of shape ``(height, width)``.

    Raises:
        ValueError: If `height` < 1 or `width` < 4.
    """
    height = check_int(height, "height", "edge_image", 1)
    width = check_int(width, "width", "edge_image", 4)
    image = np.ones((height, width), dtype=np.float32)
    image[:, width // 4 : width - width // 4] = 0.0
    return tf.constant(image)


def detect_edges(X: TensorLike, K: TensorLike = EDGE_KERNEL) -> tf.Tensor:
    """Finds vertical edges in `X` by cross-correlating it with `K`.

    With the default `EDGE_KERNEL`, the result has 1 at each 1->0 step along
    a row, -1 at each 0->1 step, and 0 elsewhere; horizontal edges are not
    seen (try ``detect_edges(tf.transpose(X))``: all zeros for `edge_image`).

    Args:
        X: 2-D image, any type `corr2d` accepts.
        K: 2-D kernel, `EDGE_KERNEL` by default.

    Returns:
        ``corr2d(X, K)``.

    Raises:
        ValueError: As for `corr2d`.
    """
    return corr2d(X, K)
