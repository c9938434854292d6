"""Public check of Exercise 1 (diagonal): the image with a diagonal edge."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


@pytest.mark.points(1)
def test_diagonal_image(student):
    """diagonal_edge_image(8): ones on and above the diagonal, zeros below"""
    got = np.asarray(student.diagonal_edge_image(8), dtype=np.float64)
    want = np.triu(np.ones((8, 8)))
    assert got.shape == (8, 8), f"diagonal_edge_image(8) has shape {got.shape}, expected (8, 8)"
    if np.array_equal(got, want.T) or np.array_equal(got, np.tril(np.ones((8, 8)), -1)):
        raise AssertionError(
            "diagonal_edge_image(8) has its ones below the diagonal: they must be on and above "
            "it (column index >= row index)."
        )
    assert np.array_equal(got, want), (
        "diagonal_edge_image(8) is wrong: pixel (i, j) must be 1 when j >= i and 0 otherwise."
    )


@pytest.mark.points(0)
def test_answers_format(student):
    """DIAGONAL_ANSWERS has one letter, A to D, for each of "a", "b" and "c" (not judged here)"""
    helpers.diagonal_answers(student.value(student.DIAGONAL_ANSWERS))
