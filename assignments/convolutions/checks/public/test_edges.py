"""Public checks of Part 3 (edges): the 6x8 image and its edges.

detect_edges is right when it gives the true edges, or what the student's own corr2d gives
with the kernel [[1, -1]]: a mistake in corr2d is charged once, in corr2d.
"""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)


def chapter_image():
    X = np.ones((6, 8), dtype=np.float32)
    X[:, 2:6] = 0.0
    return X


@pytest.mark.points(1)
def test_default_edge_image(student):
    """edge_image() is the 6x8 image with zero columns 2 to 5"""
    got = np.asarray(student.edge_image(), dtype=np.float64)
    want = chapter_image()
    assert got.shape == want.shape, f"edge_image() has shape {got.shape}, expected (6, 8)"
    if np.array_equal(got, 1 - want):
        raise AssertionError(
            "edge_image() is inverted: the band in the middle must be 0, the rest 1."
        )
    cols = [j for j in range(8) if not np.all(got[:, j] == want[:, j])]
    assert not cols, (
        f"edge_image() is wrong in column(s) {cols}: columns 2, 3, 4, 5 must be 0 and the others 1."
    )


@pytest.mark.points(1)
def test_edges_of_the_worked_example(student):
    """detect_edges on the 6x8 image: 1 in column 1, -1 in column 5, 0 elsewhere"""
    square = np.ones((8, 8), dtype=np.float32)
    square[:, 2:6] = 0.0
    problem = helpers.edges_problem(student, chapter_image(), "the 6x8 image", square)
    assert problem is None, problem


@pytest.mark.points(0)
def test_edge_image_signature(student):
    """edge_image(height, width) makes an image of that size (checked on other sizes later)"""
    got = np.asarray(student.edge_image(4, 12), dtype=np.float64)
    assert got.shape == (4, 12), f"edge_image(4, 12) has shape {got.shape}, expected (4, 12)."
