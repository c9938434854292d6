"""End-to-end: one memory budget for a whole submission, on the real kernel, with real workers.

A notebook that forks children which each stay under the per-process limit, or that parks
its data in the tmpfs ``/tmp``, must be stopped at the budget: the submission's status is
``memory``, the batch carries on, and the kernel's own peak counter of the worker's cgroup
shows that the tree never held much more than the budget. The watcher (the fallback where no
cgroup can be made) is forced with ``CONVGRADE_MEMORY_GUARD=watcher`` and must stop the same
notebooks.

The cgroup cases need a cgroup this process may make children of (root here); the
allocations are bounded by the budget when it holds (about 2.2 GiB), and by 9 GiB for at
most a few seconds if it did not.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader.commands.cli import run
from grader.engine import grading
from grader.engine.notebook import Cell
from grader.engine.session import NotebookSession, Timeouts
from grader.sandbox import cgroup, memlimit
from grader.sandbox.launcher import Launcher, WorkerLimits

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
PRELOAD = ("numpy", "IPython.core.interactiveshell")

FORK_HOG = """
import os, time
kids = []
for _ in range({children}):
    pid = os.fork()
    if pid == 0:
        try:
            block = bytearray({mib} * 2**20)  # zero-filled: every page touched
            time.sleep({hold})
        finally:
            os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print("all children finished")
