"""Hidden checks of Exercise 1 (diagonal): other sizes, and the three answers."""

import numpy as np
import pytest

from reference import answers as answer_key

HINTS = {
    "a": (
        "(a) is not right: look at the rows of corr2d(X, K). Every row of the diagonal image "
        "crosses the edge once, and which way does it step there?"
    ),
    "b": (
        "(b) is not right: after transposing, black and white swap sides of the diagonal. "
        "Is the edge still crossed by every row, and which way does the step go now?"
    ),
    "c": (
        "(c) is not right: K.T = [[1], [-1]] compares each pixel with the one below it. Does "
        "the diagonal edge cross the columns, and what shape does the output have?"
    ),
}
CORRECT = {"a": "B", "b": "C", "c": "B"}


def answers(student):
    value = student.value(student.DIAGONAL_ANSWERS)
    assert value is not None, (
        'DIAGONAL_ANSWERS is still None: set it to a dict like {"a": "A", "b": "B", "c": "C"}.'
    )
    assert isinstance(value, dict), (
        f"DIAGONAL_ANSWERS is a {type(value).__name__}; it must be a dict like "
        '{"a": "A", "b": "B", "c": "C"}.'
    )
    return {str(k).strip().lower(): str(v).strip().upper() for k, v in value.items()}


def check_answer(student, part):
    given = answers(student).get(part)
    assert given is not None, f'DIAGONAL_ANSWERS has no answer for "{part}".'
    assert given in "ABCD" and len(given) == 1, (
        f'DIAGONAL_ANSWERS["{part}"] is {given!r}; it must be one letter, A to D.'
    )
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
