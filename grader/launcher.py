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
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .assignment import DEFAULT_PRELOAD
from .client import WorkerProcess
from .errors import GraderBug

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
            if h.exists():
                cmd += ["--tmpfs", str(h)]
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
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _can_sandbox() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the grader is not running as root"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    return True, ""


class Zygote:
    """One zygote process and its control socket."""

    def __init__(self, preload: tuple[str, ...], sandbox: bool, hidden: tuple[Path, ...]):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot = (
            f"import sys; sys.path.insert(0, {MOUNT_ROOT!r}); "
            "from cgworker.zygote import main; main()"
        )
        cfg = json.dumps({"control_fd": child.fileno(), "preload": list(preload)})
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
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        child.close()
        self.ctl = parent
        self.lock = threading.Lock()
        self._stderr_tail: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        ready = self.ctl.recv(65536)
        if not ready:
            self.proc.wait(timeout=10)
            raise GraderBug(
                "the worker zygote failed to start: "
                + b"".join(self._stderr_tail).decode(errors="replace")[-2000:]
            )

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line])[-50:]

    def spawn(self, request: dict) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self.lock:
            try:
                socket.send_fds(self.ctl, [json.dumps(request).encode()], [theirs.fileno()])
                reply = self.ctl.recv(65536)
            finally:
                theirs.close()
        if not reply or not json.loads(reply).get("ok"):
            mine.close()
            raise GraderBug("the worker zygote refused or failed to fork a worker")
        return mine

    def close(self) -> None:
        try:
            self.ctl.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _local_worker_root() -> Path:
    """Unsandboxed fallback: a directory where ``cgworker`` imports without ``grader``."""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"convgrade-worker-{os.getuid()}"
    target = root / "cgworker"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(WORKER_PKG)
        except FileExistsError:
            pass
    return root


@dataclass
class Launcher:
    """Starts isolated workers. See the module docstring."""

    warm: bool = True
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    hidden: tuple[Path, ...] = ()
    force_unsandboxed: bool = False

    def __post_init__(self) -> None:
        ok, why = _can_sandbox()
        if self.force_unsandboxed:
            ok, why = False, "sandbox disabled by the caller"
        self.sandbox = ok
        notes = () if ok else (why, "student code can read files and use the network")
        self.isolation = Isolation(sandboxed=ok, notes=notes)
        self._zygote: Zygote | None = None
        self._lock = threading.Lock()
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
            try:
                reply.put(Zygote(self.preload, self.sandbox, self.hidden))
            except BaseException as exc:
                reply.put(exc)

    def _new_zygote(self) -> Zygote:
        reply: queue.Queue = queue.Queue()
        self._births.put(reply)
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def start(self) -> None:
        """Start the shared zygote now (warm mode), so the first submission does not wait."""
        if self.warm:
            with self._lock:
                if self._zygote is None:
                    self._zygote = self._new_zygote()

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
            zygote, owned = self._zygote, None
        else:
            zygote = owned = self._new_zygote()
        try:
            sock = zygote.spawn(request)
        except BaseException:
            if owned:
                owned.close()
            raise
        return WorkerProcess(sock, on_close=owned.close if owned else None)

    def close(self) -> None:
        with self._lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
        self._births.put(None)
