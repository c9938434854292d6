"""Public check of Part 2 (`Conv2D`): the layer's signature, and the two weights it builds.

Everything judged here is data fetched from the layer (its weights as arrays), never a
claim computed inside the notebook's process about the layer (docs/checks-api.md).
"""

import numpy as np
import pytest

from grader.checks import CheckFailure, NotPlainData, StudentCodeRaised, load_helpers

helpers = load_helpers(__file__)


def weight_of(student, layer, name: str, kernel_size) -> np.ndarray:
    """layer.<name> as an array, or a failure saying what the layer lacks."""
    try:
        return np.asarray(student.value(getattr(layer, name)), dtype=np.float64)
    except StudentCodeRaised as exc:
        if exc.ename == "AttributeError":
            raise CheckFailure(
                f"after its first call, Conv2D({kernel_size}) has no attribute `{name}`: "
                "create it in build() with self.add_weight(...) and store it as "
                f"self.{name}."
            ) from None
        raise
    except NotPlainData as exc:
        raise CheckFailure(
            f"`layer.{name}` is not a weight holding numbers ({exc}): create it with "
            "self.add_weight(...)."
        ) from None


@pytest.mark.points(1)
def test_layer_builds_weight_and_bias(student):
    """Conv2D((1, 2)) creates a weight of shape (1, 2) and a bias of shape (1,) or ()"""
    layer = helpers.make_layer(student, (1, 2))
    try:
        layer(np.ones((6, 6), dtype=np.float32))
    except StudentCodeRaised as exc:
        raise CheckFailure(
            "the first call of Conv2D((1, 2)) on a 6x6 image failed: build() or call() raised "
            f"an error ({exc.ename}: {helpers.first_line(exc.evalue)})."
        ) from None
    weight = weight_of(student, layer, "weight", (1, 2))
    bias = weight_of(student, layer, "bias", (1, 2))
    assert weight.shape == (1, 2), (
        f"the layer's weight has shape {weight.shape}, expected kernel_size = (1, 2): create it "
        "in build() with shape=self.kernel_size."
    )
    assert bias.shape in ((), (1,)), (
        f"the layer's bias has shape {bias.shape}, expected one number: shape (1,) or ()."
    )
