"""This assignment's probes: trusted helpers that run inside the worker, next to the
student's objects (named in assignment.toml as ``[worker] probes``).

A check calls ``student.probe.NAME(...)``; the worker runs ``NAME`` here with the arguments
decoded (numpy arrays, plain values, or the real worker-side objects behind handles) and
sends back the plain-data result. Probes do what a check cannot do from the other side of
the process boundary: open a ``tf.GradientTape`` around a student's layer or function.

A probe's answer is a claim made inside the student's process, which the student's code can
replace or bend: checks never award points on it alone, only where it agrees with data the
check verifies itself (docs/checks-api.md, "Which facts a check may trust"). The worker
keeps its own references to these functions, taken before any cell runs, so reassigning
``cgprobes.NAME`` from a notebook changes nothing; that is a convenience, not the security
boundary.

Probes are trusted code but run among untrusted objects: they never assume a student's
object behaves, and they return plain data only (dicts of numpy arrays, floats, str, None).
It ships in the student release, so no line of it may repeat a line of the solution
(``convgrade validate`` checks). Only numpy and tensorflow are imported, and tensorflow
lazily, so that loading this module does not load TensorFlow into a worker whose notebook
never did. :func:`warm_up` (not a
probe) is the workload the zygote runs once to warm the ops these notebooks use most.
"""

from __future__ import annotations

import numpy as np

__all__ = ["corr_gradient", "layer_gradients"]


def layer_gradients(layer, X, upstream=None) -> dict:
    """What a ``tf.GradientTape`` gives for ``sum(upstream * layer(X))``.

    The gradients are taken with respect to ``layer.weight`` and ``layer.bias``, both watched
    explicitly, so that a bias created with ``trainable=False`` still shows whether the
    output depends on it (whether an optimizer may train it is a separate question, which
    the checks answer from ``layer.trainable_weights``). ``upstream`` defaults to ones.

    This is a claim made inside the student's process: the checks accept it only where it
    agrees with finite differences of forward calls they make themselves (see
    docs/checks-api.md, "Which facts a check may trust").

    Returns:
        ``{"weight": array | None, "bias": array | None, "output": array | None,
        "error": str | None}``: what the tape gives for each (None when it gives None, or
        when the call failed, with ``error`` saying what was raised).
    """
    tf = _tf()
    result = {"weight": None, "bias": None, "output": None, "error": None}
    try:
        X = tf.convert_to_tensor(np.asarray(X, dtype=np.float32))
        with tf.GradientTape(persistent=True) as tape:
            targets = [_watchable(tf, _attribute(layer, name)) for name in ("weight", "bias")]
            for target in targets:
                if target is not None:
                    tape.watch(target)
            output = tf.cast(tf.convert_to_tensor(layer(X)), tf.float32)
            weighted = output if upstream is None else output * np.asarray(upstream, np.float32)
            loss = tf.reduce_sum(weighted)
        result["output"] = np.asarray(output.numpy())
        for name, target in zip(("weight", "bias"), targets, strict=True):
            if target is not None:
                result[name] = _numpy_or_none(tape.gradient(loss, target))
    except Exception as exc:  # the student's layer may raise anything
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
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
        with tf.GradientTape() as recorder:
            output = tf.cast(tf.convert_to_tensor(corr(X, kernel)), tf.float32)
            if upstream is not None:
                output = output * np.asarray(upstream, np.float32)
            loss = tf.reduce_sum(output)
        gradient = recorder.gradient(loss, kernel)
    except Exception as exc:  # NumPy conversion of a watched value, shape errors...
        return {"kernel": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"kernel": _numpy_or_none(gradient), "error": None}


def warm_up() -> None:
    """Run the layer, tape and correlation ops of this assignment once, on constant inputs.

    The zygote calls it before forking workers (grader/worker/warmup.py), so each worker's
    first Conv2D build, training step and correlation is cheap; it then resets TensorFlow's
    context and Keras's session itself.
    """
    import keras

    tf = _tf()
    conv = keras.layers.Conv2D(1, (1, 2), use_bias=False)
    images = tf.ones((1, 4, 4, 1))
    conv(images)  # builds the kernel
    for _ in range(2):
        with tf.GradientTape() as recorder:
            loss = tf.reduce_sum((conv(images) - 1.0) ** 2)
        grad = recorder.gradient(loss, conv.kernel)
        conv.kernel.assign_sub(0.1 * grad)
        float(loss)
    np.asarray(conv.kernel)
    tf.nn.conv2d(images, tf.ones((2, 2, 1, 1)), 1, "VALID")


def _tf():
    import tensorflow as tf

    return tf


def _watchable(tf, variable):
    """The ``tf.Variable`` behind a weight (a Keras 3 variable wraps one), or None."""
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "value", None)
    return inner if isinstance(inner, tf.Variable) else None


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
