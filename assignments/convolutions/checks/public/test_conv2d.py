"""Public check of Part 2 (`Conv2D`): the layer builds its two weights when first called."""

import numpy as np
import pytest


@pytest.mark.points(1)
def test_layer_builds_weight_and_bias(student):
    """Conv2D((1, 2)) creates a weight of shape (1, 2) and a bias of shape (1,)"""
    layer = student.Conv2D((1, 2))
    layer(np.ones((6, 6), dtype=np.float32))
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
