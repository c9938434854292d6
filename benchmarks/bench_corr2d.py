"""Timing of `reference.corr2d` against `tf.nn.conv2d` and `corr2d_loop`.

Run from the repository root:

    python benchmarks/bench_corr2d.py [--repeats N] [--loop-repeats M]

Prints median wall-clock times and their ratios. Targets from issue 3:
corr2d within 1.5x of tf.nn.conv2d (1024x1024 input, 5x5 kernel), and at least
100x faster than corr2d_loop (32x32 input, 3x3 kernel). This is a report, not
a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from reference import corr2d, corr2d_loop  # noqa: E402


def median_seconds(funcs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall-clock time of each function, timed in alternation.

    Each round calls every function once, so load from other processes falls
    on all sides alike. One untimed warm-up round comes first.
    """
    times: list[list[float]] = [[] for _ in funcs]
    for round_ in range(repeats + 1):
        for func, samples in zip(funcs, times, strict=True):
            start = time.perf_counter()
            func()
            if round_:
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per fast case")
    parser.add_argument("--loop-repeats", type=int, default=5, help="timed calls of corr2d_loop")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s)")

    # 1. corr2d vs the raw op it wraps; both return a materialized numpy array.
    X = tf.constant(rng.standard_normal((1024, 1024)), tf.float32)
    K = tf.constant(rng.standard_normal((5, 5)), tf.float32)
    X4, K4 = tf.reshape(X, (1, 1024, 1024, 1)), tf.reshape(K, (5, 5, 1, 1))
    ours, raw = median_seconds(
        [
            lambda: corr2d(X, K).numpy(),
            lambda: tf.nn.conv2d(X4, K4, strides=1, padding="VALID").numpy(),
        ],
        args.repeats,
    )
    print("1024x1024 input, 5x5 kernel, median of", args.repeats)
    print(f"  tf.nn.conv2d (4-D, pre-shaped) {fmt(raw)}")
    print(f"  corr2d                         {fmt(ours)}")
    print(f"  corr2d / tf.nn.conv2d = {ours / raw:.2f}x  (target <= 1.5x)")

    # 2. corr2d vs the pixel-by-pixel teaching version.
    x = tf.constant(rng.standard_normal((32, 32)), tf.float32)
    k = tf.constant(rng.standard_normal((3, 3)), tf.float32)
    (fast,) = median_seconds([lambda: corr2d(x, k).numpy()], args.repeats)
    (slow,) = median_seconds([lambda: corr2d_loop(x, k).numpy()], args.loop_repeats)
    print(f"32x32 input, 3x3 kernel, median of {args.repeats} / {args.loop_repeats}")
    print(f"  corr2d_loop {fmt(slow)}")
    print(f"  corr2d      {fmt(fast)}")
    print(f"  corr2d_loop / corr2d = {slow / fast:.0f}x  (target >= 100x)")


if __name__ == "__main__":
    main()
