"""A control group per worker: one memory and process budget for everything a submission starts.

``RLIMIT_AS`` bounds each process on its own, so a notebook that forks can multiply its
memory, and files written to its tmpfs count nowhere. A memory cgroup charges every page the
worker's processes touch (tmpfs pages included) to one counter with one limit.

Each worker gets a child of the grader's *own* cgroup, so the grader needs no rights beyond
the ones it already has over its own group (root, or a delegated systemd user slice):

- **cgroup v2**: ``memory.max``, ``memory.swap.max = 0``, ``memory.oom.group = 1`` (the
  kernel kills the whole group at once) and ``pids.max``.
- **cgroup v1** (only v1 hierarchies mounted): ``memory.limit_in_bytes`` (and
  ``memory.memsw.limit_in_bytes``: no escape into swap) in the memory hierarchy,
  ``pids.max`` in the pids hierarchy. v1 has no group OOM kill: the kernel kills one process
  and :mod:`grader.sandbox.memlimit` kills the rest when it sees the ``oom_kill`` counter move.

The paths come from ``/proc/self/mountinfo`` and ``/proc/self/cgroup``, passed in as text so
that tests can point them at a directory tree of their own.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class CgroupUnavailable(Exception):
    """No cgroup can be made here; the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where worker cgroups go: ``parents`` maps a controller to the directory to make them in
    (v2: one directory for both controllers)."""

    version: int
    parents: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        return f"cgroup v{self.version} ({', '.join(sorted(self.parents))})"


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or not tail[0].startswith("cgroup"):
            continue
        point = fields[4].replace("\\040", " ")
        out.append((fields[3], point, tail[0], set(tail[2].split(","))))
    return out


def _membership(cgroup_text: str) -> dict[str, str]:
    """Controller name -> path of our cgroup in that hierarchy ("" is the v2 hierarchy)."""
    out: dict[str, str] = {}
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for name in parts[1].split(",") if parts[1] else [""]:
            out[name] = parts[2]
    return out


def _join(mount_root: str, point: str, path: str) -> Path:
    # A bind mount of a sub-tree (containers) shows paths relative to its root.
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return Path(point) / path.lstrip("/")


def find_layout(mountinfo: str, cgroup_text: str, pid: int | None = None) -> Layout:
    """The layout to use here, preferring v2; raises :class:`CgroupUnavailable` with reasons.

    On v2, memory can be handed to children only by a cgroup without processes of its own
    (the root excepted). If the grader's cgroup holds only the grader, the grader moves
    itself into a leaf child first, as systemd does for delegated units.
    """
    pid = os.getpid() if pid is None else pid
    member = _membership(cgroup_text)
    reasons = []
    mounts = _mounts(mountinfo)
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in member:
            continue
        own = _join(root, point, member[""])
        try:
            return _v2_layout(own, pid)
        except CgroupUnavailable as exc:
            reasons.append(str(exc))
    parents: dict[str, Path] = {}
    for name in ("memory", "pids"):
        for root, point, fstype, opts in mounts:
            if fstype == "cgroup" and name in opts and name in member:
                own = _join(root, point, member[name])
                if os.access(own, os.W_OK):
                    parents[name] = own
                else:
                    reasons.append(f"cgroup v1 {name}: {own} is not writable")
    if "memory" in parents:
        return Layout(1, parents)
    if not reasons:
        reasons.append("no cgroup v2 with the memory controller and no cgroup v1 memory hierarchy")
    raise CgroupUnavailable("; ".join(reasons))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _v2_layout(own: Path, pid: int) -> Layout:
    if "memory" not in _read(own / "cgroup.controllers").split():
        raise CgroupUnavailable(f"cgroup v2: no memory controller in {own}")
    if not os.access(own, os.W_OK):
        raise CgroupUnavailable(f"cgroup v2: {own} is not writable (no delegation)")
    wanted = [c for c in ("memory", "pids") if c in _read(own / "cgroup.controllers").split()]
    enabled = set(_read(own / "cgroup.subtree_control").split())
    missing = [c for c in wanted if c not in enabled]
    if missing:
        try:
            _write(own / "cgroup.subtree_control", " ".join("+" + c for c in missing))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupUnavailable(
                    f"cgroup v2: cannot enable {missing} in {own}: {exc}"
                ) from None
            _leave_for_leaf(own, pid)
            try:
                _write(own / "cgroup.subtree_control", " ".join("+" + c for c in missing))
            except OSError as exc2:
                raise CgroupUnavailable(f"cgroup v2: cannot enable {missing}: {exc2}") from None
    return Layout(2, {c: own for c in wanted})


def _leave_for_leaf(own: Path, pid: int) -> None:
    """Move the grader out of ``own`` into ``own/convgrade-grader-<pid>``, if it is alone."""
    procs = [p for p in _read(own / "cgroup.procs").split() if p.strip()]
    if procs != [str(pid)]:
        raise CgroupUnavailable(
            f"cgroup v2: {own} holds other processes too ({len(procs)}), so it cannot give "
            "memory to children; start convgrade in a cgroup of its own "
            "(e.g. systemd-run --user --scope -p Delegate=yes convgrade ...)"
        )
    leaf = own / f"convgrade-grader-{pid}"
    try:
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(pid))
    except OSError as exc:
        raise CgroupUnavailable(f"cgroup v2: cannot move the grader into {leaf}: {exc}") from None


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _optional(child: Path, parent: Path, name: str) -> bool:
    # Kernels show a control file in every group of a hierarchy, so the parent tells whether
    # the child will have it (memsw needs swap accounting; swap.max, swap support).
    return (child / name).exists() or (parent / name).exists()


class WorkerCgroup:
    """One worker's cgroup(s): made with their limits, joined by pid, killed and removed."""

    def __init__(
        self,
        layout: Layout,
        name: str,
        memory_bytes: int,
        max_pids: int,
        rmdir: Callable[[Path], None] = os.rmdir,
    ) -> None:
        self.layout = layout
        self.dirs: dict[str, Path] = {}
        self._rmdir = rmdir
        try:
            for ctl, parent in layout.parents.items():
                d = parent / name
                if d in self.dirs.values():
                    continue
                d.mkdir()
                self.dirs[ctl] = d
            self._limit(memory_bytes, max_pids)
        except OSError:
            self.remove(timeout=0.5)
            raise

    def _limit(self, memory_bytes: int, max_pids: int) -> None:
        mem = self.dirs["memory"]
        parent = self.layout.parents["memory"]
        if self.layout.version == 2:
            _write(mem / "memory.max", str(memory_bytes))
            if _optional(mem, parent, "memory.swap.max"):
                _write(mem / "memory.swap.max", "0")
            _write(mem / "memory.oom.group", "1")
            if "pids" in self.layout.parents:
                _write(mem / "pids.max", str(max_pids))
            return
        _write(mem / "memory.limit_in_bytes", str(memory_bytes))
        # memsw (memory + swap) must be >= the memory limit, so it is written second.
        if _optional(mem, parent, "memory.memsw.limit_in_bytes"):
            _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes))
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", str(max_pids))

    def add(self, pid: int) -> None:
        """Move process ``pid`` (a host pid) in; its later children are born inside."""
        for d in dict.fromkeys(self.dirs.values()):
            _write(d / "cgroup.procs", str(pid))

    @property
    def _memory_dir(self) -> Path:
        return self.dirs["memory"]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for this group's memory limit."""
        name = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        for line in _read(self._memory_dir / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def peak(self) -> int | None:
        """The most memory the group ever held (bytes), where the kernel tracks it."""
        name = "memory.peak" if self.layout.version == 2 else "memory.max_usage_in_bytes"
        text = _read(self._memory_dir / name).strip()
        return int(text) if text.isdigit() else None

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            out.update(int(p) for p in _read(d / "cgroup.procs").split() if p.isdigit())
        return sorted(out)

    def kill(self) -> None:
        """SIGKILL every process in the group (cgroup.kill on v2 kernels that have it)."""
        kill_file = self.dirs["memory"] / "cgroup.kill"
        if self.layout.version == 2 and kill_file.exists():
            try:
                _write(kill_file, "1")
                return
            except OSError:
                pass
        # v1: one by one. A pid listed here is a member, so it is not a recycled stranger's
        # unless it exits and is reused between the read and the kill (microseconds).
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self, timeout: float = 2.0) -> bool:
        """Kill what is left, then remove the directories; False if one stayed (busy)."""
        deadline = time.monotonic() + timeout
        pending = list(dict.fromkeys(self.dirs.values()))
        delay = 0.001
        while pending:
            if self.pids():
                self.kill()
            for d in list(pending):
                try:
                    self._rmdir(d)
                    pending.remove(d)
                except FileNotFoundError:
                    pending.remove(d)
                except OSError:
                    pass  # EBUSY: dying processes still in it
            if pending and time.monotonic() >= deadline:
                return False
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        return True


_found: Layout | None = None


def current_layout() -> Layout:
    """The layout for this process, from the real ``/proc/self`` files.

    Found once and kept: on v2 finding it may move the grader into a leaf, and a second
    search from inside that leaf would move it one level deeper each time. Forked grading
    processes inherit the grader's cgroups, so they share the answer.
    """
    global _found
    if _found is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
            member = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot read /proc/self ({exc})") from None
        _found = find_layout(mountinfo, member)
    return _found
