"""Which sandbox this machine can give student code, and the bubblewrap command that makes it.

Two ways to the same isolation:

- ``root``: bubblewrap runs with the grader's privileges; each worker later switches to a
  uid of its own (60000 + slot).
- ``userns`` (an ordinary user): bubblewrap makes a user namespace (``--unshare-user``) in
  which the zygote holds capabilities over its own namespaces only. Each worker then makes
  its own mount, PID, network and IPC namespaces as under root, and a nested user namespace
  of its own, which gives it its own process count (what root gets from the separate uid),
  and drops every capability before student code runs.

Where neither works, :func:`detect` says why and how to fix it, and the grader refuses to run
student code (fail closed) unless the user asked for ``--no-sandbox`` by name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grader.errors import StaffError

Mode = Literal["root", "userns"]
MOUNT_ROOT = "/opt/convgrade"
# Where an assignment's probes file appears inside the sandbox, beside the worker package.
PROBES_MOUNT = f"{MOUNT_ROOT}/cgprobes.py"
WORKER_PKG = Path(__file__).resolve().parents[1] / "worker"
SYSTEM_DIRS = ("/usr", "/etc")
# Top-level names the convgrade distribution installs (grader, answer key, bundled
# assignments): never visible to student code, wherever a copy of them lies.
OUR_TOP_LEVEL = ("grader", "reference", "convgrade_assignments")
NO_SANDBOX_FLAG = "--no-sandbox"
UNSANDBOXED_WARNING = (
    f"convgrade: warning: notebooks run WITHOUT a sandbox ({NO_SANDBOX_FLAG}): "
    "only for notebooks you trust\n"
)


class SandboxUnavailable(StaffError):
    """Student code cannot be sandboxed here and nobody asked to run it unconfined."""


@dataclass(frozen=True)
class Support:
    """What :func:`detect` found: a sandbox mode, or why there is none (with the fix)."""

    mode: Mode | None
    reason: str = ""


@dataclass(frozen=True)
class HostFacts:
    """The machine facts that explain a failed sandbox (read from /proc; replaceable in tests)."""

    euid: int
    bwrap: str | None
    userns_clone: str | None  # kernel.unprivileged_userns_clone (Debian's switch)
    max_user_namespaces: str | None
    apparmor_restrict: str | None  # kernel.apparmor_restrict_unprivileged_userns (Ubuntu)
    container: str | None  # "docker", "podman", "lxc", "kubernetes" or None

    @classmethod
    def read(cls) -> HostFacts:
        return cls(
            euid=os.geteuid(),
            bwrap=shutil.which("bwrap"),
            userns_clone=_read("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces=_read("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict=_read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            container=_container(),
        )


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _container() -> str | None:
    if Path("/.dockerenv").exists():
        return "docker"
    if Path("/run/.containerenv").exists():
        return "podman"
    env = _read("/proc/1/environ") or ""
    if "container=lxc" in env:
        return "lxc"
    cgroup = _read("/proc/1/cgroup") or ""
    for name in ("kubepods", "docker", "lxc"):
        if name in cgroup:
            return "kubernetes" if name == "kubepods" else name
    return None


def _probe_command(bwrap: str, mode: Mode) -> list[str]:
    cmd = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    if mode == "userns":
        cmd += ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL"]
    return cmd + ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]


@functools.lru_cache(maxsize=1)
def detect() -> Support:
    """Find the sandbox this process can start, by starting a tiny one (about 10 ms).

    Root tries the root sandbox first, then user namespaces: root in a container usually
    lacks CAP_SYS_ADMIN, and some containers still allow user namespaces.
    """
    facts = HostFacts.read()
    if facts.bwrap is None:
        return Support(None, explain(facts, ""))
    modes: tuple[Mode, ...] = ("root", "userns") if facts.euid == 0 else ("userns",)
    said = ""
    for mode in modes:
        try:
            proc = subprocess.run(
                _probe_command(facts.bwrap, mode),
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            said = str(exc)
            continue
        if proc.returncode == 0:
            return Support(mode)
        said = proc.stderr.decode(errors="replace").strip()
    return Support(None, explain(facts, said))


def explain(facts: HostFacts, bwrap_said: str) -> str:
    """Why bubblewrap cannot sandbox student code here, and what fixes it."""
    said = f" (bubblewrap said: {bwrap_said[-300:]})" if bwrap_said else ""
    if facts.bwrap is None:
        return (
            "bubblewrap (bwrap) is not installed, so student code cannot be sandboxed. "
            "Install it once: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
            "`sudo dnf install bubblewrap` (Fedora)."
        )
    if facts.euid != 0:
        if facts.userns_clone == "0":
            return (
                "unprivileged user namespaces are switched off "
                "(kernel.unprivileged_userns_clone=0), and bubblewrap needs one when not run "
                "as root. Fix: `sudo sysctl -w kernel.unprivileged_userns_clone=1` (add it to "
                "/etc/sysctl.d/ to keep it), or grade as root." + said
            )
        if facts.max_user_namespaces == "0":
            return (
                "user namespaces are switched off (user.max_user_namespaces=0), and bubblewrap "
                "needs one when not run as root. Fix: `sudo sysctl -w "
                "user.max_user_namespaces=15000`, or grade as root." + said
            )
        if facts.apparmor_restrict == "1":
            return (
                "AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns=1, the default since Ubuntu "
                "24.04), so bubblewrap cannot make one. Fix: install an AppArmor profile that "
                "allows `userns` for /usr/bin/bwrap (Ubuntu's `bwrap-userns-restrict` profile), "
                "or `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or grade "
                "as root." + said
            )
    if "max_" in bwrap_said and "namespaces" in bwrap_said or "ENOSPC" in bwrap_said:
        return (
            "no more user namespaces may be made here: user.max_user_namespaces is used up, "
            "or convgrade itself runs inside a sandbox that forbids nesting one. Fix: run "
            "convgrade outside that sandbox, or raise the limit (`sudo sysctl -w "
            "user.max_user_namespaces=15000`)." + said
        )
    if facts.container:
        return (
            f"this is an unprivileged {facts.container} container, which forbids the "
            "namespaces bubblewrap needs. Fix: grade on the host, or start the container with "
            "user namespaces allowed (for Docker: `--security-opt seccomp=unconfined "
            "--security-opt apparmor=unconfined`, or `--privileged`)." + said
        )
    return (
        "bubblewrap could not start a sandbox here. Check that user namespaces are enabled "
        "(`unshare --user true` must work), or grade as root." + said
    )


def refusal(reason: str) -> SandboxUnavailable:
    """The staff error for a machine that cannot sandbox: what, why, and the ways out."""
    return SandboxUnavailable(
        "refusing to run student notebooks without a sandbox: "
        + reason
        + f" Only for notebooks you trust (your own solution, say), {NO_SANDBOX_FLAG} runs "
        "them unconfined, with your rights."
    )


# -- the view of the filesystem -----------------------------------------------------------


def python_dirs() -> list[Path]:
    """The directories of the Python installation that the zygote needs, outermost only."""
    dirs = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            dirs.add(Path(value))
    for p in site.getsitepackages():
        dirs.add(Path(p))
    dirs.update(Path(p) for p in user_site_dirs())
    dirs.add(Path(sys.executable).resolve().parent)
    resolved = sorted({d.resolve() for d in dirs if d.exists()}, key=lambda p: len(p.parts))
    keep: list[Path] = []
    for d in resolved:
        if any(d == k or k in d.parents for k in keep + [Path(s) for s in SYSTEM_DIRS]):
            continue
        keep.append(d)
    return keep


def user_site_dirs() -> list[str]:
    """``pip install --user`` packages this grader uses (``python -I`` would not see them)."""
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and user_site in sys.path and os.path.isdir(user_site):
        return [user_site]
    return []


def our_copies() -> list[Path]:
    """Every copy of convgrade's own packages that Python could find, in any layout.

    Covers the package this code runs from, every ``sys.path`` entry that holds one of our
    top-level names (a Gradescope image has one on PYTHONPATH and one in the system
    site-packages), and every file the installed distribution recorded (a wheel's
    ``.dist-info``, an editable install's finder).
    """
    found: set[Path] = {Path(__file__).resolve().parents[1]}
    entries = [Path(p) for p in sys.path if p] + [Path(p) for p in site.getsitepackages()]
    entries += [Path(p) for p in user_site_dirs()]
    for entry in entries:
        for name in OUR_TOP_LEVEL:
            for candidate in (entry / name, entry / f"{name}.py"):
                if candidate.exists():
                    found.add(candidate.resolve())
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower() != "convgrade":
            continue
        for file in dist.files or ():
            if not file.parts or file.parts[0] in ("..", "."):
                continue  # scripts in bin/: not importable, and outside site-packages
            # A folder of ours (grader/, the .dist-info) goes whole; a loose file (the
            # editable finder, its .pyc in the shared __pycache__) goes alone.
            whole = len(file.parts) > 1 and file.parts[0] != "__pycache__"
            # locate_file is typed as returning a protocol, not a path: go through str.
            located = Path(str(dist.locate_file(file.parts[0] if whole else file)))
            if located.exists():
                found.add(located.resolve())
    return sorted(found)


def hidden_paths(extra: tuple[Path, ...]) -> list[Path]:
    """Paths that must not be visible even where they sit inside a bound directory."""
    return our_copies() + [Path(p).resolve() for p in extra]


def zygote_env() -> dict[str, str]:
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
        # Set and dict orders of strings then follow the code alone: re-grades agree.
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        # oneDNN's kernels cost more than they save on the tiny tensors of a notebook
        # (measured: a chapter notebook's cells take about a third less CPU without them);
        # results differ from a Jupyter run only by float round-off.
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }


def bwrap_command(
    mode: Mode, hidden: tuple[Path, ...] = (), probes: Path | None = None
) -> list[str]:
    """The bubblewrap command line that starts a zygote (without the Python part); the
    assignment's ``probes`` file is the one file of it shown, at :data:`PROBES_MOUNT`."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap")
    cmd = [bwrap, "--die-with-parent", "--new-session"]
    if mode == "userns":
        # Capabilities inside the new user namespace only: enough to make each worker's
        # namespaces and mounts, nothing outside the sandbox. As uid 0 there, bubblewrap
        # makes one user namespace, which then owns the zygote's PID namespace; the zygote
        # needs that to return to it after forking each worker into a new one.
        cmd += ["--unshare-user", "--uid", "0", "--gid", "0"]
    cmd += ["--cap-add", "ALL"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--hostname", "convgrade"]
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    # The private mounts come before the Python installation is bound, so that a Python
    # that lives under one of them (a venv in /tmp) is laid on top, not hidden by it.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    cmd += ["--perms", "0755", "--dir", "/work"]
    bound = python_dirs()
    created: set[Path] = {Path("/tmp"), Path("/work"), Path("/dev"), Path("/proc")}
    for folder in bound:
        for parent in reversed(folder.parents):
            if parent == Path("/") or parent in created or str(parent) in SYSTEM_DIRS:
                continue
            # bubblewrap would create missing parents with mode 0700 (e.g. /root), which
            # locks out the unprivileged worker; state the mode explicitly.
            cmd += ["--perms", "0755", "--dir", str(parent)]
            created.add(parent)
        cmd += ["--ro-bind", str(folder), str(folder)]
    for h in hidden_paths(hidden):
        if any(h == b or b in h.parents for b in bound + [Path(s) for s in SYSTEM_DIRS]):
            if h.is_dir():
                cmd += ["--tmpfs", str(h)]
                if h.name in OUR_TOP_LEVEL:  # not even an empty namespace package
                    cmd += ["--ro-bind", str(WORKER_PKG / "_absent.py"), str(h / "__init__.py")]
            elif h.exists():  # a file (e.g. a zip of submissions): show an empty one
                cmd += ["--ro-bind", "/dev/null", str(h)]
    cmd += ["--perms", "0755", "--dir", MOUNT_ROOT]
    cmd += ["--ro-bind", str(WORKER_PKG), f"{MOUNT_ROOT}/cgworker"]
    if probes is not None:
        cmd += ["--ro-bind", str(Path(probes).resolve()), PROBES_MOUNT]
    cmd += ["--chdir", "/work", "--clearenv"]
    for key, value in zygote_env().items():
        cmd += ["--setenv", key, value]
    return cmd


def kept_under_private_mounts(private: tuple[str, ...]) -> list[str]:
    """Bound Python directories that lie under a worker's private mounts (a venv in /tmp):
    the worker lays them back on top of its fresh tmpfs."""
    out = []
    for d in python_dirs():
        if any(Path(p) in d.parents for p in private):
            out.append(str(d))
    return out
