"""One memory budget per submission, for all its processes together, and who the kernel kills.

The trusted side applies it to each worker as soon as the worker's pidfd arrives, before any
request runs student code (children forked later inherit all of it):

- a cgroup of its own (:mod:`grader.sandbox.cgroup`, v2 or v1) with the ``--memory`` budget (plus
  the slack of :func:`group_limit_bytes`) and the process limit, wherever one can be made;
- otherwise a watcher (:mod:`grader.sandbox.memwatch`) that looks at the tree's memory (PSS) and
  tmpfs every 0.15 s and kills the tree past the same limit.

The worker's cgroup is removed once its processes are gone, by the watch thread so that
grading does not wait for a large process to exit.

Workers get ``oom_score_adj`` 1000 and the grader, where it may lower its own, -800: if the
machine itself runs short, the kernel picks a student's process, never the grader.

:class:`MemoryGuard` decides once per :class:`~grader.sandbox.launcher.Launcher` which of the three
applies (:meth:`MemoryGuard.describe` goes into ``execution.isolation``); a
:class:`WorkerGuard` holds one worker's cgroup or watch. A request to a worker that was
killed for memory fails with ``WorkerFailure("memory", ...)``.

``CONVGRADE_MEMORY_GUARD=watcher`` forces the watcher (tests, and machines whose cgroups
misbehave); the default is ``auto``.
"""

from __future__ import annotations

import atexit
import collections
import functools
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from grader.errors import WorkerFailure
from grader.sandbox import cgroup, memwatch

MIB = 1024 * 1024
ENV_MODE = "CONVGRADE_MEMORY_GUARD"
WORKER_OOM_SCORE_ADJ = 1000
GRADER_OOM_SCORE_ADJ = -800
TMPFS_PATHS = ("/tmp", "/work", "/dev/shm")  # a worker's private tmpfs mounts (sandbox.py)

# (mode, peak bytes or None, killed for memory) of the last workers released, newest last:
# what the tests and the benchmark read; nothing decides on it.
HISTORY: collections.deque[tuple[str, int | None, bool]] = collections.deque(maxlen=64)

_protected: str | None = None


def protect_grader() -> str:
    """Lower this process's ``oom_score_adj`` where allowed; a note if it was not."""
    global _protected
    if _protected is None:
        try:
            current = int(open("/proc/self/oom_score_adj").read())
            if current > GRADER_OOM_SCORE_ADJ:
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write(str(GRADER_OOM_SCORE_ADJ))
            _protected = ""
        except (OSError, ValueError) as exc:  # lowering needs CAP_SYS_RESOURCE
            _protected = f"grader oom_score_adj unchanged ({getattr(exc, 'strerror', exc)})"
    return _protected


