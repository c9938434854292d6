"""Hidden checks of Part 2 (`Conv2D`): outputs, gradients and training with set weights.

The layer is judged on its own: when the student's `corr2d` is wrong, the layer is still
right if it returns `corr2d(X, weight) + bias` with that `corr2d` (errors carried forward).
Inputs are square (kernels are not), so a `corr2d` that mixes up height and width, which is
only wrong on rectangular inputs, does not break the layer's checks as well.
"""

import numpy as np
import pytest

from grader.checks import StudentCodeRaised
from reference import answers as answer_key


def ref(X, K):
    return np.asarray(answer_key.corr2d(X, K), dtype=np.float64)


def own_corr(student, X, K):
    """The student's corr2d(X, K), or None when it fails."""
    try:
        return np.asarray(student.corr2d(X, K), dtype=np.float64)
    except (StudentCodeRaised, TypeError, ValueError):
        return None


def close(a, b, atol=1e-4):
    return a is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, atol=atol, rtol=1e-4)


def built_layer(student, kernel_size, X, weight, bias):
    """A student Conv2D, called once on X (so it is built), with its weights set."""
    layer = student.Conv2D(kernel_size)
    layer(X)
    layer.weight.assign(weight)
    layer.bias.assign(np.array([bias], dtype=np.float32))
    return layer


def output_problem(student, X, W, b, got):
    """None if layer output `got` is corr2d(X, W) + b (the reference's or the student's)."""
    want = ref(X, W) + b
    if close(got, want) or close(got, own_corr(student, X, W) + b):
        return None
    if close(got, ref(X, W)) or close(got, own_corr(student, X, W)):
        return "layer(X) ignores the bias: call() must return corr2d(X, weight) + bias."
    if np.shape(got) != want.shape:
        return (
            f"layer(X) has shape {np.shape(got)} for X of shape {X.shape} and a kernel of "
            f"shape {W.shape}, expected {want.shape}."
        )
    return "layer(X) is not corr2d(X, weight) + bias for the weights the check set."


@pytest.mark.points(1)
def test_output_with_set_weights(student, rng):
    """layer(X) equals corr2d(X, weight) + bias for weights set by the check"""
    X = rng.normal(size=(6, 6)).astype(np.float32)
    W = rng.normal(size=(2, 3)).astype(np.float32)
    layer = built_layer(student, (2, 3), X, W, 0.0)
    problem = output_problem(student, X, W, 0.0, np.asarray(layer(X), dtype=np.float64))
    assert problem is None, problem


@pytest.mark.points(1)
def test_bias_is_added(student, rng):
    """layer(X) adds the bias"""
    X = rng.normal(size=(5, 5)).astype(np.float32)
    W = rng.normal(size=(1, 2)).astype(np.float32)
    layer = built_layer(student, (1, 2), X, W, 1.5)
    problem = output_problem(student, X, W, 1.5, np.asarray(layer(X), dtype=np.float64))
    assert problem is None, problem


@pytest.mark.points(1)
def test_gradients_reach_weight_and_bias(student, rng):
    """gradients of a loss reach both the weight and the bias"""
    X = rng.normal(size=(5, 5)).astype(np.float32)
    W = rng.normal(size=(2, 3)).astype(np.float32)
    layer = built_layer(student, (2, 3), X, W, 0.5)
    # Upstream gradient shaped like the layer's own output (errors carried forward).
    U = rng.normal(size=np.shape(layer(X))).astype(np.float32)
    grads = student.probe.layer_gradients(layer, X, U)
    if grads["weight"] is None:
        corr = student.probe.corr_gradient(student.corr2d, X, W, U)
        cause = (
            "your corr2d blocks gradients (it fills a tf.Variable with assign, or leaves "
            "TensorFlow through NumPy, or returns a fixed result), so a layer built on it "
            "cannot learn its kernel"
            if corr["kernel"] is None
            else "call() does not compute the output from `weight` with TensorFlow operations"
        )
        raise AssertionError(
            f"the gradient for `weight` is None: {cause}. Build the output from slices, "
            "products and sums of tensors (see Exercise 2)."
        )
    assert grads["bias"] is not None, (
        "the gradient for `bias` is None: the bias is not used in call(); add it to the output."
    )
    gw = np.asarray(grads["weight"], dtype=np.float64)
    gb = np.asarray(grads["bias"], dtype=np.float64).reshape(-1)
    assert gw.shape == W.shape, (
        f"the gradient for `weight` has shape {gw.shape}, expected {W.shape}"
    )
    assert np.allclose(gb, [U.sum()], atol=1e-3), (
        f"the gradient for `bias` is {gb}, expected [{U.sum():.4g}]: add the bias once to every "
        "output pixel."
    )
    # The loss is linear in the kernel: its gradient entry (a, b) is the loss of a kernel
    # that is 1 at (a, b) and 0 elsewhere, with the student's own corr2d if it differs.
    want = ref(X, U)
    if gw.shape != want.shape or not np.allclose(gw, want, atol=1e-3, rtol=1e-3):
        basis = np.eye(W.size, dtype=np.float32).reshape(W.size, *W.shape)
        own = [own_corr(student, X, E) for E in basis]
        if any(o is None or o.shape != U.shape for o in own) or not np.allclose(
            gw.reshape(-1), [np.sum(o * U) for o in own], atol=1e-3, rtol=1e-3
        ):
            raise AssertionError(
                "the gradient for `weight` does not match how layer(X) depends on the weight."
            )


@pytest.mark.points(1)
def test_one_sgd_step_trains(student, rng):
    """one step of keras.optimizers.SGD lowers the loss and updates both weights"""
    X = rng.normal(size=(5, 5)).astype(np.float32)
    W = rng.normal(size=(1, 2)).astype(np.float32)
    layer = built_layer(student, (1, 2), X, W, 0.0)
    Y = rng.normal(size=np.shape(layer(X))).astype(np.float32)
    step = student.probe.sgd_step(layer, X, Y, 0.01)
    if step["error"] is not None:
        raise AssertionError(
            f"training the layer with keras.optimizers.SGD failed: {step['error'][:200]}. "
            "Typical cause: no weight of the layer gets a gradient."
        )
    if step["no_gradient"]:
        names = ", ".join(step["no_gradient"])
        raise AssertionError(
            f"the optimizer got no gradient for {names}, so it cannot train it "
            "(a loop corr2d that assigns into a tf.Variable, or a bias not added in call())."
        )
    assert step["weight"] is not None and not np.allclose(step["weight"], W), (
        "one optimizer step did not change `weight`."
    )
    after = np.asarray(layer(X), dtype=np.float64)
    loss_after = float(np.sum((after - Y) ** 2))
    assert loss_after < step["loss"], (
        f"one small gradient step increased the loss from {step['loss']:.4g} to "
        f"{loss_after:.4g}: the layer's gradients do not match its output."
    )
