"""Hidden checks of Exercise 1 (diagonal): other sizes, and the three answers."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)
answer_key = load_helpers(__file__, "answers")

# Hints send the student back to the experiment; none of them describes an option.
HINTS = {
    "a": (
        "(a) is not right: run the first experiment of Exercise 1, corr2d(X_diag, K_edge), "
        "and compare the printed array row by row with each option, what it says you see and "
        "why."
    ),
    "b": (
        "(b) is not right: run the second experiment, corr2d(X_diag.T, K_edge), and compare "
        "its output entry by entry with the output of (a) before choosing."
    ),
    "c": (
        "(c) is not right: run the third experiment, corr2d(X_diag, K_edge.T), and look at "
        "both the shape of its output and where its nonzero entries are."
    ),
}
CORRECT = {"a": "B", "b": "C", "c": "B"}


def check_answer(student, part):
    given = helpers.diagonal_answers(student.value(student.DIAGONAL_ANSWERS))[part]
    assert given == CORRECT[part], HINTS[part]


@pytest.mark.points(1)
def test_diagonal_image_other_sizes(student):
    """diagonal_edge_image(n) for other sizes"""
    for n in (2, 5, 11):
        got = np.asarray(student.diagonal_edge_image(n), dtype=np.float64)
        want = np.asarray(answer_key.diagonal_edge_image(n), dtype=np.float64)
        assert got.shape == want.shape, (
            f"diagonal_edge_image({n}) has shape {got.shape}, expected {want.shape}"
        )
        assert np.array_equal(got, want), (
            f"diagonal_edge_image({n}) is wrong: pixel (i, j) must be 1 when j >= i, else 0."
        )


@pytest.mark.points(1)
def test_answer_apply_kernel(student):
    """(a) what K does to the diagonal image"""
    check_answer(student, "a")


@pytest.mark.points(1)
def test_answer_transpose_image(student):
    """(b) what transposing the image changes"""
    check_answer(student, "b")


@pytest.mark.points(1)
def test_answer_transpose_kernel(student):
    """(c) what transposing the kernel changes"""
    check_answer(student, "c")
