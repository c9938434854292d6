"""The Dask worker's side of ``convgrade grade --cluster``: a worker plugin and the task.

:class:`GradingWorkerPlugin` travels to every Dask worker with the assignment packed inside
(checks, hidden ones included: cluster machines are staff machines). Its ``setup`` unpacks
the assignment into a private temporary folder and starts one warm zygote for that Dask
worker: a :class:`~grader.sandbox.launcher.Launcher` whose zygote is its own sandboxed subprocess
(not a fork of the daemonic Dask worker), with the unpacked assignment among its hidden
paths. :func:`grade_task` grades one submission with the same engine as local grading
(:func:`~grader.engine.grading.prepare`, then :func:`~grader.engine.grading.finish` through
one long-lived :class:`~grader.engine.pytest_plugin.BatchPlugin` pytest session) and returns
plain data only: the result record as a dict and the executed notebook as a JSON string.

pytest is not thread-safe, so every check of a Dask worker runs in one "checker" thread;
Dask's task threads only run notebooks (in the sandbox) and wait for their checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distributed import Worker, WorkerPlugin, get_worker

from grader import __version__
from grader.errors import SubmissionProblem

if TYPE_CHECKING:
    from grader.engine.grading import GradeOptions
    from grader.engine.pytest_plugin import CheckInfo
    from grader.sandbox.launcher import SandboxPolicy

# A pytest session redirects this process's stdout/stderr while it lives: it ends after this
# many idle seconds or submissions, so a long-lived Dask worker's logs come back and the
# captured output stays bounded. The next submission starts a new one (about a second).
SESSION_IDLE_S = 30.0
SESSION_MAX_SUBMISSIONS = 500
# Sandboxed workers alive at once per Dask worker get slots (unprivileged uids) from a block of
# this size; Dask workers on one machine claim different blocks (see _claim_slot_block).
SLOTS_PER_BLOCK = 16
FIRST_BLOCK_SLOT = 1000  # above local grading's slots (4 per --jobs process)
MAX_BLOCKS = 64


@dataclass(frozen=True)
class Task:
    """One submission as it travels to a Dask worker: plain data only."""

    submission: str
    origin: str
    filename: str
    notebook: bytes | None  # None: the client found a problem, and nothing is to run
    problem: tuple[str, str] | None  # (status, message) of a SubmissionProblem


class GradingWorkerPlugin(WorkerPlugin):
    """One warm zygote and the assignment's checks on one Dask worker."""

    def __init__(
        self,
        name: str,
        assignment_name: str,
        assignment_tar: bytes,
        checks: list[CheckInfo],
        options: GradeOptions,
        memory_mib: int,
        sandbox: SandboxPolicy,
        version: str = __version__,
    ) -> None:
        self.name = name
        self.assignment_name = assignment_name
        self.assignment_tar = assignment_tar
        self.checks = checks
        self.options = options
        self.memory_mib = memory_mib
        self.sandbox = sandbox
        self.version = version

    # -- lifecycle (called by the Dask worker) ---------------------------------------------
    def setup(self, worker: Worker) -> None:
        if self.version != __version__:
            raise RuntimeError(
                f"this Dask worker has convgrade {__version__}, the client {self.version}; "
                "install the same convgrade version on every cluster machine"
            )
        from grader.authoring.assignment import load
        from grader.sandbox.launcher import Launcher, WorkerLimits

        _remove_orphans()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
        os.chmod(self.tmp, 0o700)
        root = self.tmp / self.assignment_name
        with tarfile.open(fileobj=io.BytesIO(self.assignment_tar)) as tar:
            _extract(tar, root)
        self.assignment_tar = b""  # unpacked: no need to keep the bytes
        self.assignment = load(root)
        self._slot_lock_fd, base = _claim_slot_block()
        self.slots: queue.Queue[int] = queue.Queue()
        for i in range(SLOTS_PER_BLOCK):
            self.slots.put(base + i)
        self.launcher = Launcher(
            warm=True,
            preload=self.assignment.preload,
            limits=WorkerLimits(memory_mib=self.memory_mib),
            hidden=(self.tmp, Path(worker.local_directory)),
            probes=self.assignment.probes,
            sandbox=self.sandbox,
        )
        # The zygote imports its libraries while the first task is on its way.
        self.launcher.start(wait=False)
        self.isolation = self.launcher.isolation.describe()
        self.requests: queue.Queue = queue.Queue()
        self.checker = threading.Thread(target=self._check_loop, daemon=True)
        self.checker.start()

    def teardown(self, worker: Worker) -> None:
        # Also after a setup that failed half-way: undo what it did.
        if hasattr(self, "checker"):
            self.requests.put(None)
            self.checker.join(timeout=30)
        if hasattr(self, "launcher"):
            self.launcher.close()
        if hasattr(self, "_slot_lock_fd"):
            os.close(self._slot_lock_fd)
        if hasattr(self, "tmp"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- grading -----------------------------------------------------------------------------
    def grade(self, task: Task) -> tuple[dict, str | None]:
        """Run one submission's notebook here, its checks in the checker thread."""
        from grader.engine.grading import prepare
        from grader.engine.submissions import Submission

        slot = self.slots.get()
        try:
            with tempfile.TemporaryDirectory(dir=self.tmp) as folder:
                path = None
                if task.notebook is not None:
                    path = Path(folder) / task.filename
                    path.write_bytes(task.notebook)
                problem = SubmissionProblem(*task.problem) if task.problem else None
                sub = Submission(task.submission, task.origin, path, problem)
                prep = prepare(sub, self.launcher, self.options, slot)
                reply: queue.Queue = queue.Queue()
                self.requests.put((prep, reply))
                outcome = reply.get()
        finally:
            self.slots.put(slot)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _finish(self, prep, run_checks) -> tuple[dict, str | None]:
        """Checks, then the plain data to send back, under local grading's guard."""
        import traceback
        from dataclasses import replace

        import nbformat

        from grader.engine.batch import _guarded
        from grader.engine.grading import executed_notebook

        asg, checks, options = self.assignment, self.checks, self.options
        # Files are the client's business (out=None): whatever happens, a result comes back.
        result = _guarded(prep, asg, checks, options, self.isolation, None, run_checks)
        try:
            executed = executed_notebook(prep)
            text = nbformat.writes(executed) if executed is not None else None
        except Exception:  # the score stands without the staff's copy of the run notebook
            text = None
            note = "\nexecuted.ipynb was not written:\n" + traceback.format_exc()
            result = replace(result, staff_details=result.staff_details + note)
        return result.to_dict(), text

    def _check_loop(self) -> None:
        """This plugin's checks: one BatchPlugin pytest session at a time, in this thread."""
        from grader.engine.pytest_plugin import BatchPlugin, check_dirs, run_pytest

        while (first := self.requests.get()) is not None:
            pending = [first]

            def serve(run_items, pending: list = pending) -> None:
                served, idle_since = 0, time.monotonic()
                while pending or served < SESSION_MAX_SUBMISSIONS:
                    if pending:
                        item = pending.pop()
                    else:
                        try:
                            item = self.requests.get(timeout=0.2)
                        except queue.Empty:
                            # Another plugin (a second assignment) waits for pytest, or
                            # nothing came for a while: end this session.
                            if _pytest_waiting() or time.monotonic() - idle_since > SESSION_IDLE_S:
                                return
                            continue
                        if item is None:  # teardown: stop after this session
                            self.requests.put(None)
                            return
                    self._answer(item, run_items)
                    served, idle_since = served + 1, time.monotonic()

            plugin = BatchPlugin(self.assignment, serve)
            with _pytest_turn():
                try:
                    run_pytest(plugin, check_dirs(self.assignment, self.options.include_hidden))
                except BaseException as exc:  # keep the thread: answer what waits with why
                    for item in pending:
                        item[1].put(exc)
                    continue
                # pytest failed before its run loop: grade the waiting one on its own.
                for item in pending:
                    self._answer(item, None)

    def _answer(self, item, run_checks) -> None:
        prep, reply = item
        try:
            reply.put(self._finish(prep, run_checks))
        except BaseException as exc:
            reply.put(exc)


TMP_PREFIX = "convgrade-cluster-"


def _remove_orphans() -> None:
    """Remove the assignment copies of Dask workers that died without their teardown.

    A killed Dask worker (SIGKILL, a lost node that came back) cannot clean up; its folder,
    hidden checks and secret included, is named after its pid and removed here.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = folder.name[len(TMP_PREFIX) :].split("-")[0]
        if not pid.isdigit() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


# pytest is not thread-safe, and one Dask worker may hold plugins of several assignments
# (two courses grading at once): only one pytest session runs per process at a time.
_PYTEST = threading.Lock()
_WAITING = [0]  # checker threads waiting for _PYTEST
_WAITING_LOCK = threading.Lock()


def _pytest_waiting() -> bool:
    with _WAITING_LOCK:
        return _WAITING[0] > 0


@contextlib.contextmanager
def _pytest_turn():
    with _WAITING_LOCK:
        _WAITING[0] += 1
    try:
        _PYTEST.acquire()
    finally:
        with _WAITING_LOCK:
            _WAITING[0] -= 1
    try:
        yield
    finally:
        _PYTEST.release()


def _claim_slot_block() -> tuple[int, int]:
    """A block of slots no other Dask worker on this machine uses (held with a file lock).

    Root gives every live sandboxed worker its own uid from its slot; two Dask workers on one
    machine must not hand out the same uids (they share per-uid process limits).
    """
    folder = Path(tempfile.gettempdir()) / f"convgrade-cluster-slots-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    for block in range(MAX_BLOCKS):
        fd = os.open(folder / f"{block}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return fd, FIRST_BLOCK_SLOT + block * SLOTS_PER_BLOCK
    raise RuntimeError(
        f"more than {MAX_BLOCKS} Dask workers grade on this machine at once; "
        "run fewer Dask workers per machine (one per core is plenty)"
    )


def grade_task(plugin_name: str, task: Task) -> tuple[dict, str | None]:
    """The Dask task: grade ``task`` with this worker's plugin ``plugin_name``.

    Returns:
        The result record (``SubmissionResult.to_dict()``) and the executed notebook as
        nbformat JSON (None when nothing ran).
    """
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, GradingWorkerPlugin) or not hasattr(plugin, "launcher"):
        raise RuntimeError(
            f"Dask worker {worker.address} has no working convgrade plugin {plugin_name!r}: "
            "its setup failed (see this worker's log)"
        )
    return plugin.grade(task)


def _extract(tar: tarfile.TarFile, root: Path) -> None:
    """Unpack the assignment: only plain files and folders, all inside ``root``.

    Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters, so the members are
    checked here and extracted one by one.
    """
    base = Path(root).resolve()
    for member in tar.getmembers():
        target = (base / member.name).resolve()
        if not (member.isfile() or member.isdir()) or base not in (target, *target.parents):
            raise ValueError(f"refused assignment member {member.name!r}")
    for member in tar.getmembers():
        target = base / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        os.chmod(target, member.mode & 0o700 or 0o600)
