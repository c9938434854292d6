"""Hidden checks of Part 2 (`Conv2D`): outputs, gradients and training with set weights.

The layer is judged on its own: when the student's `corr2d` is wrong, the layer is still
right if it returns `corr2d(X, weight) + bias` with that `corr2d` (errors carried forward).
Inputs are square (kernels are not), so a `corr2d` that mixes up height and width, which is
only wrong on rectangular inputs, does not break the layer's checks as well.

Every verdict rests on data the check verifies itself (docs/checks-api.md): outputs fetched
as arrays, differences of forward calls with weights the check assigned, and a
gradient step the check applies to fetched arrays. The tape's gradients come from a probe
running in the notebook's process, so they count only where they agree with those
differences.
"""

import numpy as np
import pytest

from grader.checks import CheckFailure, NotPlainData, StudentCodeRaised, load_helpers

helpers = load_helpers(__file__)
answer_key = load_helpers(__file__, "answers")


def ref(X, K):
    return np.asarray(answer_key.corr2d(X, K), dtype=np.float64)


def own_corr(student, X, K):
    """The student's corr2d(X, K), or None when it fails."""
    try:
        return np.asarray(student.corr2d(X, K), dtype=np.float64)
    except (StudentCodeRaised, NotPlainData, TypeError, ValueError):
        return None


def close(a, b, atol=1e-4):
    return a is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, atol=atol, rtol=1e-4)


class Layer:
    """A student Conv2D in the worker, driven with weights the check sets and reads back."""

    def __init__(self, student, kernel_size, X):
        self.student, self.X = student, X
        self.handle = helpers.make_layer(student, kernel_size)
        self.output(X)  # builds it
        try:
            self.bias_shape = np.shape(student.value(self.handle.bias))
        except StudentCodeRaised:
            raise CheckFailure(
                "the layer has no attribute `bias` after its first call: create it in build() "
                "with self.add_weight(...)."
            ) from None

    def set(self, weight, bias: float) -> None:
        try:
            self.handle.weight.assign(np.asarray(weight, np.float32))
            self.handle.bias.assign(np.full(self.bias_shape, bias, dtype=np.float32))
        except StudentCodeRaised as exc:
            raise CheckFailure(
                "the check could not set the layer's weights with layer.weight.assign(...) "
                f"and layer.bias.assign(...) ({exc.ename}: {helpers.first_line(exc.evalue)}): "
                "create both with self.add_weight(...)."
            ) from None

    def output(self, X=None) -> np.ndarray:
        X = self.X if X is None else X
        try:
            return np.asarray(self.handle(X), dtype=np.float64)
        except StudentCodeRaised as exc:
            raise CheckFailure(
                f"calling the layer on an image of shape {X.shape} failed ({exc.ename}: "
                f"{helpers.first_line(exc.evalue)})."
            ) from None

    def directional(self, weight, bias: float, upstream, direction) -> tuple[float, float]:
        """How sum(upstream * layer(X)) changes along ``direction`` and with the bias + 1.

        From three forward calls with weights the check assigns. The layer is affine in its
        weights, so these differences are exact (up to float32 rounding); a tape gradient g
        must give <g, direction> and the bias gradient. The weights are put back afterwards.
        """
        # The layer holds (weight, bias) already (see built_layer); one assign per change.
        base = float(np.sum(upstream * self.output()))
        self.handle.weight.assign(np.asarray(weight + direction, np.float32))
        along = float(np.sum(upstream * self.output())) - base
        self.handle.weight.assign(np.asarray(weight, np.float32))
        self.handle.bias.assign(np.full(self.bias_shape, bias + 1.0, dtype=np.float32))
        grad_bias = float(np.sum(upstream * self.output())) - base
        self.handle.bias.assign(np.full(self.bias_shape, bias, dtype=np.float32))
        return along, grad_bias

    def tape_gradients(self, upstream) -> dict:
        """The probe's claim: what tf.GradientTape gives for sum(upstream * layer(X))."""
        return self.student.probe.layer_gradients(self.handle, self.X, upstream)


def built_layer(student, kernel_size, X, weight, bias):
    layer = Layer(student, kernel_size, X)
    layer.set(weight, bias)
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