def host_pid(pidfd: int) -> int:
    """The pid (in our namespace) of the process behind ``pidfd``; -1 once it has exited."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as fh:
            for line in fh:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def group_limit_bytes(memory_mib: int) -> int:
    """What the whole tree may hold: the budget plus a little slack (64 to 256 MiB).

    The slack lets the per-process ``RLIMIT_AS`` (the same budget, on address space) fail
    first for a single process that allocates too much: Python raises ``MemoryError`` in the
    cell and the notebook goes on, instead of the whole worker being killed. Copy-on-write
    copies of the zygote's pages, which the address space does not see, also fit in it.
    """
    budget = int(memory_mib) * MIB
    return budget + min(256 * MIB, max(64 * MIB, budget // 16))


class MemoryGuard:
    """The budget and how it is enforced, decided once for every worker of one launcher."""

    def __init__(
        self,
        memory_mib: int,
        max_processes: int = 256,
        mode: str | None = None,
        find_layout: Callable[[], cgroup.Layout] = cgroup.current_layout,
    ) -> None:
        self.memory_mib = int(memory_mib)
        self.max_processes = int(max_processes)
        self.layout: cgroup.Layout | None = None
        self.reason = ""
        wanted = (mode or os.environ.get(ENV_MODE) or "auto").strip().lower()
        if wanted not in ("auto", "watcher"):
            raise ValueError(f"{ENV_MODE}={wanted!r}: expected 'auto' or 'watcher'")
        if wanted == "watcher":
            self.reason = f"{ENV_MODE}=watcher"
        else:
            try:
                self.layout = find_layout()
            except (cgroup.CgroupUnavailable, OSError) as exc:
                self.reason = str(exc)
        self.grader_note = protect_grader()
        self._names = itertools.count()
        if self.layout is not None:
            remove_stale_groups(self.layout)

    def close(self, timeout: float = 2.0) -> None:
        """At the end of a batch: remove the worker cgroups still waiting to be removed,
        this process's and those of its grading processes that have exited."""
        deadline = time.monotonic() + timeout
        for removal in list(_Removal.pending):
            if removal.group.remove(timeout=max(0.0, deadline - time.monotonic())):
                _Removal.pending.discard(removal)
        if self.layout is not None:
            while remove_stale_groups(self.layout, busy_too=True) and time.monotonic() < deadline:
                time.sleep(0.02)

    @property
    def mode(self) -> str:
        """``"cgroup v2"``, ``"cgroup v1"`` or ``"watcher"``."""
        return f"cgroup v{self.layout.version}" if self.layout else "watcher"

    def describe(self) -> str:
        """One line for ``execution.isolation``."""
        head = f"memory: {self.memory_mib} MiB for all of a submission's processes and its /tmp"
        if self.layout:
            how = f"{self.layout.describe()}, pids.max {self.max_processes}"
        else:
            how = f"watcher of PSS every {memwatch.INTERVAL:g} s; no cgroup: {self.reason}"
        return f"{head} ({how})"

    def attach(self, pidfd: int) -> WorkerGuard:
        """Put the worker behind ``pidfd`` under the budget (before it runs student code)."""
        pid = host_pid(pidfd)
        guard = WorkerGuard(self, pidfd, pid)
        if pid <= 0:
            return guard
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w") as fh:
                fh.write(str(WORKER_OOM_SCORE_ADJ))
        except OSError:
            pass  # the worker's limits still hold; only the kernel's choice is less certain
        if self.layout is not None:
            # The process counter restarts in a forked grading process: tag with its pid.
            name = f"convgrade-{os.getpid()}-{next(self._names)}"
            try:
                guard.group = cgroup.WorkerCgroup(
                    self.layout, name, group_limit_bytes(self.memory_mib), self.max_processes
                )
                guard.group.add(pid)
                guard.mode = self.mode
            except OSError as exc:
                if guard.group is not None:
                    guard.group.remove(timeout=0.5)
                    guard.group = None
                guard.note = f"cgroup failed ({exc}); watching instead"
        if guard.group is None:
            guard.baseline, _ = memwatch.tree_bytes(pid, TMPFS_PATHS)
        memwatch.TIMER.add(guard)
        return guard


