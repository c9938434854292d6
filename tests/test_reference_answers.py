"""The convolutions answer key (``checks/hidden/answers.py``, NumPy only) equals the TensorFlow
reference, and loading it or collecting the hidden checks imports no TensorFlow."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from grader.checks import load_helpers

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = ROOT / "assignments" / "convolutions" / "checks" / "hidden"
# As a hidden check loads it (the key is no package: only the assignment's checks reach it).
answers = load_helpers(str(HIDDEN / "test_corr2d.py"), "answers")
# The TensorFlow reference computes in float32; the answer key in float64.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def loop_corr2d(X, K):
    """Independent version: one output pixel at a time, in plain Python sums."""
    X, K = np.asarray(X, dtype=np.float64), np.asarray(K, dtype=np.float64)
    kh, kw = K.shape
    return np.array(
        [
            [
                sum(X[i + a, j + b] * K[a, b] for a in range(kh) for b in range(kw))
                for j in range(X.shape[1] - kw + 1)
            ]
            for i in range(X.shape[0] - kh + 1)
        ]
    )


SHAPES = [((3, 3), (2, 2)), ((5, 7), (2, 3)), ((6, 4), (3, 1)), ((1, 6), (1, 2)), ((4, 4), (4, 4))]


@pytest.mark.parametrize("xshape, kshape", SHAPES)
def test_corr2d_matches_the_loop_and_the_tensorflow_reference(xshape, kshape):
    rng = np.random.default_rng(sum(xshape) * 10 + sum(kshape))
    X = rng.normal(size=xshape).astype(np.float32)
    K = rng.normal(size=kshape).astype(np.float32)
    got = answers.corr2d(X, K)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, loop_corr2d(X, K), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, np.asarray(reference.corr2d(X, K)), **TOL)


def test_corr2d_worked_example_and_lists():
    got = answers.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(got, [[19.0, 25.0], [37.0, 43.0]])


@pytest.mark.parametrize("height, width", [(6, 8), (4, 12), (3, 5), (7, 9), (1, 4)])
def test_images_match_the_tensorflow_reference(height, width):
    image = answers.edge_image(height, width)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, np.asarray(reference.edge_image(height, width)))
    np.testing.assert_allclose(
        answers.detect_edges(image), np.asarray(reference.detect_edges(image)), **TOL
    )


@pytest.mark.parametrize("n", [2, 5, 8, 11])
def test_diagonal_image_matches_the_tensorflow_reference(n):
    image = answers.diagonal_edge_image(n)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, np.asarray(reference.diagonal_edge_image(n)))


@pytest.mark.parametrize("xshape, kshape", SHAPES)
def test_kernel_matrix_matches_the_tensorflow_reference_and_multiplies_to_corr2d(xshape, kshape):
    rng = np.random.default_rng(7)
    X = rng.normal(size=xshape)
    K = rng.normal(size=kshape).astype(np.float32)
    W = answers.kernel_matrix(K, xshape)
    np.testing.assert_allclose(W, np.asarray(reference.kernel_matrix(K, xshape)), **TOL)
    np.testing.assert_allclose(W @ X.ravel(), loop_corr2d(X, K).ravel(), rtol=1e-10, atol=1e-10)


def test_bad_inputs_say_what_was_received():
    with pytest.raises(ValueError, match=r"`corr2d` expects a non-empty 2-D `X`.*\(3,\)"):
        answers.corr2d([1.0, 2.0, 3.0], [[1.0]])
    with pytest.raises(ValueError, match=r"kernel no larger than the input.*\(2, 2\).*\(3, 1\)"):
        answers.corr2d(np.ones((2, 2)), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"`kernel_matrix` expects a non-empty 2-D `K`"):
        answers.kernel_matrix(np.ones((0, 2)), (3, 3))
    with pytest.raises(ValueError, match=r"width >= 4"):
        answers.edge_image(3, 3)
    with pytest.raises(ValueError, match=r"n >= 2"):
        answers.diagonal_edge_image(1)


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(proc.stdout.split())


def test_the_answer_key_does_not_import_tensorflow():
    loaded = _modules_after(
        "from grader.checks import load_helpers\n"
        f"load_helpers({str(HIDDEN / 'test_corr2d.py')!r}, 'answers')"
    )
    assert "tensorflow" not in loaded and "keras" not in loaded


def test_collecting_the_hidden_checks_does_not_import_tensorflow():
    # The grader's own processes never pay TensorFlow's import: only workers need it.
    loaded = _modules_after(
        "from grader.authoring import assignment\n"
        "from grader.engine import pytest_plugin as plugin\n"
        "a = assignment.load('convolutions')\n"
        "assert len(plugin.collect_checks(a)) > 30"
    )
    assert "tensorflow" not in loaded and "keras" not in loaded


def test_every_public_name_of_reference_loads_on_first_use():
    assert sorted(reference.__all__) == sorted(reference._HOME)
    for name in reference.__all__:
        assert getattr(reference, name) is getattr(
            __import__(f"reference.{reference._HOME[name]}", fromlist=[name]), name
        )
    with pytest.raises(AttributeError, match="has no attribute 'corr3d'"):
        reference.corr3d  # noqa: B018
