"""The zygote: imports the heavy libraries once, then forks one worker per request.

It runs inside the bubblewrap sandbox but never runs student code itself, so its memory
(copy-on-write shared with every worker) holds libraries only: no checks, no reference code,
no state of a previous submission. Requests arrive on a SOCK_SEQPACKET control socket as a
small JSON document plus the file descriptor of the new worker's channel. For each request
the zygote makes the PID namespace for its next child a new one, forks the worker (PID 1 of
that namespace, which then unshares its own mount, network and IPC namespaces), and points
its next children back at its own PID namespace. One fork per worker, not two: forking a
process that holds TensorFlow costs about 20 ms of CPU (page tables), measured.

The zygote sends the grader a pidfd for the worker (through the worker's channel), so the
grader can interrupt or kill it from outside without knowing PIDs across namespaces; the
worker waits for that before it starts. The zygote reaps its dead workers.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from types import ModuleType


def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library only slows students down
            sys.stderr.write(f"convgrade zygote: could not preload {name}: {exc}\n")


def _worker_main(fd: int, req: dict, notes: list[str], namespaced: bool, go: int) -> None:
    from . import protocol, sandbox
    from .serve import Server

    os.read(go, 1)
    os.close(go)
    _quiet_standard_streams()
    notes = notes + sandbox.setup_worker(
        req.get("limits", {}),
        req.get("uid"),
        namespaced,
        keep=tuple(req.get("keep", ())),
        own_userns=bool(req.get("userns")) and namespaced,
    )
    sandbox.scrub_environment(req.get("env", {}))
    threads = req.get("tf_threads")
    if threads and "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except Exception:
            pass
    chan = protocol.Channel(socket.socket(fileno=fd))
    chan.send({"ok": True, "hello": True, "notes": notes})
    Server(chan).serve()


def _quiet_standard_streams() -> None:
    """The worker's fds 0-2 lead nowhere: what student code writes there natively (not
    through Python's captured streams) must not reach the zygote's stderr pipe, which the
    grader reads."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _spawn(req: dict, fd: int, controls: list[socket.socket]) -> int:
    from . import sandbox

    wanted = req.get("namespaces", True)
    notes = sandbox.new_pid_namespace_for_children() if wanted else []
    go_r, go_w = os.pipe()
    zygote_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for end in (go_r, go_w, fd):
            os.close(end)
        raise
    finally:  # in the zygote only: the new worker stays in its new namespace
        if wanted and not notes and os.getpid() == zygote_pid:
            _back_to_own_pid_namespace()
    if pid == 0:
        try:
            os.close(go_w)
            for ctl in controls:
                ctl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sandbox.set_parent_death_signal()
            if wanted and not notes:
                notes = sandbox.enter_namespaces()
            _worker_main(fd, req, notes, wanted and not notes, go_r)
        except BaseException:
            os._exit(71)
        os._exit(0)
    os.close(go_r)
    try:
        chan = socket.socket(fileno=fd)
        pidfd = os.pidfd_open(pid)
        socket.send_fds(chan, [b"P"], [pidfd])
        os.close(pidfd)
        chan.detach()
        os.write(go_w, b"g")
    except OSError:  # e.g. the grader gave up on this worker: nobody could reach it
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(fd)
        os.close(go_w)
    return pid


def _back_to_own_pid_namespace() -> None:
    from . import sandbox

    try:
        sandbox.own_pid_namespace_for_children()
    except OSError as exc:
        # Every later worker would share this namespace: stop rather than isolate less.
        sys.stderr.write(f"convgrade zygote: cannot restore its PID namespace: {exc}\n")
        sys.stderr.flush()
        os._exit(70)