def verified_gradients(student, rng, layer, W, b, upstream, what: str):
    """The tape's gradients, accepted only where forward calls agree with them.

    The probe answers first; then the check moves the weight along a random direction of its
    own and the bias by 1, and the change of the loss must be what the gradients predict.
    """
    claim = layer.tape_gradients(upstream)
    if claim.get("error"):
        raise CheckFailure(
            f"taking {what} through the layer with tf.GradientTape failed: "
            f"{helpers.first_line(str(claim['error']))}."
        )
    direction = rng.normal(size=np.shape(W))
    along, fd_bias = layer.directional(W, b, upstream, direction)
    scale = max(1.0, float(np.abs(upstream).sum()))
    grad_weight = claim.get("weight")
    if grad_weight is None:
        if abs(along) > 1e-5 * scale:
            corr = student.probe.corr_gradient(student.corr2d, layer.X, W, None)
            cause = (
                "your corr2d blocks gradients (it fills a tf.Variable with assign, or leaves "
                "TensorFlow through NumPy), so a layer built on it cannot learn its kernel"
                if corr.get("kernel") is None
                else "call() does not compute the output from `weight` with TensorFlow operations"
            )
            raise CheckFailure(
                f"the gradient for `weight` is None although the output depends on the weight: "
                f"{cause}. Build the output from slices, products and sums of tensors (see "
                "Exercise 2)."
            )
        # The output does not depend on the weight (a corr2d that ignores its kernel, charged
        # in corr2d): None is the true gradient, and it costs nothing more here.
        grad_weight = np.zeros(np.shape(W))
    grad_bias = claim.get("bias")
    if grad_bias is None:
        if abs(fd_bias) < 1e-5 * scale:
            raise CheckFailure(
                "the gradient for `bias` is None: the bias is not used in call(); add it to "
                "the output."
            )
        raise CheckFailure(
            "the gradient for `bias` is None although the output depends on the bias: add it "
            "with TensorFlow operations (not through NumPy)."
        )
    grad_weight = np.asarray(grad_weight, dtype=np.float64)
    grad_bias = float(np.sum(np.asarray(grad_bias, dtype=np.float64)))
    if grad_weight.shape != np.shape(W) or not np.isclose(
        float(np.sum(grad_weight * direction)), along, atol=1e-3 * scale, rtol=1e-3
    ):
        raise CheckFailure(
            "the gradient for `weight` does not match how layer(X) changes with the weight."
        )
    if not np.isclose(grad_bias, fd_bias, atol=1e-3 * scale, rtol=1e-3):
        raise CheckFailure(
            f"the gradient for `bias` is {grad_bias:.4g}, but layer(X) changes by {fd_bias:.4g} "
            "when the bias grows by 1: add the bias once to every output pixel."
        )
    return grad_weight, grad_bias


def judged(student, X, kernel_size, check) -> None:
    """Run ``check(kernel_size)``; if the student's own corr2d cannot handle that kernel shape
    (its height and width mixed up, charged in corr2d), judge the layer with a square kernel
    instead, on which that corr2d works (docs/grading-policy.md: errors carried forward)."""
    try:
        check(kernel_size)
    except AssertionError:  # CheckFailure included
        ones = np.ones(kernel_size, dtype=np.float32)
        square = np.ones((2, 2), dtype=np.float32)
        if kernel_size[0] == kernel_size[1] or own_corr(student, X, ones) is not None:
            raise
        if own_corr(student, X, square) is None:
            raise
        check((2, 2))


@pytest.mark.points(1)
def test_output_with_set_weights(student, rng):
    """layer(X) equals corr2d(X, weight) + bias for weights set by the check"""
    X = rng.normal(size=(6, 6)).astype(np.float32)

    def check(kernel_size):
        W = rng.normal(size=kernel_size).astype(np.float32)
        layer = built_layer(student, kernel_size, X, W, 0.0)
        problem = output_problem(student, X, W, 0.0, layer.output())
        assert problem is None, problem

    judged(student, X, (2, 3), check)


