"""Public check of Part 2 (`Conv2D`): the layer builds its two weights."""

import numpy as np
import pytest


def chapter_image():
    X = np.ones((6, 8), dtype=np.float32)
    X[:, 2:6] = 0.0
    return X


@pytest.mark.points(1)
def test_layer_builds_weight_and_bias(student):
    """Conv2D((1, 2)) on the 6x8 image creates weight (1, 2) and bias (1,)"""
    layer = student.Conv2D((1, 2))
    out = np.asarray(layer(chapter_image()))
    info = student.probe.layer_info(layer)
    assert info["is_keras_layer"], (
        f"Conv2D should subclass keras.layers.Layer; it is a {info['type']}."
    )
    assert info["has_weight"] and info["has_bias"], (
        "after its first call the layer needs the attributes `weight` and `bias`, created in "
        "build() with self.add_weight(...)."
    )
    shapes = sorted(tuple(shape) for _, shape in info["trainable"])
    assert shapes == [(1,), (1, 2)], (
        f"the layer's trainable weights have shapes {shapes}; expected a weight of shape (1, 2) "
        "and a bias of shape (1,), both created with self.add_weight(...)."
    )
    assert out.shape == (6, 7), (
        f"layer(X) for X of shape (6, 8) has shape {out.shape}, expected (6, 7)."
    )
