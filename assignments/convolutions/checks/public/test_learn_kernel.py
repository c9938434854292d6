"""Public checks of Part 4 (`learn_kernel`): the chapter's data, K = [[1, -1]].

Both checks judge the same training run, done once per notebook (a module-scoped fixture):
training is the slowest thing these checks ask of a notebook. The run passes every argument
by name, so the signature is checked too, and messages name the lr that actually ran.
"""

import numpy as np
import pytest

from grader.checks import CheckFailure, MissingName, load_helpers

helpers = load_helpers(__file__)

LR, EPOCHS, KERNEL_SIZE = 3e-2, 10, (1, 2)


def chapter_data():
    X = np.ones((6, 8), dtype=np.float32)
    X[:, 2:6] = 0.0
    Y = X[:, :-1] - X[:, 1:]  # corr2d(X, [[1, -1]])
    return X, Y


@pytest.fixture(scope="module")
def chapter_fit(student):
    """learn_kernel on the chapter's data: (kernel, losses, story of the run)."""
    X, Y = chapter_data()
    try:
        result = helpers.call_learn_kernel(
            student, X, Y, kernel_size=KERNEL_SIZE, lr=LR, num_epochs=EPOCHS
        )
    except MissingName:
        raise CheckFailure(helpers.missing_learn_kernel(student)) from None
    kernel, losses = helpers.fit_result(result, KERNEL_SIZE)
    return kernel, losses, helpers.story(X, Y, kernel, losses, LR, KERNEL_SIZE)


def named(story) -> str:
    """The mistake a replay of the run found, as a clause, or ''."""
    return f": {helpers.BOOKKEEPING[story]}" if story in helpers.BOOKKEEPING else ""


@pytest.mark.points(1)
def test_learns_the_edge_kernel(chapter_fit):
    """learn_kernel on the 6x8 image and its edges finds a kernel close to [[1, -1]]"""
    kernel, losses, story = chapter_fit
    if kernel.size == 2 and kernel.shape != KERNEL_SIZE:
        raise AssertionError(
            f"the kernel has shape {kernel.shape}, expected kernel_size = (1, 2): reshape the "
            "Keras kernel of shape (1, 2, 1, 1)."
        )
    assert kernel.shape == KERNEL_SIZE, f"the kernel has shape {kernel.shape}, expected (1, 2)"
    if story in helpers.WRONG_TRAINING:
        raise AssertionError(
            f"after {EPOCHS} epochs at lr={LR:g} the kernel is {np.round(kernel, 3).tolist()}"
            f"{named(story)}."
        )
    assert np.all(np.isfinite(kernel)), (
        f"the learned kernel contains NaN or infinite values after {EPOCHS} epochs at "
        f"lr={LR:g}{named(story) or ': the training diverged'}."
    )
    assert np.abs(kernel - [[1.0, -1.0]]).max() < 0.2, (
        f"after {EPOCHS} epochs at lr={LR:g} the kernel is {np.round(kernel, 3).tolist()}, "
        "expected within 0.2 of [[1, -1]]"
        + (
            named(story)
            or (
                ": the training diverged, the losses grow (the losses check says why)"
                if losses.size and not losses[-1] <= losses[0]
                else ": is a gradient step applied to the kernel every epoch?"
            )
        )
    )


@pytest.mark.points(1)
def test_losses_decrease(student, chapter_fit):
    """learn_kernel records 10 losses that go down"""
    kernel, losses, story = chapter_fit
    assert losses.size == EPOCHS, (
        f"num_epochs={EPOCHS} gave {losses.size} losses, expected one per epoch ({EPOCHS})."
    )
    if story == "ascent":
        raise AssertionError(
            f"the losses increase (from {losses[0]:.4g} to {losses[-1]:.4g}) at lr={LR:g}: "
            "the update goes uphill. The kernel must move against the gradient "
            "(kernel - lr * gradient)."
        )
    if story in ("mean", "mean-after"):
        raise AssertionError(
            f"the losses go from {losses[0]:.4g} to {losses[-1]:.4g} at lr={LR:g}{named(story)}."
        )
    if not np.all(np.isfinite(losses)) or losses[-1] > losses[0]:
        X, Y = chapter_data()
        raise AssertionError(helpers.growth_problem(student, X, Y, LR, losses, KERNEL_SIZE))
    assert losses[-1] < 0.5 * losses[0], (
        f"the losses barely change at lr={LR:g} (from {losses[0]:.4g} to {losses[-1]:.4g})"
        + (
            named(story)
            or ": is the kernel updated every epoch, and each loss computed with "
            "the current kernel?"
        )
    )
