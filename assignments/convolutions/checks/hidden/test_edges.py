"""Hidden checks of Part 3 (edges): other image sizes and other images.

As in the public checks, detect_edges is judged with the student's own corr2d carried
forward (docs/grading-policy.md).
"""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)
answer_key = load_helpers(__file__, "answers")


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
    noisy = rng.integers(0, 2, size=(6, 6)).astype(np.float32)
    cases = [
        ("a striped 5x9 image", np.tile(columns, (5, 1)), np.tile(columns, (9, 1))),
        ("a random 4x6 binary image", noisy[:4], noisy),
        (
            "the transposed 6x8 image",
            np.ascontiguousarray(np.asarray(answer_key.edge_image(6, 8)).T),
            np.ascontiguousarray(np.asarray(answer_key.edge_image(8, 8)).T),
        ),
    ]
    for name, X, square in cases:
        problem = helpers.edges_problem(student, X, name, square)
        assert problem is None, problem
