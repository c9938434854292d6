"""Specification of `reference.corr2d` and `reference.corr2d_loop`.

Every value is checked against `np_corr2d`, an independent NumPy version
written here (sliding windows and an einsum; no TensorFlow).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import corr2d, corr2d_loop

PROPERTY = settings(max_examples=40, deadline=None)
# float32 sums of at most 12 * 12 products of standard-normal numbers.
RTOL, ATOL = 1e-5, 1e-4


def np_corr2d(X, K):
    """Independent NumPy cross-correlation in float64."""
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    return np.einsum("ijab,ab->ij", windows, K)


@st.composite
def problems(draw, max_side=12):
    """A random (X, K) pair with 1 <= kh <= h and 1 <= kw <= w."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((h, w)).astype(np.float32)
    K = rng.standard_normal((kh, kw)).astype(np.float32)
    return X, K


def random_pair(shape, kernel_shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(shape).astype(dtype),
        rng.standard_normal(kernel_shape).astype(dtype),
    )


# --- the chapter's values -------------------------------------------------------


def test_chapter_example_values():
    X = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    K = [[0.0, 1.0], [2.0, 3.0]]
    Y = corr2d(X, K)
    assert isinstance(Y, tf.Tensor)
    assert Y.dtype == tf.float32
    np.testing.assert_array_equal(Y.numpy(), [[19.0, 25.0], [37.0, 43.0]])


def test_loop_version_gives_chapter_values_in_a_variable():
    Y = corr2d_loop(
        tf.constant([[0.0, 1, 2], [3, 4, 5], [6, 7, 8]]), tf.constant([[0.0, 1], [2, 3]])
    )
    assert isinstance(Y, tf.Variable)
    np.testing.assert_array_equal(Y.numpy(), [[19.0, 25.0], [37.0, 43.0]])


# --- agreement with NumPy -------------------------------------------------------


@PROPERTY
@given(problems())
def test_corr2d_matches_numpy(pair):
    X, K = pair
    Y = corr2d(X, K)
    assert Y.shape == (X.shape[0] - K.shape[0] + 1, X.shape[1] - K.shape[1] + 1)
    np.testing.assert_allclose(Y.numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shape, kernel_shape",
    [
        ((5, 7), (1, 1)),
        ((1, 1), (1, 1)),
        ((4, 9), (4, 9)),
        ((6, 3), (6, 3)),
        ((1, 10), (1, 3)),
        ((10, 1), (3, 1)),
        ((3, 8), (3, 2)),
    ],
    ids=lambda s: "x".join(map(str, s)),
)
def test_edge_case_shapes_match_numpy(shape, kernel_shape):
    X, K = random_pair(shape, kernel_shape)
    np.testing.assert_allclose(corr2d(X, K).numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


@settings(max_examples=10, deadline=None)
@given(problems(max_side=5))
def test_loop_version_matches_numpy(pair):
    X, K = pair
    np.testing.assert_allclose(corr2d_loop(X, K).numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


# --- identities -----------------------------------------------------------------


@PROPERTY
@given(problems())
def test_transposing_both_transposes_the_output(pair):
    X, K = pair
    np.testing.assert_allclose(
        corr2d(X.T, K.T).numpy(), corr2d(X, K).numpy().T, rtol=RTOL, atol=ATOL
    )


@PROPERTY
@given(problems(), st.floats(-3, 3), st.floats(-3, 3))
def test_linear_in_the_input(pair, a, b):
    X1, K = pair
    X2 = np.random.default_rng(1).standard_normal(X1.shape).astype(np.float32)
    left = corr2d(a * X1 + b * X2, K).numpy()
    right = a * corr2d(X1, K).numpy() + b * corr2d(X2, K).numpy()
    np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-3)


@PROPERTY
@given(problems(), st.floats(-3, 3), st.floats(-3, 3))
def test_linear_in_the_kernel(pair, a, b):
    X, K1 = pair
    K2 = np.random.default_rng(2).standard_normal(K1.shape).astype(np.float32)
    left = corr2d(X, a * K1 + b * K2).numpy()
    right = a * corr2d(X, K1).numpy() + b * corr2d(X, K2).numpy()
    np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-3)


