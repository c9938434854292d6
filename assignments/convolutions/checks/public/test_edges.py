"""Public checks of Part 3 (edges): the 6x8 image and its edges."""

import numpy as np
import pytest

from grader.checks import StudentCodeRaised


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
    X = chapter_image()
    want = np.zeros((6, 7))
    want[:, 1], want[:, 5] = 1.0, -1.0
    try:
        got = np.asarray(student.detect_edges(X), dtype=np.float64)
    except StudentCodeRaised as exc:
        square = np.ones((8, 8), dtype=np.float32)
        square[:, 2:6] = 0.0
        try:
            student.detect_edges(square)
        except StudentCodeRaised:
            raise exc from None
        raise AssertionError(
            f"detect_edges works on a square 8x8 image but raised {exc.ename} on the 6x8 one: "
            "height and width are mixed up in corr2d (X.shape[0] is the height)."
        ) from None
    if got.shape != want.shape:
        if got.shape == want.shape[::-1]:
            raise AssertionError(
                f"detect_edges(X) has shape {got.shape}, expected (6, 7): height and width "
                "are mixed up in corr2d (rows come first: h - kh + 1 rows, w - kw + 1 columns)."
            )
        raise AssertionError(
            f"detect_edges(X) has shape {got.shape} for X of shape (6, 8), expected (6, 7); "
            "if corr2d's output shape is off by one, the kernel fits in w - kw + 1 columns."
        )
    if np.allclose(got, -want):
        raise AssertionError(
            "detect_edges(X) has -1 where the image steps from 1 to 0 and 1 where it steps back: "
            "the signs are reversed. Use the kernel [[1, -1]] with corr2d, which must not flip "
            "the kernel (a flipped kernel looks like true convolution)."
        )
    np.testing.assert_allclose(got, want, atol=1e-4, err_msg="detect_edges(X) is wrong")
