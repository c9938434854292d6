"""Probes: trusted helpers that run inside the worker, next to the student's objects.

A check calls ``student.probe.NAME(...)``; the worker runs ``NAME`` here with the arguments
decoded (numpy arrays, plain values, or the real worker-side objects behind handles) and
sends back the plain-data result. Probes do what a check cannot do from the other side of
the process boundary: open a ``tf.GradientTape`` around a student's layer, or hand its
gradients to a Keras optimizer.

Probes are trusted code but run among untrusted objects: they never assume a student's
object behaves, and they return plain data only (dicts of numpy arrays, floats, str, None).
Only numpy and tensorflow are imported, and tensorflow lazily, so that loading this module
does not load TensorFlow into a worker whose notebook never did.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["corr_gradient", "layer_gradients", "layer_info", "sgd_step"]


def layer_info(layer) -> dict:
    """What kind of object ``layer`` is and which weights Keras tracks for it.

    Returns:
        ``{"type": str, "is_keras_layer": bool, "built": bool,
        "trainable": [[name, shape], ...], "non_trainable": [[name, shape], ...],
        "has_weight": bool, "has_bias": bool}``; shapes are tuples.
    """
    tf = _tf()
    is_layer = isinstance(layer, tf.keras.layers.Layer)
    return {
        "type": type(layer).__name__,
        "is_keras_layer": is_layer,
        "built": bool(getattr(layer, "built", False)),
        "trainable": _describe(layer.trainable_weights) if is_layer else [],
        "non_trainable": _describe(layer.non_trainable_weights) if is_layer else [],
        "has_weight": _safe_hasattr(layer, "weight"),
        "has_bias": _safe_hasattr(layer, "bias"),
    }


def layer_gradients(layer, X, upstream=None) -> dict:
    """Gradients of ``sum(upstream * layer(X))`` with respect to ``layer.weight`` and ``.bias``.

    ``upstream`` defaults to ones (the loss is then the sum of the output). The layer is
    called inside a default ``tf.GradientTape`` (which watches trainable variables as they
    are read), exactly as a training loop would.

    Returns:
        ``{"weight": array | None, "bias": array | None, "output": array}``: what the tape
        gives for each (None when it gives None), and the layer's output.

    Raises:
        AttributeError: the layer has no ``weight`` or ``bias`` attribute after the call.
    """
    tf = _tf()
    X = tf.convert_to_tensor(np.asarray(X, dtype=np.float32))
    with tf.GradientTape() as tape:
        output = layer(X)
        weights = [_attribute(layer, "weight"), _attribute(layer, "bias")]
        if upstream is None:
            loss = tf.reduce_sum(output)
        else:
            loss = tf.reduce_sum(tf.cast(output, tf.float32) * np.asarray(upstream, np.float32))
    grad_weight, grad_bias = tape.gradient(loss, weights)
    return {
        "weight": _numpy_or_none(grad_weight),
        "bias": _numpy_or_none(grad_bias),
        "output": np.asarray(output),
    }


def sgd_step(layer, X, Y, lr: float = 0.1) -> dict:
    """One training step of ``layer`` on (X, Y) with ``keras.optimizers.SGD(lr)``.

    The loss is the summed squared error ``sum((layer(X) - Y) ** 2)``; its gradients are
    taken with respect to ``layer.trainable_weights`` (what Keras itself would train) and
    applied with ``apply_gradients``. Nothing escapes: what Keras raises or warns is
    returned as text.

    Returns:
        ``{"error": str | None, "warning": str | None, "loss": float | None,
        "no_gradient": [names of trainable weights whose gradient is None],
        "weight": array | None, "bias": array | None}`` with the weights after the step.
    """
    tf = _tf()
    X = tf.convert_to_tensor(np.asarray(X, dtype=np.float32))
    Y = np.asarray(Y, dtype=np.float32)
    result = {"error": None, "warning": None, "loss": None, "no_gradient": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum((tf.cast(layer(X), tf.float32) - Y) ** 2)
            variables = list(layer.trainable_weights)
            grads = tape.gradient(loss, variables)
            result["loss"] = float(loss)
            result["no_gradient"] = [
                v.name for v, g in zip(variables, grads, strict=True) if g is None
            ]
            tf.keras.optimizers.SGD(learning_rate=lr).apply_gradients(
                zip(grads, variables, strict=True)
            )
        except Exception as exc:  # report what Keras or the student's code raised
            result["error"] = f"{type(exc).__name__}: {exc}"
    messages = [str(w.message) for w in caught]
    result["warning"] = "\n".join(messages) or None
    result["weight"] = _value_or_none(layer, "weight")
    result["bias"] = _value_or_none(layer, "bias")
    return result


def corr_gradient(corr, X, K, upstream=None) -> dict:
    """Gradient of ``sum(upstream * corr(X, K))`` with respect to the kernel ``K``.

    ``K`` is wrapped in a ``tf.Variable``; a correlation function that assigns into a
    variable, leaves TensorFlow (NumPy) or ignores ``K`` gives ``None``.

    Returns:
        ``{"kernel": array | None, "error": str | None}``; ``error`` is the text of what
        calling ``corr`` or taking the gradient raised.
    """
    tf = _tf()
    kernel = tf.Variable(np.asarray(K, dtype=np.float32))
    X = tf.convert_to_tensor(np.asarray(X, dtype=np.float32))
    try:
        with tf.GradientTape() as tape:
            output = tf.cast(tf.convert_to_tensor(corr(X, kernel)), tf.float32)
            if upstream is not None:
                output = output * np.asarray(upstream, np.float32)
            loss = tf.reduce_sum(output)
        gradient = tape.gradient(loss, kernel)
    except Exception as exc:  # NumPy conversion of a watched value, shape errors...
        return {"kernel": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"kernel": _numpy_or_none(gradient), "error": None}


def _tf():
    import tensorflow as tf

    return tf


def _describe(variables) -> list:
    return [[str(v.name), tuple(int(d) for d in v.shape)] for v in variables]


def _safe_hasattr(obj, name: str) -> bool:
    try:
        return hasattr(obj, name)
    except Exception:  # a property of the student's class may raise anything
        return False


def _attribute(layer, name: str):
    if not _safe_hasattr(layer, name):
        raise AttributeError(f"the layer has no attribute `{name}` after it was called")
    return getattr(layer, name)


def _numpy_or_none(value):
    if value is None:
        return None
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _value_or_none(layer, name: str):
    try:
        return _numpy_or_none(getattr(layer, name)) if _safe_hasattr(layer, name) else None
    except Exception:  # not convertible to an array
        return None
