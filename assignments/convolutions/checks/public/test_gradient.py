"""Public check of Exercise 2 (gradient): the tape's gradients through the loop version."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


def small_image():
    # Smaller than the chapter's 6x8 image: the loop version runs a few TensorFlow ops per
    # output pixel, and the answer's structure is the same at any size.
    X = np.ones((3, 5), dtype=np.float32)
    X[:, 2:4] = 0.0
    return X


@pytest.mark.points(1)
def test_loop_layer_gradients_on_a_small_image(student):
    """loop_layer_gradients on a 3x5 black-and-white image: no gradient for weight, 12 for bias"""
    grads = student.loop_layer_gradients(small_image())
    assert isinstance(grads, dict) and {"weight", "bias"} <= set(grads), (
        'loop_layer_gradients must return a dict {"weight": ..., "bias": ...}.'
    )
    assert grads["weight"] is None, (
        "the gradient for `weight` is not None: with corr2d_loop the tape gives None. Did "
        "you use corr2d (Part 1) instead of corr2d_loop, or replace the None yourself?"
    )
    assert grads["bias"] is not None, (
        "the gradient for `bias` is None: add the bias to the result of corr2d_loop, as the "
        "layer's call() does."
    )
    bias = np.asarray(grads["bias"], dtype=np.float64).reshape(-1)
    assert np.allclose(bias, [12.0]), (
        f"the gradient for `bias` is {bias.tolist()}, expected [12.0] (one per output pixel "
        "of the 3x4 output): is the loss tf.reduce_sum(corr2d_loop(X, weight) + bias)?"
    )


@pytest.mark.points(0)
def test_answer_format_and_signature(student):
    """GRADIENT_ANSWER is one letter A to D (judged later); loop_layer_gradients(X, (2, 2)) runs"""
    problem = helpers.answer_format_problem(
        "GRADIENT_ANSWER", student.value(student.GRADIENT_ANSWER)
    )
    assert problem is None, problem
    X = np.ones((3, 3), dtype=np.float32)
    grads = student.loop_layer_gradients(X, (2, 2))
    assert isinstance(grads, dict) and {"weight", "bias"} <= set(grads), (
        'loop_layer_gradients(X, kernel_size) must return a dict {"weight": ..., "bias": ...}.'
    )
