"""Specification of the edge-detection example: `edge_image`, `EDGE_KERNEL`, `detect_edges`."""

import numpy as np
import pytest
import tensorflow as tf

from reference import EDGE_KERNEL, detect_edges, edge_image


def np_edge_image(height, width):
    """Independent NumPy construction: ones, with the middle half of the columns zero."""
    quarter = width // 4
    return np.array(
        [[0.0 if quarter <= col < width - quarter else 1.0 for col in range(width)]] * height
    )


def np_horizontal_difference(X):
    """What [[1, -1]] computes: each pixel minus its right-hand neighbour."""
    X = np.asarray(X, dtype=np.float64)
    return X[:, :-1] - X[:, 1:]


def test_default_image_is_the_chapters():
    X = edge_image()
    assert X.dtype == tf.float32
    expected = np.ones((6, 8))
    expected[:, 2:6] = 0.0
    np.testing.assert_array_equal(X.numpy(), expected)


@pytest.mark.parametrize("height, width", [(1, 4), (3, 5), (6, 8), (2, 11), (10, 16)])
def test_other_sizes(height, width):
    np.testing.assert_array_equal(edge_image(height, width).numpy(), np_edge_image(height, width))


def test_edge_kernel_is_a_read_only_difference():
    np.testing.assert_array_equal(EDGE_KERNEL, [[1.0, -1.0]])
    with pytest.raises(ValueError, match="read-only"):
        EDGE_KERNEL[0, 0] = 5.0


def test_edges_of_the_chapter_image():
    Y = detect_edges(edge_image()).numpy()
    expected = np.zeros((6, 7))
    expected[:, 1] = 1.0  # 1 -> 0 between columns 1 and 2
    expected[:, 5] = -1.0  # 0 -> 1 between columns 5 and 6
    np.testing.assert_array_equal(Y, expected)


@pytest.mark.parametrize("height, width", [(3, 5), (4, 12)])
def test_edges_match_numpy(height, width):
    X = edge_image(height, width)
    np.testing.assert_array_equal(detect_edges(X).numpy(), np_horizontal_difference(X.numpy()))


def test_transposed_image_has_no_vertical_edges():
    Y = detect_edges(tf.transpose(edge_image()))
    assert Y.shape == (8, 5)
    np.testing.assert_array_equal(Y.numpy(), np.zeros((8, 5)))


def test_custom_kernel():
    X = np.random.default_rng(0).standard_normal((4, 5))
    K = np.array([[1.0], [-1.0]])
    np.testing.assert_allclose(detect_edges(X, K).numpy(), X[:-1] - X[1:], rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"height": 0}, r"`height` to be an integer >= 1\. Received: height=0"),
        ({"width": 3}, r"`width` to be an integer >= 4\. Received: width=3"),
        ({"width": 8.0}, r"Received: width=8\.0"),
    ],
)
def test_bad_image_size(kwargs, message):
    with pytest.raises(ValueError, match=message):
        edge_image(**kwargs)


def test_detect_edges_rejects_non_images():
    with pytest.raises(ValueError, match=r"Received: X\.shape=\(8,\)"):
        detect_edges(np.ones(8))
