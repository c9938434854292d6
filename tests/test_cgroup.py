"""Fast unit tests of the cgroup and memory-watch modules.

The kernel's cgroup files cannot be made in a temporary directory, so the cgroup tests use a
fake tree: plain directories and files laid out like ``/sys/fs/cgroup``, described to
:func:`grader.sandbox.cgroup.find_layout` by mountinfo and ``/proc/self/cgroup`` text. Processes,
pidfds and ``/proc`` are real. The real kernel is exercised by ``test_memlimit_e2e.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.sandbox import cgroup, memlimit, memwatch

MIB = 1024 * 1024


def mountinfo(*mounts: tuple[Path, str, str]) -> str:
    """mountinfo lines for (mount point, fstype, super options) triples."""
    lines = ["22 1 0:21 / / rw,relatime - ext4 /dev/vda rw"]
    for i, (point, fstype, opts) in enumerate(mounts):
        lines.append(f"{30 + i} 22 0:{40 + i} / {point} rw,relatime - {fstype} cgroup rw,{opts}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def v1_tree(tmp_path: Path):
    """A v1 layout like this machine's: memory in a sub-group, pids at the root."""
    mem, pids = tmp_path / "memory", tmp_path / "pids"
    own = mem / "process_api" / "abc"
    own.mkdir(parents=True)
    pids.mkdir()
    (own / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    info = mountinfo(
        (tmp_path, "tmpfs", "mode=755"),
        (mem, "cgroup", "memory"),
        (pids, "cgroup", "pids"),
        (tmp_path / "unified", "cgroup2", "nsdelegate"),
    )
    member = "8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n"
    return info, member, own, pids


def test_v1_layout_is_found_from_mountinfo_and_membership(v1_tree):
    info, member, own, pids = v1_tree
    layout = cgroup.find_layout(info, member)
    assert layout.version == 1
    assert layout.parents == {"memory": own, "pids": pids}
    assert layout.describe() == "cgroup v1 (memory, pids)"


def test_hybrid_v2_without_memory_controller_falls_back_to_v1(v1_tree, tmp_path):
    info, member, own, _ = v1_tree
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    assert cgroup.find_layout(info, member).version == 1


def test_v1_worker_cgroup_gets_limits_members_and_is_removed(v1_tree):
    info, member, own, pids = v1_tree
    layout = cgroup.find_layout(info, member)
    group = cgroup.WorkerCgroup(layout, "convgrade-1-0", 2176 * MIB, 64, rmdir=shutil.rmtree)
    assert (own / "convgrade-1-0" / "memory.limit_in_bytes").read_text() == str(2176 * MIB)
    # The parent has memsw (swap accounting), so the child is held to it as well.
    assert (own / "convgrade-1-0" / "memory.memsw.limit_in_bytes").read_text() == str(2176 * MIB)
    assert (pids / "convgrade-1-0" / "pids.max").read_text() == "64"
    group.add(4242)
    assert (own / "convgrade-1-0" / "cgroup.procs").read_text() == "4242"
    assert (pids / "convgrade-1-0" / "cgroup.procs").read_text() == "4242"
    (own / "convgrade-1-0" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    (own / "convgrade-1-0" / "memory.max_usage_in_bytes").write_text("123456\n")
    assert group.oom_kills() == 2
    assert group.peak() == 123456
    (own / "convgrade-1-0" / "cgroup.procs").write_text("")
    (pids / "convgrade-1-0" / "cgroup.procs").write_text("")
    assert group.remove() is True
    assert not (own / "convgrade-1-0").exists() and not (pids / "convgrade-1-0").exists()


def test_v1_without_swap_accounting_writes_no_memsw(v1_tree):
    info, member, own, _ = v1_tree
    (own / "memory.memsw.limit_in_bytes").unlink()
    cgroup.WorkerCgroup(cgroup.find_layout(info, member), "w", 100 * MIB, 8, rmdir=shutil.rmtree)
    assert not (own / "w" / "memory.memsw.limit_in_bytes").exists()
    assert (own / "w" / "memory.limit_in_bytes").exists()


@pytest.fixture
def v2_tree(tmp_path: Path):
    root = tmp_path / "cg"
    own = root / "user.slice" / "grader.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("memory pids\n")
    (own / "memory.swap.max").write_text("max\n")
    info = mountinfo((root, "cgroup2", "nsdelegate,memory_recursiveprot"))
    return info, "0::/user.slice/grader.scope\n", own


def test_v2_layout_and_worker_cgroup_limits(v2_tree):
    info, member, own = v2_tree
    layout = cgroup.find_layout(info, member)
    assert layout.version == 2 and layout.parents == {"memory": own, "pids": own}
    group = cgroup.WorkerCgroup(layout, "w1", 512 * MIB, 32, rmdir=shutil.rmtree)
    d = own / "w1"
    assert group.dirs == {"memory": d}
    assert (d / "memory.max").read_text() == str(512 * MIB)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.oom.group").read_text() == "1"
    assert (d / "pids.max").read_text() == "32"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    (d / "memory.peak").write_text("999\n")
    assert group.oom_kills() == 1 and group.peak() == 999


def test_v2_enables_missing_controllers_in_its_own_cgroup(v2_tree):
    info, member, own = v2_tree
    (own / "cgroup.subtree_control").write_text("")
    cgroup.find_layout(info, member)
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_grader_alone_in_its_cgroup_moves_into_a_leaf(v2_tree):
    _, _, own = v2_tree
    (own / "cgroup.procs").write_text("4242\n")
    cgroup._leave_for_leaf(own, 4242)
    assert (own / "convgrade-grader-4242" / "cgroup.procs").read_text() == "4242"


def test_v2_cgroup_shared_with_other_processes_is_not_taken_over(v2_tree):
    _, _, own = v2_tree
    (own / "cgroup.procs").write_text("4242\n77\n")
    with pytest.raises(cgroup.CgroupUnavailable, match="holds other processes too.*systemd-run"):
        cgroup._leave_for_leaf(own, 4242)
    assert not (own / "convgrade-grader-4242").exists()


def test_v2_own_cgroup_under_a_bind_mounted_subtree(tmp_path):
    # In a container the v2 mount shows only the container's sub-tree.
    root = tmp_path / "cg"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "cgroup.controllers").write_text("memory\n")
    (root / "inner" / "cgroup.subtree_control").write_text("memory\n")
    info = f"30 22 0:40 /docker/xyz {root} rw - cgroup2 cgroup2 rw\n"
    layout = cgroup.find_layout(info, "0::/docker/xyz/inner\n")
    assert layout.parents == {"memory": root / "inner"}


def test_no_usable_cgroup_says_why(tmp_path):
    with pytest.raises(cgroup.CgroupUnavailable, match="no cgroup v2 with the memory controller"):
        cgroup.find_layout(mountinfo((tmp_path, "tmpfs", "mode=755")), "0::/\n")
    missing = tmp_path / "memory"  # mounted, but our group's directory is not there
    info = mountinfo((missing, "cgroup", "memory"))
    with pytest.raises(cgroup.CgroupUnavailable, match=r"cgroup v1 memory: .* is not writable"):
        cgroup.find_layout(info, "4:memory:/gone\n")


def test_remove_kills_the_processes_left_in_the_group(v1_tree):
    info, member, own, pids = v1_tree
    group = cgroup.WorkerCgroup(cgroup.find_layout(info, member), "w", MIB, 8, rmdir=os.rmdir)
    sleeper = subprocess.Popen(["sleep", "60"])
    (own / "w" / "cgroup.procs").write_text(f"{sleeper.pid}\n")
    # A fake group never empties: remove() reports that it could not remove it...
    assert group.remove(timeout=0.3) is False
    # ...after having killed what the group listed.
    assert sleeper.wait(timeout=5) == -9


def test_memory_guard_modes_and_description(v1_tree, monkeypatch):
    info, member, _, _ = v1_tree
    monkeypatch.delenv(memlimit.ENV_MODE, raising=False)
    guard = memlimit.MemoryGuard(2048, 64, find_layout=lambda: cgroup.find_layout(info, member))
    assert guard.mode == "cgroup v1"
    assert "2048 MiB for all of a submission's processes" in guard.describe()
    assert "cgroup v1 (memory, pids), pids.max 64" in guard.describe()
    monkeypatch.setenv(memlimit.ENV_MODE, "watcher")
    watcher = memlimit.MemoryGuard(2048, find_layout=lambda: cgroup.find_layout(info, member))
    assert watcher.mode == "watcher"
    assert "no cgroup: CONVGRADE_MEMORY_GUARD=watcher" in watcher.describe()
    monkeypatch.setenv(memlimit.ENV_MODE, "cgroup-please")
    with pytest.raises(ValueError, match="expected 'auto' or 'watcher'"):
        memlimit.MemoryGuard(2048)


def test_memory_guard_without_cgroup_watches_and_says_why(monkeypatch):
    monkeypatch.delenv(memlimit.ENV_MODE, raising=False)

    def nothing() -> cgroup.Layout:
        raise cgroup.CgroupUnavailable("cgroup v2: /x is not writable (no delegation)")

    guard = memlimit.MemoryGuard(512, find_layout=nothing)
    assert guard.mode == "watcher"
    assert "no cgroup: cgroup v2: /x is not writable" in guard.describe()


def test_group_limit_has_bounded_slack():
    assert memlimit.group_limit_bytes(512) == 576 * MIB
    assert memlimit.group_limit_bytes(2048) == 2176 * MIB
    assert memlimit.group_limit_bytes(16384) == 16640 * MIB


CHILD_TREE = """
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.write(w, b"x"); time.sleep(60)
    time.sleep(60)
os.read(r, 1); sys.stdout.write("ready\\n"); sys.stdout.flush(); time.sleep(60)
"""


def test_tree_is_found_through_proc_and_measured():
    proc = subprocess.Popen([sys.executable, "-c", CHILD_TREE], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        pids = memwatch.descendants(proc.pid)
        assert len(pids) == 3 and pids[0] == proc.pid
        used, seen = memwatch.tree_bytes(proc.pid)
        assert sorted(seen) == sorted(pids)
        # Three Pythons: some MiB of their own together, far less than a GiB.
        assert MIB < used < 1024 * MIB
        # The cheap resident-page bound the watcher looks at first is never below PSS.
        upper, _ = memwatch.tree_bytes(proc.pid, precise=False)
        assert upper >= used
        pidfd = os.pidfd_open(proc.pid)
        try:
            assert memlimit.host_pid(pidfd) == proc.pid
        finally:
            os.close(pidfd)
    finally:
        for p in memwatch.descendants(proc.pid)[::-1]:
            os.kill(p, 9)
        proc.wait()


def test_tmpfs_bytes_sees_files_in_a_tmpfs():
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.statvfs(shm).f_blocks == 0:
        pytest.skip("no tmpfs at /dev/shm")
    before = memwatch.tmpfs_bytes(os.getpid(), ["/dev/shm", "/dev/shm/"], private_only=False)
    path = shm / f"convgrade-test-{os.getpid()}"
    try:
        path.write_bytes(b"\1" * (16 * MIB))
        after = memwatch.tmpfs_bytes(os.getpid(), ["/dev/shm", "/dev/shm/"], private_only=False)
        # The grader's own view is not a worker's private mount: an unsandboxed worker sees
        # the machine's /dev/shm, whose files are not its own.
        assert memwatch.tmpfs_bytes(os.getpid(), ["/dev/shm"]) == 0
    finally:
        path.unlink()
    assert after - before >= 15 * MIB  # one mount, counted once although named twice


def test_timer_polls_until_an_item_is_done():
    timer = memwatch.Timer(interval=0.01)

    class Item:
        polls = 0

        def poll(self) -> bool:
            self.polls += 1
            return self.polls < 3

    item = Item()
    timer.add(item)
    deadline = time.monotonic() + 5
    while item.polls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert item.polls == 3 and item not in timer._items


def test_stale_groups_of_dead_graders_are_removed(v1_tree):
    info, member, own, pids = v1_tree
    layout = cgroup.find_layout(info, member)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for parent in (own, pids):
        (parent / f"convgrade-{dead.pid}-0").mkdir()
        (parent / f"convgrade-{os.getpid()}-0").mkdir()  # ours: alive, left alone
    (own / "unrelated").mkdir()
    assert memlimit.remove_stale_groups(layout) == 2
    assert sorted(p.name for p in own.iterdir() if p.is_dir()) == [
        f"convgrade-{os.getpid()}-0",
        "unrelated",
    ]