# --- gradients ------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(problems(max_side=8))
def test_gradients_reach_input_and_kernel(pair):
    X_np, K_np = pair
    G = np.random.default_rng(3).standard_normal(
        (X_np.shape[0] - K_np.shape[0] + 1, X_np.shape[1] - K_np.shape[1] + 1)
    )
    X, K = tf.Variable(X_np), tf.Variable(K_np)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(corr2d(X, K) * tf.constant(G, tf.float32))
    dX, dK = tape.gradient(loss, [X, K])
    # d loss / d K[a, b] = sum_ij G[i, j] X[i + a, j + b]: G slid over X.
    np.testing.assert_allclose(dK.numpy(), np_corr2d(X_np, G), rtol=RTOL, atol=ATOL)
    # d loss / d X is the full convolution of G with K: pad G, flip K.
    kh, kw = K_np.shape
    padded = np.pad(G, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    np.testing.assert_allclose(
        dX.numpy(), np_corr2d(padded, K_np[::-1, ::-1]), rtol=RTOL, atol=ATOL
    )


def test_loop_version_cuts_the_gradient():
    K = tf.Variable([[1.0, -1.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(corr2d_loop(tf.ones((3, 4)), K))
    assert tape.gradient(loss, K) is None


def test_works_inside_tf_function():
    X, K = random_pair((6, 5), (2, 3))
    compiled = tf.function(corr2d)
    np.testing.assert_allclose(compiled(X, K).numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


# --- accepted inputs and dtypes -------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [np.asarray, tf.constant, tf.Variable, keras.Variable, lambda a: a.tolist()],
    ids=["numpy", "tf.constant", "tf.Variable", "keras.Variable", "list"],
)
def test_accepts_common_containers(wrap):
    X, K = random_pair((5, 6), (2, 2))
    Y = corr2d(wrap(X), wrap(K))
    assert Y.dtype == tf.float32
    np.testing.assert_allclose(Y.numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_inputs_become_float32(dtype):
    X = np.arange(20).reshape(4, 5) % 3
    K = np.array([[1, 0], [0, 1]])
    Y = corr2d(X.astype(dtype), K.astype(dtype))
    assert Y.dtype == tf.float32
    np.testing.assert_array_equal(Y.numpy(), np_corr2d(X.astype(dtype), K.astype(dtype)))


@pytest.mark.parametrize(
    "dtype, rtol",
    [(tf.float16, 1e-2), (tf.bfloat16, 5e-2), (tf.float32, 1e-5), (tf.float64, 1e-12)],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_float_dtypes_are_preserved(dtype, rtol):
    X, K = random_pair((7, 6), (3, 2), dtype=np.float64)
    X, K = tf.cast(X, dtype), tf.cast(K, dtype)
    Y = corr2d(X, K)
    assert Y.dtype == dtype
    expected = np_corr2d(tf.cast(X, tf.float64), tf.cast(K, tf.float64))
    np.testing.assert_allclose(tf.cast(Y, tf.float64).numpy(), expected, rtol=rtol, atol=rtol)


def test_float64_keeps_double_precision():
    X = np.full((3, 3), 1.0 + 1e-12)
    Y = corr2d(X, np.ones((3, 3)))
    assert Y.dtype == tf.float64
    np.testing.assert_allclose(Y.numpy(), [[9.0 + 9e-12]], rtol=1e-15)


@pytest.mark.parametrize(
    "x_dtype, k_dtype, expected",
    [
        (tf.float32, tf.float64, tf.float64),
        (tf.float16, tf.float32, tf.float32),
        (tf.float16, tf.bfloat16, tf.float32),
        (tf.int32, tf.float64, tf.float64),
        (tf.int32, tf.float16, tf.float32),  # ints become float32 first
    ],
    ids=lambda v: v.name,
)
def test_mixed_dtypes_meet_in_the_wider_float(x_dtype, k_dtype, expected):
    Y = corr2d(tf.ones((3, 3), x_dtype), tf.ones((2, 2), k_dtype))
    assert Y.dtype == expected
    np.testing.assert_array_equal(tf.cast(Y, tf.float64).numpy(), np.full((2, 2), 4.0))


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("func", [corr2d, corr2d_loop], ids=["corr2d", "corr2d_loop"])
@pytest.mark.parametrize(
    "X, K, message",
    [
        (np.ones(3), np.ones((1, 1)), r"2-D `X`.*Received: X\.shape=\(3,\)"),
        (np.ones((2, 3, 4)), np.ones((1, 1)), r"2-D `X`.*Received: X\.shape=\(2, 3, 4\)"),
        (np.ones((3, 3)), np.ones(2), r"2-D `K`.*Received: K\.shape=\(2,\)"),
        (np.float32(1.0), np.ones((1, 1)), r"2-D `X`.*0 dimension\(s\).*X\.shape=\(\)"),
        (np.ones((0, 3)), np.ones((1, 1)), r"non-empty `X`.*Received: X\.shape=\(0, 3\)"),
        (np.ones((3, 3)), np.ones((2, 0)), r"non-empty `K`.*Received: K\.shape=\(2, 0\)"),
        (
            np.ones((3, 3)),
            np.ones((4, 1)),
            r"no larger than the input.*X\.shape=\(3, 3\), K\.shape=\(4, 1\)",
        ),
        (
            np.ones((5, 2)),
            np.ones((2, 3)),
            r"no larger than the input.*X\.shape=\(5, 2\), K\.shape=\(2, 3\)",
        ),
    ],
    ids=["X-1d", "X-3d", "K-1d", "X-scalar", "X-empty", "K-empty", "K-taller", "K-wider"],
)
def test_bad_shapes_raise_value_error(func, X, K, message):
    with pytest.raises(ValueError, match=message):
        func(X, K)


def test_error_names_the_function():
    with pytest.raises(ValueError, match=r"^`corr2d_loop` expects"):
        corr2d_loop(np.ones(3), np.ones((1, 1)))


def test_complex_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"real-valued `X`.*Received: X\.dtype=complex128"):
        corr2d(np.ones((2, 2), dtype=complex), np.ones((1, 1)))


@pytest.mark.parametrize(
    "spec", [tf.TensorSpec([None, None]), tf.TensorSpec(None)], ids=["unknown-dims", "unknown-rank"]
)
def test_traces_with_unknown_shapes(spec):
    compiled = tf.function(corr2d, input_signature=[spec, spec])
    X, K = random_pair((5, 4), (2, 3))
    np.testing.assert_allclose(compiled(X, K).numpy(), np_corr2d(X, K), rtol=RTOL, atol=ATOL)
