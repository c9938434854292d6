"""Grading throughput: convgrade against executing the same notebooks with nbconvert.

Both sides run in the same invocation, alternating, on the same batch, so the machine's
noise hits both; the figures printed are medians over ``--repeats`` runs and their ratio.

    python benchmarks/throughput.py                 # 40 submissions, 3 repeats
    python benchmarks/throughput.py --n 200 --repeats 1 --no-baseline   # scaling
    python benchmarks/throughput.py --check         # `convgrade check` vs one nbconvert
    python benchmarks/throughput.py --cluster       # --cluster on a 2-worker LocalCluster
                                                    # against local --jobs 2

The batch is a realistic mix built from the assignment's examples (full marks, typical
mistakes, a notebook that raises half-way), each copy made unique so nothing is reused.
The baseline is ``jupyter nbconvert --to notebook --execute --allow-errors`` two notebooks at
a time; it only executes the notebooks, it does not even run checks. convgrade runs with
its default settings (``--jobs`` = cores) and ``--force``.

Memory: the peak, sampled every 0.5 s, of the summed proportional set size (PSS: shared
pages split between the processes sharing them) of the grader and all its descendants
(zygote, workers). The summed RSS, which counts copy-on-write pages once per process, is
printed next to it. Memory comes from one extra run of convgrade whose time is not counted:
reading smaps of processes that map TensorFlow costs CPU on the same cores, and made the
sampled runs about 5% slower (measured: medians of 14.0 s sampled vs 13.2 s not, 4 runs
each, alternating).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assignments" / "convolutions" / "examples"
MIX = ["full_marks", "flipped_kernel", "no_bias_and_uphill", "full_marks", "errors_halfway"]


def build_batch(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        nb = nbformat.read(EXAMPLES / f"{MIX[i % len(MIX)]}.ipynb", as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell(f"Submission number {i}."))
        path = folder / f"student{i:03d}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _memory_kib(pids: list[int]) -> tuple[int, int]:
    pss = rss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return pss, rss


class PeakMemory:
    """Samples the summed PSS/RSS of a process tree in a background thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            pss, rss = _memory_kib(_descendants(self.pid))
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_convgrade(args: list[str], sample_memory: bool = False) -> tuple[float, int, int]:
    """Wall time of one convgrade run, and its peak PSS and RSS (KiB) when sampled."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    mem = PeakMemory(proc.pid) if sample_memory else None
    _, err = proc.communicate()
    if mem is not None:
        mem.stop()
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"convgrade failed ({proc.returncode}):\n{err[-3000:]}")
    return elapsed, (mem.peak_pss if mem else 0), (mem.peak_rss if mem else 0)


def nbconvert_one(path: Path, out_dir: Path) -> str:
    """Execute one notebook; returns "" or, when nbconvert failed, the end of its stderr."""
    proc = subprocess.run(
        [
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--allow-errors",
            "--ExecutePreprocessor.timeout=600",
            "--output-dir",
            str(out_dir),
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return "" if proc.returncode == 0 else f"{path.name}: {proc.stderr[-800:]}"


def run_baseline(paths: list[Path], out_dir: Path, parallel: int = 2) -> float:
    """Wall time of executing every notebook, ``parallel`` at a time.

    A run in which nbconvert itself failed (seen once: a kernel that did not start) is
    thrown away and done again, so a failure neither stops the benchmark nor shortens or
    lengthens the baseline.
    """
    for _attempt in range(3):
        shutil.rmtree(out_dir, ignore_errors=True)
        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            failures = [f for f in pool.map(lambda p: nbconvert_one(p, out_dir), paths) if f]
        elapsed = time.perf_counter() - started
        if not failures:
            return elapsed
        print(f"nbconvert failed on {len(failures)} notebook(s); run discarded:", flush=True)
        print(failures[0], flush=True)
    sys.exit("nbconvert failed in three runs in a row; no baseline")


def _fmt_mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def compare_cluster(tmp: Path, n: int, repeats: int, threads: int = 1) -> None:
    """Local ``--jobs 2`` against ``--cluster`` on a 2-worker LocalCluster, alternating.

    The cluster is started here, outside convgrade, once (as a course would keep one
    running); each convgrade run still starts its own zygote on every Dask worker, as each
    local run starts its own zygote.
    """
    from distributed import LocalCluster  # pip install convgrade[cluster]

    build_batch(tmp / "batch", n)
    grade = ["grade", str(tmp / "batch"), "--out", str(tmp / "out"), "--force", "-q"]
    local, remote = [], []
    with LocalCluster(
        n_workers=2, threads_per_worker=threads, processes=True, dashboard_address=":0"
    ) as cluster:
        for r in range(repeats):
            t, _, _ = run_convgrade([*grade, "--jobs", "2"])
            local.append(t)
            print(f"run {r + 1}: convgrade --jobs 2 {t:.1f} s", flush=True)
            t, _, _ = run_convgrade([*grade, "--cluster", cluster.scheduler_address])
            remote.append(t)
            print(f"run {r + 1}: convgrade --cluster (2 Dask workers x {threads} thread) {t:.1f} s")
        # Memory, from one more untimed run of each: for the cluster, this process's whole
        # tree (the scheduler in here, the Dask workers, their zygotes and sandboxed workers,
        # and the convgrade client).
        _, local_pss, _ = run_convgrade([*grade, "--jobs", "2"], sample_memory=True)
        tree = PeakMemory(os.getpid())
        run_convgrade([*grade, "--cluster", cluster.scheduler_address])
        tree.stop()
    ml, mr = statistics.median(local), statistics.median(remote)
    print()
    print(f"submissions: {n}; repeats: {repeats}")
    print(f"local --jobs 2: median {ml:.1f} s  {[f'{x:.1f}' for x in local]}")
    print(
        f"--cluster, 2-worker LocalCluster, {threads} thread(s) each: median {mr:.1f} s  "
        f"{[f'{x:.1f}' for x in remote]}"
    )
    print(f"ratio cluster / local: {mr / ml:.2f} (goal: <= 1.30)")
    print(
        f"peak PSS (untimed runs): local {_fmt_mib(local_pss)}; cluster, scheduler and "
        f"client included {_fmt_mib(tree.peak_pss)} (RSS sum {_fmt_mib(tree.peak_rss)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="submissions in the batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None, help="convgrade --jobs (default: cores)")
    parser.add_argument("--no-baseline", action="store_true", help="skip nbconvert")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare `convgrade check` with one nbconvert execution",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="also time convgrade --fresh-workers (no pre-warmed zygote)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="compare --cluster on a 2-worker Dask LocalCluster with local --jobs 2",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        help="with --cluster: Dask threads per worker (notebooks run in parallel, checks not)",
    )
    opts = parser.parse_args()
    if opts.cluster:
        with tempfile.TemporaryDirectory(prefix="convgrade-bench-") as tmp:
            print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
            compare_cluster(Path(tmp), opts.n, opts.repeats, opts.threads_per_worker)
        return
    if not opts.no_baseline and shutil.which("jupyter") is None:
        sys.exit(
            "the baseline needs `jupyter nbconvert` and ipykernel: pip install nbconvert ipykernel"
        )

    with tempfile.TemporaryDirectory(prefix="convgrade-bench-") as tmp:
        tmp = Path(tmp)
        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
        if opts.check:
            nb = EXAMPLES / "full_marks.ipynb"
            ours, theirs = [], []
            for _ in range(opts.repeats):
                t, _, _ = run_convgrade(["check", str(nb), "-a", "convolutions"])
                ours.append(t)
                theirs.append(run_baseline([nb], tmp / "nbout", parallel=1))
            mo, mt = statistics.median(ours), statistics.median(theirs)
            print(
                f"convgrade check (public checks): median {mo:.2f} s  {[f'{x:.2f}' for x in ours]}"
            )
            print(
                f"nbconvert --execute (no checks): median {mt:.2f} s  "
                f"{[f'{x:.2f}' for x in theirs]}"
            )
            print(f"ratio check / nbconvert: {mo / mt:.2f}")
            return

        paths = build_batch(tmp / "batch", opts.n)
        jobs = ["--jobs", str(opts.jobs)] if opts.jobs else []
        grade = ["grade", str(tmp / "batch"), "--out", str(tmp / "out"), "--force", "-q", *jobs]
        ours, theirs, fresh = [], [], []
        for r in range(opts.repeats):
            t, _, _ = run_convgrade(grade)
            ours.append(t)
            print(f"run {r + 1}: convgrade {t:.1f} s", flush=True)
            if opts.fresh:
                t, _, _ = run_convgrade([*grade, "--fresh-workers"])
                fresh.append(t)
                print(f"run {r + 1}: convgrade --fresh-workers {t:.1f} s", flush=True)
            if not opts.no_baseline:
                t = run_baseline(paths, tmp / "nbout")
                theirs.append(t)
                print(f"run {r + 1}: nbconvert x{opts.n}, 2 at a time {t:.1f} s", flush=True)

        _, pss, rss = run_convgrade(grade, sample_memory=True)
        mo = statistics.median(ours)
        print()
        print(f"submissions: {opts.n}; repeats: {opts.repeats}")
        print(
            f"convgrade grade: median {mo:.1f} s, {mo / opts.n:.2f} s per submission, "
            f"peak PSS {_fmt_mib(pss)} (RSS sum {_fmt_mib(rss)}; from one more, untimed run)"
        )
        if fresh:
            mf = statistics.median(fresh)
            print(
                f"convgrade grade --fresh-workers: median {mf:.1f} s "
                f"(warm is {mf / mo:.1f}x faster)"
            )
        if theirs:
            mt = statistics.median(theirs)
            print(
                f"nbconvert --execute, 2 at a time: median {mt:.1f} s, "
                f"{mt / opts.n:.2f} s per notebook"
            )
            print(f"ratio convgrade / nbconvert: {mo / mt:.3f} (goal: <= 0.100)")


if __name__ == "__main__":
    main()