class WorkerGuard:
    """One worker's cgroup or watch; polled by :data:`memwatch.TIMER`."""

    def __init__(self, owner: MemoryGuard, pidfd: int, pid: int) -> None:
        self.owner = owner
        self.pidfd = pidfd
        self.pid = pid
        self.mode = "watcher"
        self.group: cgroup.WorkerCgroup | None = None
        self.note = ""
        self.baseline = 0  # watcher: the tree's memory when it was attached
        self.peak = 0  # watcher: the most PSS measured above the baseline
        self.tripped = ""
        self.released = False
        self._next_precise = 0.0
        self._lock = threading.Lock()

    @property
    def message(self) -> str:
        return (
            f"the notebook's processes together used more than the {self.owner.memory_mib} "
            "MiB of memory a submission may have (files written to /tmp count too), so all "
            "of them were stopped; use smaller or fewer arrays and no extra processes"
        )

    def poll(self) -> bool:
        with self._lock:
            if self.released or self.tripped:
                return False
            if self.group is not None:
                # v1 kills one process; v2's oom.group all of them. Either way: all of them.
                if self.group.oom_kills() > 0:
                    self._trip()
                return not self.tripped
            return self._watch()

    def _watch(self) -> bool:
        limit = group_limit_bytes(self.owner.memory_mib)
        upper, pids = memwatch.tree_bytes(self.pid, TMPFS_PATHS, precise=False)
        if upper - self.baseline <= limit:
            return True
        now = time.monotonic()
        if now < self._next_precise:
            return True
        started = time.thread_time()
        used, pids = memwatch.tree_bytes(self.pid, TMPFS_PATHS)
        # A big tree of processes can take tens of ms to measure: keep that under about a
        # tenth of a core, at the price of a slower reaction for such trees only.
        self._next_precise = now + 9 * (time.thread_time() - started)
        self.peak = max(self.peak, used - self.baseline)
        if used - self.baseline > limit:
            self._trip(pids)
        return not self.tripped

    def _trip(self, pids: Sequence[int] = ()) -> None:
        self.tripped = self.message
        self.kill(pids)

    def kill(self, pids: Sequence[int] = ()) -> None:
        """SIGKILL the worker (PID 1 of its namespace: all of it) and what else is known."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass
        for p in pids:  # an unsandboxed worker's children do not die with it
            if p != self.pid:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        if self.group is not None:
            self.group.kill()

    def verdict(self) -> str:
        """Why the worker is gone, if memory was the reason; "" otherwise."""
        with self._lock:
            if not self.tripped and not self.released and self.group is not None:
                if self.group.oom_kills() > 0:
                    self._trip()
            return self.tripped

    def release(self) -> None:
        """After the worker was killed: stop watching, and remove its cgroup once empty.

        The removal waits for the processes to be gone, which takes a killed TensorFlow
        worker 80 to 130 ms (measured): the timer thread does it, off the grading path.
        """
        with self._lock:
            if self.released:
                return
            self.released = True
        memwatch.TIMER.remove(self)
        peak: int | None = self.peak
        if self.group is not None:
            peak = self.group.peak()
            self.group.kill()
            _Removal(self.group).start()
        HISTORY.append((self.mode, peak, bool(self.tripped)))


class _Removal:
    """Removes one worker cgroup as soon as its processes are gone (or gives up: a group
    left behind is removed by the next grader, :func:`remove_stale_groups`)."""

    pending: set[_Removal] = set()

    def __init__(self, group: cgroup.WorkerCgroup, give_up_after: float = 10.0) -> None:
        self.group = group
        self.give_up = time.monotonic() + give_up_after

    def start(self) -> None:
        if not self.group.remove(timeout=0):
            _Removal.pending.add(self)
            memwatch.TIMER.add(self)

    def poll(self) -> bool:
        if self.group.remove(timeout=0) or time.monotonic() > self.give_up:
            _Removal.pending.discard(self)
            return False
        return True


@atexit.register
def _remove_pending() -> None:
    for removal in list(_Removal.pending):
        removal.group.remove(timeout=2.0)


def remove_stale_groups(layout: cgroup.Layout, busy_too: bool = False) -> int:
    """Remove the empty worker cgroups of grading processes that have exited.

    A group is named ``convgrade-<grader pid>-<n>``; only those whose grader is gone are
    touched, and ``rmdir`` refuses a group that still holds a process. Returns how many went
    or, with ``busy_too``, how many are left that still hold a dying process.
    """
    removed = busy = 0
    for parent in set(layout.parents.values()):
        for d in parent.glob("convgrade-*-*"):
            owner = d.name.split("-")[1]
            if not owner.isdigit() or _alive(int(owner)):
                continue
            try:
                os.rmdir(d)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:
                busy += 1
    return busy if busy_too else removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def attach(guard: MemoryGuard | None, pidfd: int) -> WorkerGuard | None:
    """The client's hook: ``None`` when the launcher has no guard."""
    return guard.attach(pidfd) if guard is not None else None


def notes(worker_guard: WorkerGuard | None) -> list[str]:
    """What this worker's report should say about its memory limit beyond the launcher's."""
    return [worker_guard.note] if worker_guard is not None and worker_guard.note else []


def release(worker_guard: WorkerGuard | None) -> None:
    if worker_guard is not None:
        worker_guard.release()


class _Guarded(Protocol):
    """What :func:`reports_memory_kills` needs of the object whose method it decorates."""

    alive: bool

    @property
    def guard(self) -> WorkerGuard | None: ...


_Self = TypeVar("_Self", bound=_Guarded)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def reports_memory_kills(
    method: Callable[Concatenate[_Self, _P], _R],
) -> Callable[Concatenate[_Self, _P], _R]:
    """Decorates ``WorkerProcess.request``: a failure after a memory kill says so."""

    @functools.wraps(method)
    def wrapper(self: _Self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except WorkerFailure as exc:
            guard = self.guard
            why = guard.verdict() if guard is not None else ""
            if not why:
                raise
            self.alive = False
            raise WorkerFailure("memory", why) from exc

    return wrapper
