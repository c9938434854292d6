"""Starting workers: the one place that knows how a student process comes to life.

A :class:`Launcher` owns a *zygote* (a sandboxed Python that has imported the heavy libraries)
and asks it to fork a worker per submission. ``warm=True`` keeps one zygote for the whole
batch (each worker is a copy-on-write fork: milliseconds instead of seconds of imports);
``warm=False`` starts a fresh zygote for every worker, which is the plain "new Python per
notebook" baseline. Everything else in the grader sees only :meth:`Launcher.spawn`.

The sandbox is bubblewrap: a read-only view of the system libraries and the Python
installation only (the project, the assignments, the reference solutions, other
submissions and the grader's output are simply not there), no network, its own PID, IPC
and UTS namespaces, and a process that dies with the grader. Without root or bubblewrap the
zygote runs unsandboxed and :attr:`Launcher.isolation` says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .assignment import DEFAULT_PRELOAD
from .errors import GraderBug
from .memlimit import MemoryGuard

if TYPE_CHECKING:
    from .client import WorkerProcess

WORKER_PKG = Path(__file__).resolve().parent / "worker"
MOUNT_ROOT = "/opt/convgrade"
_SYSTEM_DIRS = ("/usr", "/etc")


@dataclass(frozen=True)
class Isolation:
    """What the sandbox could enforce on this machine (reported with every result)."""

    sandboxed: bool
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        head = "sandboxed (bubblewrap)" if self.sandboxed else "NOT sandboxed"
        return head + ("; " + "; ".join(self.notes) if self.notes else "")


@dataclass(frozen=True)
class WorkerLimits:
    memory_mib: int = 2048
    max_processes: int = 256
    disk_mib: int = 256
    max_open_files: int = 256
    tf_threads: int = 1

    def as_dict(self) -> dict:
        return {
            "memory_mib": self.memory_mib,
            "max_processes": self.max_processes,
            "disk_mib": self.disk_mib,
            "max_open_files": self.max_open_files,
        }


def _hidden_paths(extra: tuple[Path, ...]) -> list[Path]:
    """Directories that must not be visible even if they sit inside a bound directory."""
    paths = [Path(__file__).resolve().parent]
    spec = importlib.util.find_spec("reference")
    if spec and spec.submodule_search_locations:
        paths += [Path(p).resolve() for p in spec.submodule_search_locations]
    return paths + [Path(p).resolve() for p in extra]


def _python_dirs() -> list[Path]:
    dirs = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            dirs.add(Path(value))
    for p in site.getsitepackages():
        dirs.add(Path(p))
    dirs.add(Path(sys.executable).resolve().parent)
    resolved = sorted({d.resolve() for d in dirs if d.exists()}, key=lambda p: len(p.parts))
    keep: list[Path] = []
    for d in resolved:
        if any(d == k or k in d.parents for k in keep + [Path(s) for s in _SYSTEM_DIRS]):
            continue
        keep.append(d)
    return keep


def bwrap_command(hidden: tuple[Path, ...] = ()) -> list[str]:
    """The bubblewrap command line that starts a zygote (without the Python part)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap")
    cmd = [bwrap, "--die-with-parent", "--new-session", "--cap-add", "ALL"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--hostname", "convgrade"]
    for d in _SYSTEM_DIRS:
        if os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    bound = _python_dirs()
    created: set[Path] = set()
    for d in bound:
        for parent in reversed(d.parents):
            if parent == Path("/") or parent in created or str(parent) in _SYSTEM_DIRS:
                continue
            # bubblewrap would create missing parents with mode 0700 (e.g. /root), which
            # locks out the unprivileged worker; state the mode explicitly.
            cmd += ["--perms", "0755", "--dir", str(parent)]
            created.add(parent)
        cmd += ["--ro-bind", str(d), str(d)]
    for h in _hidden_paths(hidden):
        if any(h == b or b in h.parents for b in bound + [Path(s) for s in _SYSTEM_DIRS]):
            if h.is_dir():
                cmd += ["--tmpfs", str(h)]
            elif h.exists():  # a file (e.g. a zip of submissions): show an empty one
                cmd += ["--ro-bind", "/dev/null", str(h)]
    cmd += ["--perms", "0755", "--dir", MOUNT_ROOT]
    cmd += ["--ro-bind", str(WORKER_PKG), f"{MOUNT_ROOT}/cgworker"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    cmd += ["--perms", "0755", "--dir", "/work", "--chdir", "/work"]
    cmd += ["--clearenv"]
    for key, value in _zygote_env().items():
        cmd += ["--setenv", key, value]
    return cmd


def _zygote_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/work",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp",
        "IPYTHONDIR": "/tmp/.ipython",  # keep the student's working directory empty
        "XDG_CACHE_HOME": "/tmp/.cache",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        # oneDNN's kernels cost more than they save on the tiny tensors of a notebook
        # (measured: a chapter notebook's cells take about a third less CPU without them);
        # results differ from a Jupyter run only by float round-off.
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }


def _can_sandbox() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the grader is not running as root"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    return True, ""


class Zygote:
    """One zygote process and its control sockets (one per trusted grading process)."""

    def __init__(
        self,
        preload: tuple[str, ...],
        sandbox: bool,
        hidden: tuple[Path, ...],
        channels: int = 1,
        warm_tensorflow: bool = False,
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
            }
        )
        python = [sys.executable, "-I", "-c", boot, cfg]
        if sandbox:
            cmd = bwrap_command(hidden) + python
            env = None
        else:
            boot_local = boot.replace(repr(MOUNT_ROOT), repr(str(_local_worker_root())))
            cmd = [sys.executable, "-I", "-c", boot_local, cfg]
            env = {**_zygote_env(), "HOME": os.environ.get("HOME", "/tmp")}
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
        self._stderr_tail: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        for ctl in self.controls:
            if not ctl.recv(65536):
                self.proc.wait(timeout=10)
                raise GraderBug(
                    "the worker zygote failed to start: "
                    + b"".join(self._stderr_tail).decode(errors="replace")[-2000:]
                )

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line])[-50:]

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
    force_unsandboxed: bool = False

    channels: int = 1  # trusted grading processes that will share the warm zygote

    def __post_init__(self) -> None:
        ok, why = _can_sandbox()
        if self.force_unsandboxed:
            ok, why = False, "sandbox disabled by the caller"
        self.sandbox = ok
        notes = () if ok else (why, "student code can read files and use the network")
        # memlimit: one budget per submission (cgroup v2, cgroup v1 or a watcher)
        self.memory = MemoryGuard(self.limits.memory_mib, self.limits.max_processes)
        notes += (self.memory.describe(),)
        self.isolation = Isolation(sandboxed=ok, notes=notes)
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
                        self.preload, self.sandbox, self.hidden, channels, warm_tensorflow=self.warm
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
            if wait and self._zygote is None:
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
        """Fork a new worker for one submission; ``slot`` picks its unprivileged uid."""
        request = {
            "op": "spawn",
            "uid": 60000 + slot if self.sandbox else None,
            "namespaces": self.sandbox,
            "limits": self.limits.as_dict(),
            "env": _zygote_env(),
            "tf_threads": self.limits.tf_threads,
        }
        if self.warm:
            self.start()
            zygote, owned, channel = self._zygote, None, self._channel
        else:
            zygote = owned = self._receive(self._order_zygote())
            channel = 0
        try:
            sock = zygote.spawn(request, channel)
        except BaseException:
            if owned:
                owned.close()
            raise
        from .client import WorkerProcess  # numpy, via the wire protocol: not needed to start

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
