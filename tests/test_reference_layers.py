"""Specification of `reference.Conv2D`, the chapter's layer on Keras 3.

Outputs are checked against an independent NumPy cross-correlation plus bias.
`check_layer_contract` is the reusable part: build, shapes, config round-trip
and one training step.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import Conv2D, corr2d, corr2d_loop, corr2d_matmul

RTOL, ATOL = 1e-5, 1e-5


def np_layer(X, weight, bias):
    """Independent NumPy version of the layer: cross-correlation plus bias."""
    X = np.asarray(X, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(X, weight.shape)
    return np.einsum("ijab,ab->ij", windows, weight) + float(np.asarray(bias).ravel()[0])


def check_layer_contract(layer, X, expected_output_shape):
    """Build, weights, output shape, config round-trip and one SGD step."""
    Y = layer(X)
    assert layer.built
    assert {v.name for v in layer.trainable_variables} == {"weight", "bias"}
    assert tuple(layer.weight.shape) == layer.kernel_size
    assert tuple(layer.bias.shape) == (1,)
    assert tuple(Y.shape) == expected_output_shape
    assert layer.compute_output_shape(tuple(np.shape(X))) == expected_output_shape

    clone = type(layer).from_config(layer.get_config())
    clone.build(np.shape(X))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(X).numpy(), Y.numpy(), rtol=RTOL, atol=ATOL)

    target = tf.zeros_like(Y)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(X) - target))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in grads)
    keras.optimizers.SGD(learning_rate=1e-3).apply_gradients(
        zip(grads, layer.trainable_variables, strict=True)
    )
    after = float(tf.reduce_sum(tf.square(layer(X) - target)))
    assert after < float(loss)


@pytest.mark.parametrize(
    "kernel_size, input_shape",
    [((1, 2), (6, 8)), ((3, 3), (5, 7)), ((1, 1), (4, 4)), ((4, 6), (4, 6))],
    ids=["1x2", "3x3", "1x1", "kernel-equals-input"],
)
def test_layer_contract(kernel_size, input_shape):
    X = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    expected = (input_shape[0] - kernel_size[0] + 1, input_shape[1] - kernel_size[1] + 1)
    check_layer_contract(Conv2D(kernel_size), X, expected)


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 8),
    st.data(),
)
def test_output_is_correlation_plus_bias(h, w, data):
    kh, kw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((h, w)).astype(np.float32)
    weight = rng.standard_normal((kh, kw)).astype(np.float32)
    bias = rng.standard_normal(1).astype(np.float32)
    layer = Conv2D((kh, kw))
    layer.build((h, w))
    layer.weight.assign(weight)
    layer.bias.assign(bias)
    np.testing.assert_allclose(layer(X).numpy(), np_layer(X, weight, bias), rtol=RTOL, atol=1e-4)


def test_weights_are_created_in_build_not_init():
    layer = Conv2D((2, 3))
    assert not layer.weights
    layer.build((4, 4))
    assert [tuple(v.shape) for v in layer.weights] == [(2, 3), (1,)]


def test_int_kernel_size_means_square():
    assert Conv2D(3).kernel_size == (3, 3)


def test_gradients_match_numpy():
    X = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    weight = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    layer = Conv2D((2, 2), kernel_initializer=keras.initializers.Constant(weight))
    layer.build(X.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(X))
    d_weight, d_bias = tape.gradient(loss, [layer.weight, layer.bias])
    # d sum(Y) / d weight[a, b] is the sum of the window of X the tap sees.
    windows = np.lib.stride_tricks.sliding_window_view(X.astype(np.float64), (2, 2))
    np.testing.assert_allclose(d_weight.numpy(), windows.sum(axis=(0, 1)), rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(d_bias.numpy(), [4 * 5], rtol=RTOL)


@pytest.mark.parametrize("corr", ["corr2d", "corr2d_matmul", "corr2d_loop"])
def test_correlation_can_be_chosen_by_name(corr):
    X = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    layer = Conv2D((2, 2), corr=corr)
    Y = layer(X)
    np.testing.assert_allclose(
        Y.numpy(), np_layer(X, layer.weight.numpy(), layer.bias.numpy()), rtol=RTOL, atol=1e-5
    )
    assert layer.get_config()["corr"] == corr


@pytest.mark.parametrize(
    "corr, weight_has_gradient",
    [(corr2d, True), (corr2d_matmul, True), (corr2d_loop, False)],
    ids=["corr2d", "corr2d_matmul", "corr2d_loop"],
)
def test_which_correlations_carry_a_weight_gradient(corr, weight_has_gradient):
    layer = Conv2D((1, 2), corr=corr)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.ones((3, 4))))
    d_weight, d_bias = tape.gradient(loss, [layer.weight, layer.bias])
    assert (d_weight is not None) is weight_has_gradient
    assert d_bias is not None


def test_config_is_json_and_round_trips():
    layer = Conv2D((2, 3), kernel_initializer=keras.initializers.RandomNormal(seed=4), name="c")
    config = json.loads(json.dumps(layer.get_config()))
    clone = Conv2D.from_config(config)
    assert clone.kernel_size == (2, 3)
    assert clone.name == "c"
    assert clone.corr is corr2d
    assert clone.get_config() == layer.get_config()


def test_keras_serialization_round_trip():
    layer = Conv2D((2, 2))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Conv2D)
    assert restored.kernel_size == (2, 2)


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.float32])
def test_int_and_float64_inputs_give_float32(dtype):
    X = np.arange(12).reshape(3, 4)
    layer = Conv2D((2, 2))
    Y = layer(X.astype(dtype))
    assert Y.dtype == tf.float32
    expected = np_layer(X, layer.weight.numpy(), layer.bias.numpy())
    np.testing.assert_allclose(Y.numpy(), expected, rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize(
    "kernel_size", [0, (0, 3), (2,), (1, 2, 3), "3", (1.5, 2), None, (True, 2)]
)
def test_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match=r"`Conv2D` expects `kernel_size`.*Received: kernel_size="):
        Conv2D(kernel_size)


def test_bad_corr():
    with pytest.raises(ValueError, match=r"Received: corr='conv'"):
        Conv2D(2, corr="conv")
    with pytest.raises(ValueError, match=r"Received: corr=3"):
        Conv2D(2, corr=3)


def test_build_rejects_batched_input():
    with pytest.raises(ValueError, match=r"2-D inputs.*Received: input_shape=\(1, 6, 8, 1\)"):
        Conv2D((1, 2))(tf.ones((1, 6, 8, 1)))


def test_build_rejects_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"X\.shape=\(2, 5\), K\.shape=\(3, 3\)"):
        Conv2D(3).build((2, 5))