def main(argv: list[str] | None = None) -> None:
    cfg = json.loads((argv or sys.argv)[1])
    for site_dir in cfg.get("site_dirs", []):
        import site

        site.addsitedir(site_dir)
    # One control socket per trusted grading process, so several can ask for workers.
    controls = [socket.socket(fileno=int(fd)) for fd in cfg["control_fds"]]
    # No automatic collections while the libraries import: importing TensorFlow, IPython and
    # matplotlib makes some 350,000 long-lived objects, and the full collections that
    # triggered took 0.6 to 0.7 s of the 3.1 to 3.3 s (measured), to find some 4,000.
    gc.disable()
    _preload(cfg.get("preload", []))
    # Freeze the libraries' objects before the warm-up: Keras's clear_session and
    # TensorFlow's context reset each run gc.collect(), which then scans only what the
    # warm-up made (measured: the warm-up took 0.26 + 0.18 s with both collections walking
    # the whole heap, 0.09 s after a freeze). The import left a few thousand objects of
    # garbage (measured: 4,314 of 367,000); they stay, frozen, shared by every worker.
    gc.freeze()
    probes = _load_probes(cfg.get("probes"))
    if cfg.get("warm_tensorflow"):
        _warm(cfg, probes)
    if "IPython.core.interactiveshell" in sys.modules:
        try:
            from .executor import prepare_runner

            prepare_runner()
        except Exception as exc:  # each worker then builds its own shell
            sys.stderr.write(f"convgrade zygote: could not prepare the shell: {exc}\n")
    # Move what was made since (the warm-up's objects, the shell) out of the collector's
    # reach too: a worker's garbage collections then scan only its own objects, instead of
    # walking (and so copying, page by page) the copy-on-write heap it shares.
    gc.freeze()
    gc.enable()  # workers collect their own garbage as any Python process does
    signal.signal(signal.SIGCHLD, _reap)
    for ctl in controls:
        ctl.send(json.dumps({"ok": True, "ready": True}).encode())
    while controls:
        ready, _, _ = select.select(controls, [], [])
        for ctl in ready:
            if not _serve_one(ctl, controls):
                controls.remove(ctl)
                ctl.close()
    os._exit(0)


def _load_probes(path: str | None) -> ModuleType | None:
    """The assignment's probes module, served by every worker this zygote forks."""
    if not path:
        return None  # workers serve no probes
    from . import probes, serve

    try:
        module = probes.load(path)
    except probes.ProbesUnusable as exc:  # no worker could answer the checks' probes
        sys.stderr.write(f"convgrade zygote: {exc}\n")
        sys.stderr.flush()
        os._exit(70)
    serve.install_probes(module)
    return module


def _warm(cfg: dict, probes: ModuleType | None = None) -> None:
    from . import warmup

    if not warmup.available():
        return
    try:
        warmup.warm_tensorflow(getattr(probes, warmup.ASSIGNMENT_WARM_UP, None))
    except warmup.WarmupFailed as exc:
        # Ops ran here but the context could not be replaced: forked workers would hang.
        # Start this zygote again, as the same process, without the warm-up.
        sys.stderr.write(f"convgrade zygote: {exc}; restarting without the warm-up\n")
        sys.stderr.flush()
        argv = list(sys.orig_argv)
        argv[-1] = json.dumps({**cfg, "warm_tensorflow": False})
        os.execv(sys.executable, argv)


def _serve_one(ctl: socket.socket, controls: list[socket.socket]) -> bool:
    """Answer one request; False when this control socket is closed."""
    try:
        msg, fds, _, _ = socket.recv_fds(ctl, 65536, 1)
    except OSError:
        return False
    if not msg:
        return False
    try:
        req = json.loads(msg)
    except ValueError:
        req = {}
    if req.get("op") != "spawn" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        ctl.send(json.dumps({"ok": False, "message": "bad request"}).encode())
        return True
    try:
        pid = _spawn(req, fds[0], controls)
    except OSError as exc:  # this worker could not be started; the zygote carries on
        ctl.send(json.dumps({"ok": False, "message": f"could not start a worker: {exc}"}).encode())
        return True
    ctl.send(json.dumps({"ok": True, "pid": pid}).encode())
    return True
