"""Hidden checks of Part 3 (edges): other image sizes and other images."""

import numpy as np
import pytest

from grader.checks import StudentCodeRaised
from reference import answers as answer_key


def detect(student, X, name):
    """student.detect_edges(X); if it raises on a rectangular X only, say why."""
    try:
        return np.asarray(student.detect_edges(X), dtype=np.float64)
    except StudentCodeRaised as exc:
        side = max(X.shape)
        try:
            student.detect_edges(np.ones((side, side), dtype=np.float32))
        except StudentCodeRaised:
            raise exc from None
        raise AssertionError(
            f"detect_edges works on square images but raised {exc.ename} on {name}: height "
            "and width are mixed up in corr2d (X.shape[0] is the height)."
        ) from None


@pytest.mark.points(1)
def test_edge_image_other_sizes(student):
    """edge_image(height, width) for other sizes"""
    for height, width in [(4, 12), (3, 5), (7, 9)]:
        got = np.asarray(student.edge_image(height, width), dtype=np.float64)
        want = np.asarray(answer_key.edge_image(height, width), dtype=np.float64)
        assert got.shape == want.shape, (
            f"edge_image({height}, {width}) has shape {got.shape}, expected {want.shape}"
        )
        assert np.array_equal(got, want), (
            f"edge_image({height}, {width}) is wrong: the zero columns must be width // 4 = "
            f"{width // 4} up to (not including) width - width // 4 = {width - width // 4}, "
            "all other pixels 1."
        )


@pytest.mark.points(1)
def test_detect_edges_other_images(student, rng):
    """detect_edges on other images, and on a transposed image"""
    columns = rng.integers(0, 2, size=9).astype(np.float32)
    striped = np.tile(columns, (5, 1))
    noisy = rng.integers(0, 2, size=(4, 6)).astype(np.float32)
    for name, X in [("a striped 5x9 image", striped), ("a random 4x6 binary image", noisy)]:
        want = np.asarray(answer_key.detect_edges(X), dtype=np.float64)
        got = detect(student, X, name)
        assert got.shape == want.shape, (
            f"detect_edges on {name} has shape {got.shape}, expected {want.shape} "
            "(rows: h - kh + 1, columns: w - kw + 1)."
        )
        if not np.allclose(got, want, atol=1e-4) and np.allclose(got, -want, atol=1e-4):
            raise AssertionError(
                f"detect_edges on {name} has the signs reversed: with [[1, -1]] a step from "
                "1 down to 0 gives +1 (is the kernel flipped, as in true convolution?)."
            )
        assert np.allclose(got, want, atol=1e-4), f"detect_edges on {name} is wrong."
    turned = np.ascontiguousarray(np.asarray(answer_key.edge_image(6, 8)).T)
    got = detect(student, turned, "the transposed 6x8 image")
    assert got.shape == (8, 5) and np.allclose(got, 0.0), (
        "detect_edges on the transposed 6x8 image should be all zeros of shape (8, 5): "
        "[[1, -1]] only sees changes along a row."
    )