@pytest.mark.points(1)
def test_bias_is_added(student, rng):
    """layer(X) adds the bias"""
    X = rng.normal(size=(5, 5)).astype(np.float32)

    def check(kernel_size):
        W = rng.normal(size=kernel_size).astype(np.float32)
        layer = built_layer(student, kernel_size, X, W, 1.5)
        problem = output_problem(student, X, W, 1.5, layer.output())
        assert problem is None, problem

    judged(student, X, (1, 2), check)


@pytest.mark.points(1)
def test_gradients_reach_weight_and_bias(student, rng):
    """gradients of a loss reach both the weight and the bias"""
    X = rng.normal(size=(5, 5)).astype(np.float32)

    def check(kernel_size):
        W = rng.normal(size=kernel_size).astype(np.float32)
        layer = built_layer(student, kernel_size, X, W, 0.5)
        # Upstream gradient shaped like the layer's own output (errors carried forward).
        U = rng.normal(size=layer.output().shape).astype(np.float32)
        verified_gradients(student, rng, layer, W, 0.5, U, "a gradient")

    judged(student, X, (2, 3), check)


def trainable_problem(student, layer, W, b) -> str | None:
    """None when layer.trainable_weights holds both weights, else which one is missing."""
    try:
        tracked = student.value(layer.handle.trainable_weights)
    except (StudentCodeRaised, NotPlainData):
        return (
            "layer.trainable_weights could not be read: make Conv2D a keras.layers.Layer and "
            "create both weights with self.add_weight(...)."
        )
    tracked = tracked if isinstance(tracked, (list, tuple)) else []
    arrays = [np.asarray(t, dtype=np.float64) for t in tracked if isinstance(t, np.ndarray)]

    def holds(value) -> bool:
        return any(a.shape == np.shape(value) and np.allclose(a, value) for a in arrays)

    if not holds(W):
        return (
            "`weight` is not among the layer's trainable weights, so an optimizer never updates "
            "it: create it with self.add_weight(...), trainable."
        )
    if not holds(np.full(layer.bias_shape, b)):
        try:
            flag = student.value(layer.handle.bias.trainable)
        except (StudentCodeRaised, NotPlainData):
            flag = None
        if flag is False:
            return (
                "the bias is not trainable: it was created with trainable=False, so an "
                "optimizer never updates it. Drop trainable=False."
            )
        return (
            "`bias` is not among the layer's trainable weights, so an optimizer never updates "
            "it: create it with self.add_weight(...), trainable."
        )
    return None


@pytest.mark.points(1)
def test_one_sgd_step_trains(student, rng):
    """both weights are trainable, and one step along the tape's gradients lowers the loss"""
    X = rng.normal(size=(5, 5)).astype(np.float32)
    judged(student, X, (1, 2), lambda kernel_size: one_step(student, rng, X, kernel_size))


def one_step(student, rng, X, kernel_size) -> None:
    W = rng.normal(size=kernel_size).astype(np.float32)
    layer = built_layer(student, kernel_size, X, W, 0.0)
    out = layer.output()
    Y = rng.normal(size=out.shape).astype(np.float32)
    problem = trainable_problem(student, layer, W, 0.0)
    assert problem is None, problem
    loss = float(np.sum((out - Y) ** 2))
    # The gradient of the summed squared error is the output's gradient with upstream
    # 2 (out - Y); the step is the check's own, applied to arrays it holds.
    upstream = (2 * (out - Y)).astype(np.float32)
    grad_weight, grad_bias = verified_gradients(
        student, rng, layer, W, 0.0, upstream, "the loss's gradient"
    )
    # Along a true gradient some small enough step lowers the loss; how small depends on the
    # drawn inputs, so a fixed rate would fail right layers for unlucky draws. Shrinking
    # steps judge the gradient's direction, not the draw.
    after = loss
    for lr in (1e-2, 1e-3, 1e-4):
        layer.set(W - lr * grad_weight, 0.0 - lr * grad_bias)
        after = float(np.sum((layer.output() - Y) ** 2))
        if after < loss:
            return
    raise AssertionError(
        f"no small gradient step (lr from 0.01 down to 0.0001) lowered the loss ({loss:.4g} "
        f"before, {after:.4g} after the smallest): the layer's gradients do not match its output."
    )
