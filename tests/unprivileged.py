"""Running a command as an ordinary user, from a test suite that runs as root (as CI does).

The user is created once (``useradd``). Its command runs with ``setpriv`` (no capabilities,
no supplementary groups, a clean environment) inside a private mount namespace in which this
Python installation is reachable: on a machine where Python lives under a folder that other
users cannot enter (``/root/.pyenv``), that folder is replaced, in that namespace only, by an
empty one that holds just the Python installation. Nothing outside the namespace changes.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

USER = "convgrade-ci"


def available() -> str | None:
    """Why the unprivileged tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create the ordinary user (the suite then runs as one already)"
    for tool in ("useradd", "setpriv", "unshare", "bwrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost folder above ``path`` that other users cannot enter, if any."""
    for parent in reversed(path.parents):
        if parent == Path("/"):
            continue
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def command(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """The command line that runs ``argv`` as the ordinary user, in ``cwd``."""
    user = ensure_user()
    prefix = Path(sys.base_prefix).resolve()
    closed = _closed_ancestor(prefix)
    lines = ["set -e"]
    if closed is not None:
        hold = "/run/convgrade-python"
        lines += [
            f"mkdir -p {hold}",
            f"mount --rbind {shlex.quote(str(prefix))} {hold}",
            f"mount -t tmpfs -o mode=0755 none {shlex.quote(str(closed))}",
            f"mkdir -p {shlex.quote(str(prefix))}",
            f"mount --move {hold} {shlex.quote(str(prefix))}",
        ]
    base_env = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    base_env.update(env or {})
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in base_env.items())
    lines.append(
        f"cd {shlex.quote(str(cwd))} && exec setpriv --reuid={user.pw_uid} "
        f"--regid={user.pw_gid} --clear-groups "
        f"env -i {exports} " + " ".join(shlex.quote(a) for a in argv)
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(argv, cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def give(path: Path) -> None:
    """Hand a folder the test made over to the ordinary user."""
    user = ensure_user()
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(path)], check=True)
