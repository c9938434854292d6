"""Hidden checks of Exercise 2 (gradient): another input, and the chosen explanation."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


@pytest.mark.points(1)
def test_loop_layer_gradients_other_shapes(student, rng):
    """loop_layer_gradients on another input and kernel size"""
    X = rng.normal(size=(3, 4)).astype(np.float32)  # small: the loop runs ops per pixel
    grads = student.loop_layer_gradients(X, (2, 2))
    assert isinstance(grads, dict) and {"weight", "bias"} <= set(grads), (
        'loop_layer_gradients must return a dict {"weight": ..., "bias": ...}.'
    )
    assert grads["weight"] is None, (
        "the gradient for `weight` is not None: with corr2d_loop the tape gives None."
    )
    assert grads["bias"] is not None, "the gradient for `bias` is None: add the bias."
    bias = np.asarray(grads["bias"], dtype=np.float64).reshape(-1)
    assert np.allclose(bias, [6.0]), (
        f"for X of shape (3, 4) and kernel_size (2, 2) the gradient for `bias` is "
        f"{bias.tolist()}, expected [6.0]: does the function use X and kernel_size?"
    )


@pytest.mark.points(2)
def test_gradient_answer(student):
    """GRADIENT_ANSWER: what goes wrong when training through the loop"""
    value = student.value(student.GRADIENT_ANSWER)
    problem = helpers.answer_format_problem("GRADIENT_ANSWER", value)
    assert problem is None, problem
    assert helpers.letter(value) == "B", (
        "GRADIENT_ANSWER is not right: compare it with what loop_layer_gradients returned, "
        "and with what the optimizer said when you applied those gradients."
    )
