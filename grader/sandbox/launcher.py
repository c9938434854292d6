"""Starting workers: the one place that knows how a student process comes to life.

A :class:`Launcher` owns a *zygote* (a sandboxed Python that has imported the heavy libraries)
and asks it to fork a worker per submission. ``warm=True`` keeps one zygote for the whole
batch (each worker is a copy-on-write fork: milliseconds instead of seconds of imports);
``warm=False`` starts a fresh zygote for every worker, which is the plain "new Python per
notebook" baseline. Everything else in the grader sees only :meth:`Launcher.spawn`.

The sandbox is bubblewrap (see :mod:`.sandboxing`): a read-only view of the system
libraries and the Python installation only (the project, the assignments, the reference
solutions, other submissions and the grader's output are simply not there), no network, its
own PID, IPC and UTS namespaces, and a process that dies with the grader. It works as root
and, through user namespaces, as an ordinary user. Where it cannot start, the ``sandbox``
policy decides: ``"require"`` (grading) refuses with the cause and its fix, ``"prefer"``
(a student checking their own notebook) runs unconfined and says so, ``"off"`` is the
user's explicit ``--no-sandbox``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from grader.authoring.assignment import DEFAULT_PRELOAD, Assignment
from grader.errors import GraderBug
from grader.sandbox import bubblewrap as sandboxing
from grader.sandbox.bubblewrap import MOUNT_ROOT, NO_SANDBOX_FLAG, PROBES_MOUNT, WORKER_PKG
from grader.sandbox.limits import Limits, WorkerLimits
from grader.sandbox.memlimit import MemoryGuard

SandboxPolicy = Literal["require", "prefer", "off"]
# The worker's private mounts (see worker/sandbox.py): a Python installation under one of
# them is laid back on top inside each worker.
PRIVATE_MOUNTS = ("/work", "/tmp", "/dev/shm")
STDERR_TAIL = 8192

if TYPE_CHECKING:
    from grader.engine.worker_process import WorkerProcess


@dataclass(frozen=True)
class Isolation:
    """What the sandbox could enforce on this machine (reported with every result)."""

    sandboxed: bool
    notes: tuple[str, ...] = ()
    mode: str = ""  # "root" or "userns" when sandboxed

    def describe(self) -> str:
        how = {"root": "bubblewrap, as root", "userns": "bubblewrap, user namespaces"}
        head = (
            f"sandboxed ({how.get(self.mode, 'bubblewrap')})"
            if self.sandboxed
            else ("NOT sandboxed")
        )
        return head + ("; " + "; ".join(self.notes) if self.notes else "")


class Zygote:
    """One zygote process and its control sockets (one per trusted grading process)."""

    def __init__(
        self,
        preload: tuple[str, ...],
        mode: sandboxing.Mode | None,
        hidden: tuple[Path, ...],
        channels: int = 1,
        warm_tensorflow: bool = False,
        probes: Path | None = None,
    ):
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(channels)]
        boot = (
            f"import sys; sys.path.insert(0, {MOUNT_ROOT!r}); "
            "from cgworker.zygote import main; main()"
        )
        child_fds = [child.fileno() for _, child in pairs]
        cfg = json.dumps(
            {
                "control_fds": child_fds,
                "preload": list(preload),
                # Worth its 0.09 s only in a zygote that forks a worker per submission.
                "warm_tensorflow": warm_tensorflow,
                # `python -I` skips the user's site-packages; a `pip install --user` needs it.
                "site_dirs": sandboxing.user_site_dirs(),
                # The assignment's probes file, as the zygote sees it (bound in the sandbox).
                "probes": None if probes is None else PROBES_MOUNT if mode else str(probes),
            }
        )
        python = [sys.executable, "-I", "-c", boot, cfg]
        if mode is not None:
            cmd = sandboxing.bwrap_command(mode, hidden, probes) + python
            env = None
        else:
            boot_local = boot.replace(repr(MOUNT_ROOT), repr(str(_local_worker_root())))
            cmd = [sys.executable, "-I", "-c", boot_local, cfg]
            env = {**sandboxing.zygote_env(), "HOME": os.environ.get("HOME", "/tmp")}
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=tuple(child_fds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        for _, child in pairs:
            child.close()
        self.controls = [parent for parent, _ in pairs]
        self.lock = threading.Lock()
        self._stderr_tail = b""
        threading.Thread(target=self._drain, daemon=True).start()
        for ctl in self.controls:
            if not ctl.recv(65536):
                self.proc.wait(timeout=10)
                raise GraderBug(
                    "the worker zygote failed to start: "
                    + self._stderr_tail.decode(errors="replace")[-2000:]
                )

    def _drain(self) -> None:
        # Fixed-size reads and a fixed-size tail: whatever reaches this pipe (workers get
        # /dev/null, but a zygote can still print), it never costs more than 8 KiB here.
        if self.proc.stderr is None:
            return
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._stderr_tail = (self._stderr_tail + chunk)[-STDERR_TAIL:]

    def spawn(self, request: dict, channel: int = 0) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl = self.controls[channel]
        with self.lock:
            try:
                socket.send_fds(ctl, [json.dumps(request).encode()], [theirs.fileno()])
                reply = ctl.recv(65536)
            finally:
                theirs.close()
        if not reply or not json.loads(reply).get("ok"):
            mine.close()
            raise GraderBug("the worker zygote refused or failed to fork a worker")
        return mine

    def close(self) -> None:
        for ctl in self.controls:
            try:
                ctl.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _local_worker_root() -> Path:
    """Unsandboxed fallback: a directory where ``cgworker`` imports without ``grader``.

    Named after this installation's worker package, so two checkouts never share one.
    """
    tag = hashlib.sha256(str(WORKER_PKG).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"convgrade-worker-{os.getuid()}-{tag}"
    target = root / "cgworker"
    root.mkdir(parents=True, exist_ok=True)
    if not (target.is_symlink() and target.resolve() == WORKER_PKG):
        tmp = root / f".cgworker-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(WORKER_PKG)
        os.replace(tmp, target)
    return root


@dataclass
class Launcher:
    """Starts isolated workers. See the module docstring."""

    warm: bool = True
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    hidden: tuple[Path, ...] = ()
    # What to do where no sandbox can start: "require" refuses (SandboxUnavailable),
    # "prefer" runs unconfined and says so, "off" never sandboxes (the user's --no-sandbox).
    sandbox: SandboxPolicy = "require"

    channels: int = 1  # trusted grading processes that will share the warm zygote
    probes: Path | None = None  # the assignment's probes file (Assignment.probes)

    def __post_init__(self) -> None:
        self.mode: sandboxing.Mode | None = None
        if self.sandbox == "off":
            notes: tuple[str, ...] = (
                f"{NO_SANDBOX_FLAG}: the user chose to run the notebooks unconfined, "
                "for trusted notebooks only",
            )
        else:
            support = sandboxing.detect()
            if support.mode is None and self.sandbox == "require":
                raise sandboxing.refusal(support.reason)
            self.mode = support.mode
            notes = () if self.mode else (support.reason,)
        if self.mode is None:
            notes += ("student code could read this user's files and use the network",)
        # memlimit: one budget per submission (cgroup v2, cgroup v1 or a watcher)
        self.memory = MemoryGuard(self.limits.memory_mib, self.limits.max_processes)
        notes += (self.memory.describe(),)
        self.isolation = Isolation(self.mode is not None, notes, self.mode or "")
        self._zygote: Zygote | None = None
        self._pending: queue.Queue | None = None
        self._lock = threading.Lock()
        self._channel = 0
        self._owner = os.getpid()
        self._start_midwife()

    def _start_midwife(self) -> None:
        self._births: queue.Queue = queue.Queue()
        self._midwife = threading.Thread(target=self._give_birth, daemon=True)
        self._midwife.start()

    def _give_birth(self) -> None:
        # bubblewrap's --die-with-parent follows the *thread* that started it (Linux's
        # parent-death signal), so every zygote is started from this one long-lived thread:
        # a zygote must not die when a short-lived grading thread finishes.
        while True:
            reply = self._births.get()
            if reply is None:
                return
            channels = self.channels if self.warm else 1
            try:
                reply.put(
                    Zygote(
                        self.preload,
                        self.mode,
                        self.hidden,
                        channels,
                        warm_tensorflow=self.warm,
                        probes=self.probes,
                    )
                )
            except BaseException as exc:
                reply.put(exc)

    def _order_zygote(self) -> queue.Queue:
        reply: queue.Queue = queue.Queue()
        self._births.put(reply)
        return reply

    @staticmethod
    def _receive(reply: queue.Queue) -> Zygote:
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def start(self, wait: bool = True) -> None:
        """Start the shared zygote (warm mode) now; ``wait=False`` returns at once, so the
        libraries load while the caller does other work."""
        if not self.warm:
            return
        with self._lock:
            if self._zygote is None and self._pending is None:
                self._pending = self._order_zygote()
            if wait and self._zygote is None and self._pending is not None:
                pending, self._pending = self._pending, None
                self._zygote = self._receive(pending)

    def in_child(self, channel: int) -> None:
        """Call in a forked grading process: use control channel ``channel`` of the zygote."""
        if channel >= self.channels:
            raise ValueError(f"channel {channel} >= channels={self.channels}")
        self._channel = channel
        self._lock = threading.Lock()
        if self._zygote is not None:
            self._zygote.lock = threading.Lock()
        # Threads do not survive fork: fresh-worker mode needs its own midwife here.
        self._start_midwife()

    def spawn(self, slot: int = 0) -> WorkerProcess:
        """Fork a new worker for one submission; ``slot`` picks its unprivileged uid (root)."""
        request = {
            "op": "spawn",
            # Root gives each live worker a uid of its own; an ordinary user cannot, so each
            # worker gets a user namespace of its own instead (its own process count), in
            # which it appears as that uid.
            "uid": 60000 + slot if self.mode else None,
            "userns": self.mode == "userns",
            "namespaces": self.mode is not None,
            "keep": sandboxing.kept_under_private_mounts(PRIVATE_MOUNTS) if self.mode else [],
            "limits": self.limits.as_dict(),
            "env": sandboxing.zygote_env(),
            "tf_threads": self.limits.tf_threads,
        }
        if self.warm:
            self.start()
            zygote, owned, channel = self._zygote, None, self._channel
            if zygote is None:
                raise GraderBug("the worker zygote was not started")
        else:
            zygote = owned = self._receive(self._order_zygote())
            channel = 0
        try:
            sock = zygote.spawn(request, channel)
        except BaseException:
            if owned:
                owned.close()
            raise
        from grader.engine.worker_process import (
            WorkerProcess,
        )  # numpy, via the wire protocol: not needed to start

        return WorkerProcess(sock, on_close=owned.close if owned else None, guard=self.memory)

    def close(self) -> None:
        if os.getpid() == self._owner:  # a forked grading process does not own the zygote
            with self._lock:
                if self._pending is not None and self._zygote is None:
                    self._zygote = self._receive(self._pending)
                    self._pending = None
                if self._zygote is not None:
                    self._zygote.close()
                    self._zygote = None
            self.memory.close()  # memlimit: the workers' cgroups, also the grading processes'
        self._births.put(None)


def launcher_for(
    assignment: Assignment,
    limits: Limits,
    *,
    sandbox: SandboxPolicy = "require",
    warm: bool = True,
    channels: int = 1,
    hidden: tuple[Path, ...] = (),
) -> Launcher:
    """The launcher for grading ``assignment`` within ``limits``: the one place one is built.

    Args:
        hidden: paths besides the assignment's own folder that workers must not see (the
            output folder, the submissions); the assignment is hidden unless it lies in one.
    """
    root = Path(assignment.root).resolve()
    inside = any(Path(h).resolve() in (root, *root.parents) for h in hidden)
    return Launcher(
        warm=warm,
        preload=assignment.preload,
        limits=limits.worker,
        hidden=hidden if inside else (root, *hidden),
        probes=assignment.probes,
        sandbox=sandbox,
        channels=channels,
    )
