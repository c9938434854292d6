"""Warm TensorFlow's first-use paths in the zygote, then give every worker a fresh context.

A notebook's first TensorFlow and Keras calls are slow: eager context set-up, op and kernel
look-ups, Keras's first layer build and call. Measured on the bundled assignment's notebook,
its cells took about 165 ms of CPU in a worker forked from a zygote that had only imported
TensorFlow, and about 110 ms after this warm-up. The ops an assignment's notebooks use most
are its own business: its probes file may define ``warm_up()``, a fixed workload on constant
inputs that runs here after the generic one (docs/assignment-format.md).

Running ops in the zygote starts TensorFlow's thread pools, and threads do not survive a
fork: a worker that used the zygote's context would hang in its first ``tf.function``. So
the warm-up ends by replacing the zygote's eager context with a new, uninitialised one
(each worker initialises its own, with its own pools) and by keeping the old one alive, so
that its destructor never runs. What stays warm is process-wide: Python's imports and
caches, TensorFlow's op registry and Keras's classes. The warm-up runs fixed code of ours and
of the assignment's probes file on constant inputs: no student code, no checks, no answer
key; Keras's global state
and the random generators of ``random`` and NumPy are put back as they were.

``_reset_context`` is TensorFlow-internal: if it is missing, the warm-up is skipped before
any op runs; if it misbehaves, :func:`warm_tensorflow` raises :class:`WarmupFailed` and the
zygote restarts itself without the warm-up.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

ASSIGNMENT_WARM_UP = "warm_up"  # the optional function of an assignment's probes file

_kept: list[object] = []  # the zygote's used contexts: never destroyed (their threads are gone)


class WarmupFailed(RuntimeError):
    pass


def available() -> bool:
    """True when TensorFlow is imported and offers the context reset this module needs."""
    if "tensorflow" not in sys.modules:
        return False
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return False
    return callable(getattr(context, "_reset_context", None)) and hasattr(context, "_context")


def warm_tensorflow(extra: Callable[[], object] | None = None) -> None:
    """Run a small, fixed TensorFlow and Keras workload, then reset the eager context.

    ``extra`` is the assignment's own warm-up workload (``warm_up()`` of its probes file),
    run after the generic one; what it raises is ignored, as for the generic one.

    Raises:
        WarmupFailed: the context could not be replaced by an uninitialised one; workers
            forked from this process would share dead thread pools.
    """
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        for workload in (_workload, extra):
            try:
                if workload is not None:
                    workload()
            except Exception:  # a failed warm-up only costs speed; the resets still matter
                pass
        _clear_keras_session()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    _fresh_context()


def _workload() -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x = tf.constant(np.arange(12.0, dtype="float32").reshape(3, 4))
    y = tf.cast(tf.convert_to_tensor(np.ones((3, 4))), tf.float32)
    z = tf.zeros((2, 3)) + x[0:2, 1:4] * y[1, 2] - 1.0
    tf.reduce_sum(z**2)
    tf.reshape(z, (1, 2, 3, 1))
    tf.matmul(x, tf.transpose(y))
    z.numpy()

    class _Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(1, 2), initializer="random_normal")
            self.b = self.add_weight(name="b", shape=(1,), initializer="zeros")

        def call(self, inputs):
            return inputs[:, 0:1] * self.w[0, 0] + self.b

    scale = _Scale()
    scale(x)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((scale(x) - 1.0) ** 2)
        grads = tape.gradient(loss, scale.trainable_weights)
        scale.w.assign_sub(0.1 * grads[0])
        float(loss)
    np.asarray(scale.w)
    v = tf.Variable(tf.zeros((2, 2)))
    w = tf.Variable(tf.ones((1, 2)), name="w")
    with tf.GradientTape() as tape:
        v[0, 1].assign(tf.reduce_sum(x[0:1, 0:2] * w))
        total = tf.reduce_sum(v + 1.0)
    tape.gradient(total, [w])


def _clear_keras_session() -> None:
    """Keras's global state as a fresh process has it: layer names start again in every worker."""
    if "keras" in sys.modules:
        try:
            sys.modules["keras"].utils.clear_session()
        except Exception:
            pass


def _fresh_context() -> None:
    from tensorflow.python.eager import context

    old = context._context
    try:
        context._reset_context()
        fresh = context._context
    except Exception as exc:
        raise WarmupFailed(f"resetting TensorFlow's eager context failed: {exc}") from exc
    if fresh is old or getattr(fresh, "_initialized", True):
        raise WarmupFailed("TensorFlow's eager context was not replaced by a fresh one")
    _kept.append(old)