"""

TMPFS_FILL = """
chunk = b"\\1" * (64 * 2**20)
with open("/tmp/fill", "wb") as fh:
    for _ in range({mib} // 64):
        fh.write(chunk)
"""

RAM_HOLD = """
import time
ram = bytearray({mib} * 2**20)
time.sleep(4)  # the notebook keeps it, as an attacker would
print("kept it")
"""


LOWER_OOM_SCORE = """
with open("/proc/self/oom_score_adj", "w") as fh:
    fh.write("0")
"""


def _layout_or_skip() -> cgroup.Layout:
    try:
        return cgroup.current_layout()
    except cgroup.CgroupUnavailable as exc:
        pytest.skip(f"no cgroup can be made here: {exc}")


class PeakSampler:
    """Reads the kernel's peak counter of every worker cgroup under ``parent`` while it runs."""

    def __init__(self, layout: cgroup.Layout) -> None:
        self.parent = layout.parents["memory"]
        self.peak_file = "memory.peak" if layout.version == 2 else "memory.max_usage_in_bytes"
        self.peak = 0
        self.seen: set[Path] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            for d in self.parent.glob("convgrade-*"):
                try:
                    self.peak = max(self.peak, int((d / self.peak_file).read_text()))
                    self.seen.add(d)
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _gone(dirs, timeout: float = 5.0) -> bool:
    """Whether the directories disappear (cgroups are removed in the background)."""
    deadline = time.monotonic() + timeout
    while any(d.exists() for d in dirs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _write_nb(path: Path, *sources: str) -> None:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nbformat.write(nb, path)


@pytest.mark.parametrize("jobs", [1, 2])
def test_forked_children_share_one_budget_and_the_batch_carries_on(
    tmp_path, engine_notebooks, mini_assignment, monkeypatch, jobs
):
    monkeypatch.delenv(memlimit.ENV_MODE, raising=False)
    layout = _layout_or_skip()
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(engine_notebooks / "good.ipynb", subs / "good.ipynb")
    good = nbformat.read(engine_notebooks / "good.ipynb", as_version=4)
    sources = [c.source for c in good.cells if c.cell_type == "code"]
    hog = FORK_HOG.format(children=6, mib=1536, hold=8)
    _write_nb(subs / "fork_hog.ipynb", sources[0], hog, *sources[1:])
    out = tmp_path / "out"
    sampler = PeakSampler(layout)
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        args = ["grade", str(subs), "-a", str(mini_assignment), "--out", str(out)]
        code = run([*args, "--memory", "2048", "--jobs", str(jobs)], stdout, stderr)
    finally:
        sampler.close()
    elapsed = time.monotonic() - started
    assert code == 0, stderr.getvalue()
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    assert rows["good"]["status"] == "graded" and rows["good"]["score"] == "5"
    assert rows["fork_hog"]["status"] == "memory"
    # The worker was replaced and the cells around the hog replayed: the answers still count.
    assert rows["fork_hog"]["score"] == "5"
    result = json.loads((out / "fork_hog" / "result.json").read_text())
    assert any("more than the 2048 MiB" in e for e in result["errors"]), result["errors"]
    assert f"{layout.describe()}, pids.max 256" in result["execution"]["isolation"]
    # The kernel's peak for the worker's whole tree: the budget plus its slack, no more.
    assert 1536 * MIB < sampler.peak <= memlimit.group_limit_bytes(2048) + 8 * MIB
    assert sampler.peak < 2.3 * 1024 * MIB
    # Stopped at once, not after the children's 8 s; and no cgroup is left behind.
    assert elapsed < 60
    assert sampler.seen and _gone(sampler.seen)


def _session(tmp_path, memory_mib: int, *sources: str, disk_mib: int = 256, sandbox=True):
    launcher = Launcher(
        preload=PRELOAD,
        limits=WorkerLimits(memory_mib=memory_mib, disk_mib=disk_mib),
        sandbox="require" if sandbox else "off",
    )
    cells = tuple(Cell(i, s) for i, s in enumerate(sources))
    session = NotebookSession(launcher, cells, Timeouts(cell=30, notebook=120, call=10))
    return launcher, session


@pytest.mark.parametrize("mode", ["auto", "watcher"])
def test_files_in_tmp_count_toward_the_budget(tmp_path, monkeypatch, mode):
    monkeypatch.setenv(memlimit.ENV_MODE, mode)
    if mode == "auto":
        _layout_or_skip()
    memlimit.HISTORY.clear()
    launcher, session = _session(
        tmp_path,
        2048,
        TMPFS_FILL.format(mib=1536),
        RAM_HOLD.format(mib=1024),
        "print('after')",
        disk_mib=2048,
    )
    try:
        assert launcher.memory.mode.startswith("watcher" if mode == "watcher" else "cgroup v")
        session.run_notebook()
    finally:
        session.close()
        launcher.close()
    statuses = [r.status for r in session.records]
    assert statuses[0] == "ok", session.records
    assert session.records[1].status == "killed" and session.records[1].ename == "MemoryError"
    assert "more than the 2048 MiB" in session.records[1].evalue
    assert statuses[2] == "ok"  # a fresh worker ran the rest
    assert grading._status(session) == "memory"
    killed = [h for h in memlimit.HISTORY if h[2]]
    assert len(killed) == 1 and killed[0][0] == launcher.memory.mode
    if mode == "auto":  # the kernel's peak: 1.5 GiB of files + 1 GiB asked for, held to 2.1
        assert killed[0][1] <= memlimit.group_limit_bytes(2048) + 8 * MIB


def test_watcher_stops_forked_children_and_workers_are_the_oom_killers_choice(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(memlimit.ENV_MODE, "watcher")
    memlimit.HISTORY.clear()
    launcher, session = _session(
        tmp_path,
        512,
        "print(open('/proc/self/oom_score_adj').read().strip())",
        FORK_HOG.format(children=4, mib=256, hold=6),
    )
    try:
        session.run_notebook()
    finally:
        session.close()
        launcher.close()
    assert launcher.memory.mode == "watcher"
    assert session.outputs[0][0]["text"].strip() == "1000"
    assert session.records[1].ename == "MemoryError", session.records
    assert session.records[1].duration < 6  # stopped before the children's 6 s were up
    assert grading._status(session) == "memory"
    mode, peak, killed = memlimit.HISTORY[-1]
    assert (mode, killed) == ("watcher", True)
    # What the watcher measured when it killed: past the limit. How far past depends on how
    # soon its thread ran (about 60 MiB on a quiet machine, up to all 1 GiB asked for when
    # other work starved it), so only the notebook's own total bounds it here.
    assert memlimit.group_limit_bytes(512) < peak < (4 * 256 + 128) * MIB
    if memlimit.protect_grader() == "":
        assert int(Path("/proc/self/oom_score_adj").read_text()) <= memlimit.GRADER_OOM_SCORE_ADJ


def test_worker_cgroup_has_the_worker_and_its_limits_and_goes_away(tmp_path, monkeypatch):
    monkeypatch.delenv(memlimit.ENV_MODE, raising=False)
    _layout_or_skip()
    launcher, session = _session(
        tmp_path, 700, "print(open('/proc/self/oom_score_adj').read().strip())", LOWER_OOM_SCORE
    )
    try:
        session.run_notebook()
        assert session.outputs[0][0]["text"].strip() == "1000"
        # Set by a privileged grader, 1000 is also the floor: the student cannot lower it.
        assert session.records[1].status == "error", session.records
        assert session.records[1].ename == "PermissionError"
        group = session.worker.guard.group
        mem = group.dirs["memory"]
        pid = session.worker.guard.pid
        assert str(pid) in (mem / "cgroup.procs").read_text().split()
        limit_file = "memory.max" if group.layout.version == 2 else "memory.limit_in_bytes"
        assert int((mem / limit_file).read_text()) == memlimit.group_limit_bytes(700)
        pids_dir = group.dirs.get("pids", mem)
        assert (pids_dir / "pids.max").read_text().strip() == "256"
        dirs = list(group.dirs.values())
    finally:
        session.close()
        launcher.close()
    assert _gone(dirs)


NAMED_HOG = """
import os, time
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        try:
            with open({where!r} + "/" + str(os.getpid()), "w"):
                pass
            block = bytearray(300 * 2**20)
            time.sleep(20)
        finally:
            os._exit(0)
time.sleep(20)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("mode", ["auto", "watcher"])
def test_children_of_an_unsandboxed_worker_are_killed_too(tmp_path, monkeypatch, mode):
    # Without a PID namespace, killing the worker leaves its children running: the guard
    # must kill them itself (from the cgroup's list, or from the watched tree).
    monkeypatch.setenv(memlimit.ENV_MODE, mode)
    if mode == "auto":
        _layout_or_skip()
    where = tmp_path / "pids"
    where.mkdir()
    launcher, session = _session(tmp_path, 512, NAMED_HOG.format(where=str(where)), sandbox=False)
    try:
        session.run_notebook()
    finally:
        session.close()
        launcher.close()
    assert session.records[0].ename == "MemoryError", session.records
    assert session.records[0].duration < 15  # not the 20 s the processes would have slept
    children = [int(p.name) for p in where.iterdir()]
    assert len(children) == 3
    deadline = time.monotonic() + 5
    while any(_running(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in children)


def test_a_cgroup_that_cannot_be_made_falls_back_to_the_watcher(tmp_path, monkeypatch):
    monkeypatch.delenv(memlimit.ENV_MODE, raising=False)
    launcher, session = _session(tmp_path, 512, FORK_HOG.format(children=4, mib=256, hold=6))
    # A layout whose parent directory does not exist: making the group fails (ENOENT).
    broken = cgroup.Layout(1, {"memory": tmp_path / "no-such-cgroup"})
    launcher.memory = memlimit.MemoryGuard(512, find_layout=lambda: broken)
    try:
        session.run_notebook()
        notes = list(session.notes)
    finally:
        session.close()
        launcher.close()
    assert any(n.startswith("cgroup failed (") and "watching instead" in n for n in notes), notes
    assert session.records[0].ename == "MemoryError", session.records
    assert memlimit.HISTORY[-1][0] == "watcher" and memlimit.HISTORY[-1][2]
