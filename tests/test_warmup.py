"""The zygote's TensorFlow warm-up: workers forked after it must run all of TensorFlow.

Running ops in a process starts TensorFlow's thread pools, and a forked child that used
them would hang (measured: its first ``tf.function`` never returns). The warm-up therefore
ends by resetting the eager context. These tests fork after the warm-up and run what would
hang otherwise, each in a subprocess with a deadline, so a regression fails instead of
hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.authoring.assignment import DEFAULT_PRELOAD
from grader.sandbox.launcher import Launcher, WorkerLimits

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ENV_KEEP = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}

# Runs in a forked child: every part of TensorFlow that needs a thread pool of its own.
FULL_TENSORFLOW = """
import keras, numpy as np, tensorflow as tf

@tf.function(autograph=False)  # no autograph: this source is not in a file it could read
def loop(n):
    body = lambda i, s: (i + 1, s + tf.cast(i, tf.float32))
    return tf.while_loop(lambda i, s: i < n, body, (tf.constant(0), tf.constant(0.0)))[1]

print("tf.function", float(loop(tf.constant(5))))
model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(np.ones((16, 3)), np.ones((16, 1)), epochs=2, batch_size=4, verbose=0)
print("fit", model.predict(np.ones((1, 3)), verbose=0).shape)
data = tf.data.Dataset.range(6).map(lambda v: v * 2, num_parallel_calls=2).batch(4)
print("data", [b.numpy().tolist() for b in data])
print("py_function", float(tf.py_function(lambda a: a + 1, [tf.constant(1.0)], tf.float32)))
print("layer name", keras.layers.Dense(1).name)
import gc
print("gc enabled", gc.isenabled(), "collects", gc.collect() >= 0)
"""


def _run(script: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT), **ENV_KEEP}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_a_child_forked_after_the_warm_up_runs_all_of_tensorflow():
    script = textwrap.dedent(
        """
        import os, random, signal, sys
        import numpy as np
        import tensorflow, keras
        from grader.worker import warmup

        assert warmup.available()
        before = (random.getstate(), np.random.get_state()[1].tolist())
        warmup.warm_tensorflow()
        after = (random.getstate(), np.random.get_state()[1].tolist())
        print("random state kept", before == after, flush=True)
        pid = os.fork()
        if pid == 0:
            signal.alarm(120)  # a hang must fail the test, not block it
            exec(compile(FULL, "<child>", "exec"), {})
            sys.stdout.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", status)
        """
    ).replace("FULL", repr(FULL_TENSORFLOW))
    proc = _run(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "random state kept True" in out
    assert "child status 0" in out, out + proc.stderr[-3000:]
    assert "tf.function 10.0" in out
    assert "fit (1, 1)" in out
    assert "data [[0, 2, 4, 6], [8, 10]]" in out
    assert "py_function 2.0" in out
    assert "layer name dense" in out  # Keras's names start afresh after the warm-up


def test_a_context_that_is_not_replaced_is_refused():
    script = textwrap.dedent(
        """
        import tensorflow
        from tensorflow.python.eager import context
        from grader.worker import warmup

        context._reset_context = lambda: None  # as if TensorFlow's internals changed
        try:
            warmup.warm_tensorflow()
        except warmup.WarmupFailed as exc:
            print("refused:", exc)
        """
    )
    proc = _run(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: TensorFlow's eager context was not replaced" in proc.stdout


def test_the_zygote_restarts_itself_without_the_warm_up_when_it_fails():
    script = textwrap.dedent(
        """
        import json, sys
        cfg = json.loads(sys.argv[-1])
        if not cfg["warm_tensorflow"]:
            print("restarted without the warm-up; other settings kept:", cfg["preload"])
            sys.exit(0)
        import tensorflow
        from grader.worker import warmup, zygote

        def failing(extra=None):  # extra: the assignment's warm_up()
            raise warmup.WarmupFailed("simulated")

        warmup.warm_tensorflow = failing
        zygote._warm(cfg)
        print("not restarted")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(ROOT), **ENV_KEEP}
    cfg = json.dumps({"warm_tensorflow": True, "preload": ["numpy"]})
    proc = subprocess.run(
        [sys.executable, "-c", script, cfg],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restarted without the warm-up; other settings kept: ['numpy']" in proc.stdout
    assert "not restarted" not in proc.stdout
    assert "simulated; restarting without the warm-up" in proc.stderr


def test_sandboxed_workers_of_a_warm_zygote_run_all_of_tensorflow():
    launcher = Launcher(warm=True, preload=DEFAULT_PRELOAD, limits=WorkerLimits())
    try:
        replies = []
        for _ in range(2):  # the second worker is forked from the same, already used zygote
            worker = launcher.spawn(0)
            replies.append(worker.request({"op": "run_cell", "source": FULL_TENSORFLOW}, 120))
            worker.close()
    finally:
        launcher.close()
    for reply in replies:
        assert reply["error"] is None, reply["error"]
        text = "".join(o.get("text", "") for o in reply["outputs"] if o["output_type"] == "stream")
        assert "tf.function 10.0" in text
        assert "fit (1, 1)" in text
        assert "data [[0, 2, 4, 6], [8, 10]]" in text
        assert "layer name dense" in text
        # The zygote imports with the collector off; its workers must have it back on.
        assert "gc enabled True collects True" in text
