"""What the per-submission memory budget costs: making and removing a cgroup, and watching.

Run from the repository root (the cgroup part needs a cgroup this process may make children
of, e.g. root):

    python benchmarks/memlimit_overhead.py [--repeats N] [--preload numpy,...]

Prints medians: the trusted side's time to put one process under a new cgroup
(``MemoryGuard.attach``: pid from the pidfd, ``oom_score_adj``, mkdir, limits, join) and to
remove it (``WorkerGuard.release`` after the process died), and the CPU time of one look at
a real worker's tree by the watcher (the cheap look at resident-page counters that it makes
every time, and the PSS measure it makes only when those counters are past the budget) and
by the cgroup check, scaled to CPU per second of watching at the timer's interval. A report,
not a test: figures depend on the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import memwatch  # noqa: E402
from grader.sandbox import memlimit
from grader.sandbox.launcher import Launcher, WorkerLimits  # noqa: E402


def _median_us(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e6:,.0f} us"


def cgroup_cycle(repeats: int) -> None:
    guard = memlimit.MemoryGuard(2048, mode="auto")
    if guard.layout is None:
        print(f"cgroup: none here ({guard.reason})")
        return
    attach, release = [], []
    for _ in range(repeats):
        proc = subprocess.Popen(["sleep", "30"])
        pidfd = os.pidfd_open(proc.pid)
        t0 = time.perf_counter()
        wg = guard.attach(pidfd)
        attach.append(time.perf_counter() - t0)
        assert wg.group is not None
        proc.kill()
        proc.wait()
        t0 = time.perf_counter()
        wg.release()
        release.append(time.perf_counter() - t0)
        os.close(pidfd)
    print(
        f"{guard.mode}: attach {_median_us(attach)}, remove {_median_us(release)} "
        f"(median of {repeats}; p90 attach {sorted(attach)[int(repeats * 0.9)] * 1e6:,.0f} us, "
        f"remove {sorted(release)[int(repeats * 0.9)] * 1e6:,.0f} us)"
    )


def watch_cost(preload: tuple[str, ...], repeats: int, children: int) -> None:
    launcher = Launcher(preload=preload, limits=WorkerLimits(memory_mib=2048))
    try:
        worker = launcher.spawn()
        if children:
            src = (
                "import os, time\n"
                f"for _ in range({children}):\n"
                "    if os.fork() == 0:\n"
                "        time.sleep(120); os._exit(0)\n"
            )
            worker.request({"op": "run_cell", "source": src}, 30)
        pid = worker.guard.pid
        for precise in (False, True):
            looks = []
            for _ in range(repeats):
                t0 = time.thread_time()
                used, pids = memwatch.tree_bytes(pid, memlimit.TMPFS_PATHS, precise=precise)
                looks.append(time.thread_time() - t0)
            per_second = statistics.median(looks) / memwatch.INTERVAL
            what = "PSS (smaps_rollup)" if precise else "resident counters (status)"
            print(
                f"watcher, preload {','.join(preload)}, {len(pids)} processes, "
                f"{what} {used / 2**20:,.0f} MiB: one look {_median_us(looks)} CPU, "
                f"{per_second * 1e3:.1f} ms CPU per second watched"
            )
        group = worker.guard.group
        if group is not None:
            checks = []
            for _ in range(repeats):
                t0 = time.thread_time()
                group.oom_kills()
                checks.append(time.thread_time() - t0)
            per_second = statistics.median(checks) / memwatch.INTERVAL
            print(
                f"{worker.guard.mode} oom check: one look {_median_us(checks)} CPU, "
                f"{per_second * 1e3:.2f} ms CPU per second watched"
            )
        worker.close()
    finally:
        launcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--preload", default="numpy,IPython.core.interactiveshell")
    args = parser.parse_args()
    cgroup_cycle(args.repeats)
    preload = tuple(m for m in args.preload.split(",") if m)
    watch_cost(preload, args.repeats, children=0)
    watch_cost(preload, args.repeats, children=6)


if __name__ == "__main__":
    main()
