"""Public checks of Part 4 (`learn_kernel`): the chapter's data, K = [[1, -1]].

Both checks judge the same training run, done once per notebook (a module-scoped fixture):
training is the slowest thing these checks ask of a notebook.
"""

import numpy as np
import pytest

from grader.checks import StudentCodeRaised

KERAS3_WATCH = "not tf.Tensor or tf.Variable"


def call_learn_kernel(student, *args, **kwargs):
    """student.learn_kernel(...), explaining the Keras 3 `tape.watch` pitfall if it bites."""
    try:
        return student.learn_kernel(*args, **kwargs)
    except StudentCodeRaised as exc:
        if KERAS3_WATCH in exc.evalue:
            raise AssertionError(
                f"learn_kernel raised {exc.ename}: tape.watch(...) does not accept a Keras 3 "
                "variable. Drop the watch call: the tape already watches trainable variables "
                "(or watch conv.kernel.value)."
            ) from None
        raise


def chapter_data():
    X = np.ones((6, 8), dtype=np.float32)
    X[:, 2:6] = 0.0
    Y = X[:, :-1] - X[:, 1:]  # corr2d(X, [[1, -1]])
    return X, Y


@pytest.fixture(scope="module")
def chapter_fit(student):
    """learn_kernel(X, Y) on the chapter's data: (kernel, losses) as arrays."""
    X, Y = chapter_data()
    result = call_learn_kernel(student, X, Y)
    assert isinstance(result, (tuple, list)) and len(result) == 2, (
        "learn_kernel(X, Y) must return a pair (kernel, losses)."
    )
    kernel, losses = result
    try:
        kernel = np.asarray(kernel, dtype=np.float64)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AssertionError(
            "learn_kernel must return an array kernel and a list of floats"
        ) from None
    return kernel, losses


@pytest.mark.points(1)
def test_learns_the_edge_kernel(chapter_fit):
    """learn_kernel on the 6x8 image and its edges finds a kernel close to [[1, -1]]"""
    kernel, _ = chapter_fit
    if kernel.size == 2 and kernel.shape != (1, 2):
        raise AssertionError(
            f"the kernel has shape {kernel.shape}, expected kernel_size = (1, 2): reshape the "
            "Keras kernel of shape (1, 2, 1, 1)."
        )
    assert kernel.shape == (1, 2), f"the kernel has shape {kernel.shape}, expected (1, 2)"
    assert np.all(np.isfinite(kernel)), "the learned kernel contains NaN or infinite values"
    assert np.abs(kernel - [[1.0, -1.0]]).max() < 0.2, (
        f"after 10 epochs at lr=3e-2 the kernel is {np.round(kernel, 3).tolist()}, expected "
        "within 0.2 of [[1, -1]]: is the gradient step applied to the kernel every epoch?"
    )


@pytest.mark.points(1)
def test_losses_decrease(chapter_fit):
    """learn_kernel records 10 losses that go down"""
    _, losses = chapter_fit
    assert losses.size == 10, f"got {losses.size} losses, expected one per epoch (10)."
    if not np.all(np.isfinite(losses)) or losses[-1] > losses[0]:
        raise AssertionError(
            f"the losses increase (from {losses[0]:.4g} to {losses[-1]:.4g}): the update goes "
            "uphill. Subtract lr * gradient from the kernel."
        )
    assert losses[-1] < 0.5 * losses[0], (
        f"the losses barely change (from {losses[0]:.4g} to {losses[-1]:.4g}): is the kernel "
        "updated every epoch, and is each loss computed with the current kernel?"
    )
