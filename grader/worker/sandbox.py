"""Per-submission isolation, applied inside a freshly forked worker before student code runs.

The zygote (see :mod:`.zygote`) already lives in a bubblewrap sandbox: a read-only view of
the interpreter and system libraries only, no network, its own PID namespace. Each worker
forked from it additionally gets, when the zygote holds the privileges to do so:

- its own mount, PID, network and IPC namespaces (siblings cannot see or reach each other;
  killing the worker's PID 1 kills every process it started);
- a private, size-capped tmpfs as working directory and ``/tmp``;
- resource limits (address space, processes, file size, open files, no core dumps);
- an unprivileged uid of its own (as root) or a user namespace of its own (as an ordinary
  user: what gives it its own process count there), no capabilities and ``no_new_privs``.

What could not be applied is returned as a list of notes, so reports can say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
MS_BIND = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


_own_pid_namespace: int | None = None


def new_pid_namespace_for_children() -> list[str]:
    """In the zygote: the next child it forks is PID 1 of a new PID namespace."""
    global _own_pid_namespace
    try:
        if _own_pid_namespace is None:
            _own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        unshare(CLONE_NEWPID)
    except OSError as exc:
        return [f"no per-worker namespaces ({exc.strerror})"]
    return []


def own_pid_namespace_for_children() -> None:
    """In the zygote, after the fork: later children start in its own PID namespace again
    (a second ``unshare(CLONE_NEWPID)`` is refused while the first one is in effect)."""
    if _own_pid_namespace is None:  # new_pid_namespace_for_children did not open it
        raise OSError(errno.EBADF, "the zygote's PID namespace was never saved")
    _check(_libc.setns(ctypes.c_int(_own_pid_namespace), ctypes.c_int(CLONE_NEWPID)), "setns")


def enter_namespaces() -> list[str]:
    """In the new worker (already PID 1 of its PID namespace): its own mount, network and
    IPC namespaces."""
    notes = []
    try:
        unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC)
    except OSError as exc:
        notes.append(f"no per-worker namespaces ({exc.strerror})")
    return notes


def setup_worker(
    limits: dict,
    uid: int | None,
    namespaced: bool,
    keep: tuple[str, ...] = (),
    own_userns: bool = False,
) -> list[str]:
    """In the worker itself (PID 1 of its namespace when ``namespaced``).

    Args:
        limits: the spawn request's limits, every key present (the trusted side resolves
            them and their defaults: grader/sandbox/limits.py).
        keep: bound directories (the Python installation) that lie under one of the private
            mounts and must stay visible on top of it.
        own_userns: give the worker a user namespace of its own and drop every capability
            (the sandbox of an ordinary user, where no uid of its own can be had).
    """
    notes = []
    workdir = limits.get("workdir", "/work")
    if namespaced:
        # Under a user namespace of its own the worker's uid is mapped onto the zygote's, so
        # its private mounts belong to the zygote's uid; as root they belong to ``uid``.
        notes += _private_mounts(workdir, limits, None if own_userns else uid, keep)
    os.chdir(workdir if os.path.isdir(workdir) else "/tmp")
    notes += _resource_limits(limits)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    if own_userns:
        notes += _own_user_namespace(uid if uid is not None else 60000)
    elif uid is not None:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            notes.append(f"could not switch to an unprivileged user ({exc.strerror})")
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    set_parent_death_signal()
    return notes


def _private_mounts(workdir: str, limits: dict, uid: int | None, keep: tuple[str, ...]) -> list:
    try:
        mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        size = int(limits["disk_mib"])
        owner = f",uid={uid},gid={uid}" if uid is not None else ""
        opts = f"size={size}m,nr_inodes=10000,mode=0700{owner}"
        # /dev/shm too: private, so shared memory is usable and leaks nothing onward.
        for path in (workdir, "/tmp", "/dev/shm"):
            if path == "/dev/shm" and not os.path.isdir(path):
                continue
            os.makedirs(path, exist_ok=True)
            under = [k for k in keep if k.startswith(path.rstrip("/") + "/")]
            # Held open across the new mount: the only way back to what it covers.
            held = [(k, os.open(k, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for k in under]
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)
            for target, fd in held:
                os.makedirs(target, mode=0o755, exist_ok=True)
                # A recursive bind keeps the read-only flag and the masks laid inside it.
                mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
                os.close(fd)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError as exc:
        return [f"no private work directory ({exc.strerror})"]
    return []


def _resource_limits(limits: dict) -> list[str]:
    notes = []
    mib = 1024 * 1024
    wanted = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: int(limits["max_open_files"]),
        resource.RLIMIT_FSIZE: int(limits["disk_mib"]) * mib,
        resource.RLIMIT_NPROC: int(limits["max_processes"]),
    }
    if limits["memory_mib"]:
        # The preloaded libraries already map this much; the budget is on top of it.
        baseline = _current_address_space()
        wanted[resource.RLIMIT_AS] = baseline + int(limits["memory_mib"]) * mib
    for res, value in wanted.items():
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError) as exc:
            notes.append(f"could not set resource limit {res} ({exc})")
    return notes


def _own_user_namespace(inside: int) -> list[str]:
    """A user namespace of the worker's own, in which it is ``inside`` (not root), then no
    capabilities anywhere.

    Process counts (RLIMIT_NPROC) are kept per user namespace, so this gives each worker
    the budget of its own that root gets from a separate uid. Its capabilities in the new
    namespace are dropped at once, and it may not make further user namespaces.
    """
    notes = []
    uid, gid = os.getuid(), os.getgid()
    try:
        unshare(CLONE_NEWUSER)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{inside} {uid} 1")
        _write("/proc/self/gid_map", f"{inside} {gid} 1")
    except OSError as exc:
        notes.append(f"no user namespace of its own ({exc.strerror}): one process budget")
    else:
        try:
            _write("/proc/sys/user/max_user_namespaces", "0")
        except OSError:
            pass  # an older kernel: any namespace it makes still sees only locked mounts
    try:
        drop_capabilities()
    except OSError as exc:
        notes.append(f"could not drop capabilities ({exc.strerror})")
    return notes


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Empty every capability set of this process: ambient, bounding, and the three others."""
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _current_address_space() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def scrub_environment(keep: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(keep)
