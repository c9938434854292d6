"""``convgrade grade --cluster ADDRESS``: the client side of grading on a Dask cluster.

The client collects the submissions and checks as local grading does, reuses unchanged
results (the same fingerprints), sends each remaining notebook as one Dask task, and writes
every file itself, atomically, with the same writers as local grading: ``grades.csv`` is the
same as a local run's. The Dask workers' side is :mod:`grader.cluster.dask_worker`.

Faults: a task on a Dask worker that died is run again elsewhere (the scheduler's
``allowed-failures``; ``retries`` covers a task that raised); a submission that kills workers
every time ends as ``grader_error`` with the reason for staff; the first result for a
submission is the one written, so none is written twice. A lost scheduler stops the command
with exit code 1: what was graded is on disk, and a re-run reuses it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.authoring.assignment import Assignment
from grader.cluster.packing import make_task, pack_assignment, worker_resources
from grader.engine.submissions import Submission
from grader.errors import ConvgradeError, StaffError
from grader.outputs import writers
from grader.outputs.results import SubmissionResult

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from grader.engine.batch import Progress
    from grader.engine.grading import GradeOptions
    from grader.engine.pytest_plugin import CheckInfo
    from grader.sandbox.launcher import SandboxPolicy

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 30


class SchedulerLost(ConvgradeError):
    """The Dask scheduler went away mid-batch (exit code 1; a re-run reuses the results)."""

    exit_code = 1


def scheduler_address(flag: str | None) -> str | None:
    """``--cluster``, else ``$DASK_SCHEDULER_ADDRESS``, else None (grade locally)."""
    return flag or os.environ.get(ADDRESS_ENV) or None


def grade_on_cluster(
    address: str,
    subs: list[Submission],
    assignment: Assignment,
    checks: list[CheckInfo],
    options: GradeOptions,
    out: Path,
    memory_mib: int,
    sandbox: SandboxPolicy,
    reuse: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    on_isolation: Callable[[str], None] | None = None,
) -> list[SubmissionResult]:
    """Grade ``subs`` on the Dask scheduler at ``address``; write results into ``out``.

    Raises:
        StaffError: no scheduler at ``address``, or the workers could not set up grading.
        SchedulerLost: the scheduler went away mid-batch.
    """
    from grader.cluster.dask_worker import GradingWorkerPlugin
    from grader.engine.batch import _fp

    fps = {s.id: _fp(s, assignment, options) for s in subs}
    batch = _ClusterBatch(subs, assignment, checks, out, fps, on_progress, on_isolation)
    todo = [sub for sub in subs if not (reuse and batch.reused(sub))]
    if todo:
        resources = worker_resources(assignment)
        client = _connect(address)
        name = f"convgrade-{assignment.name}-{uuid.uuid4().hex[:12]}"
        try:
            plugin = GradingWorkerPlugin(
                name,
                assignment.root.name,
                pack_assignment(assignment),
                checks,
                options,
                memory_mib,
                sandbox,
            )
            _register(client, plugin, name, address, resources)
            by_key = _submit(client, name, todo, options.max_notebook_mib, resources)
            _gather(client, by_key, batch, address)
        finally:
            _close(client, name)
    ordered = [batch.results[s.id] for s in subs]
    writers.write_summary(out, ordered, assignment.question_ids())
    return ordered


class _ClusterBatch:
    """The client's record of a batch: results as they come, each written at once."""

    def __init__(
        self,
        subs: list[Submission],
        assignment: Assignment,
        checks: list[CheckInfo],
        out: Path,
        fps: dict[str, str],
        on_progress: Callable[[Progress], None] | None,
        on_isolation: Callable[[str], None] | None,
    ) -> None:
        self.subs, self.assignment, self.checks, self.out = subs, assignment, checks, out
        self.fps = fps
        self.on_progress, self.on_isolation = on_progress, on_isolation
        self.results: dict[str, SubmissionResult] = {}
        self.isolation = ""  # what the workers' sandbox enforces, from the first result

    def reused(self, sub: Submission) -> bool:
        """Whether ``sub``'s earlier result stands (its missing files rendered again)."""
        previous = writers.reusable(self.out, sub.id, self.fps[sub.id], self.assignment.title)
        if previous is None:
            return False
        self._progress(previous, reused=True)
        return True

    def emit(self, result: SubmissionResult, executed: NotebookNode | None) -> None:
        from grader.engine.batch import _with_fingerprint, _written

        if result.submission in self.results:  # a second answer for the same submission
            return
        result = _with_fingerprint(result, self.fps[result.submission])
        # As local grading: if a file cannot be written, the row says so instead of vanishing.
        result = _written(self.out, result, executed, self.assignment, self.checks)
        self._progress(result, reused=False)

    def note_isolation(self, isolation: str) -> None:
        """What a worker's result says its sandbox enforced; the first one is reported."""
        if not self.isolation:
            self.isolation = isolation
            if self.on_isolation:
                self.on_isolation(isolation)

    def failed(self, sub: Submission, why: str) -> None:
        from grader.engine.grading import grader_error

        self.emit(grader_error(sub, self.assignment, self.checks, self.isolation, why), None)

    def _progress(self, result: SubmissionResult, reused: bool) -> None:
        from grader.engine.batch import Progress

        self.results[result.submission] = result
        if self.on_progress:
            self.on_progress(Progress(len(self.results), len(self.subs), result, reused))


def _submit(
    client: Any, name: str, todo: list[Submission], max_mib: int, resources: dict
) -> dict[str, tuple[Any, Submission]]:
    """One Dask task per submission; the futures by key."""
    from grader.cluster.dask_worker import grade_task

    by_key = {}
    for sub in todo:
        future = client.submit(
            grade_task,
            name,
            make_task(sub, max_mib),
            key=f"{name}-{sub.id}",
            pure=False,
            retries=1,
            resources=resources or None,
        )
        by_key[future.key] = (future, sub)
    return by_key


def _gather(
    client: Any, by_key: dict[str, tuple[Any, Submission]], batch: _ClusterBatch, address: str
) -> None:
    """Each task's result into ``batch`` as it completes; a failed task is its row's reason."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    for future in as_completed([f for f, _ in by_key.values()], loop=client.loop):
        sub = by_key.pop(future.key)[1]
        try:
            data, executed_json = future.result()
            future.release()  # its result leaves the cluster's memory
        except KilledWorker as exc:
            batch.failed(sub, _killed_reason(exc))
            continue
        except Exception as exc:
            if future.cancelled() or client.status != "running":
                lost = _lost_message(address, len(batch.results), len(batch.subs))
                raise SchedulerLost(lost) from None
            batch.failed(sub, f"the Dask task failed: {type(exc).__name__}: {exc}")
            continue
        try:
            result = SubmissionResult.from_dict(data)
            executed = _notebook(executed_json)
            if result.submission != sub.id:
                raise ValueError(f"a result for {result.submission!r}")
        except Exception as exc:  # our own worker code, so a bug: say so, go on
            batch.failed(sub, f"the Dask worker sent back a malformed result: {exc!r}"[:2000])
            continue
        batch.note_isolation(result.execution.isolation)
        batch.emit(result, executed)


def _notebook(text: str | None):
    if text is None:
        return None
    import nbformat

    return nbformat.reads(text, as_version=nbformat.NO_CONVERT)


def _killed_reason(exc: Exception) -> str:
    return (
        "grading this submission killed a Dask worker every time it was tried (the scheduler's "
        "distributed.scheduler.allowed-failures); look at the Dask workers' logs for why "
        f"(memory, a crash). Dask said: {exc}"
    )


def _lost_message(address: str, done: int, total: int) -> str:
    return (
        f"lost the Dask scheduler at {address} after {done} of {total} submissions; their "
        "results are written. Start the scheduler again and re-run the same command: "
        "unchanged results are reused."
    )


def _connect(address: str):
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise StaffError(
            f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s ({exc}). "
            "Start one (`dask scheduler`), or check --cluster / $DASK_SCHEDULER_ADDRESS."
        ) from None


def _register(client, plugin, name: str, address: str, resources: dict[str, float]) -> None:
    """Install the grading plugin on every Dask worker, once one that fits is there.

    Tasks would wait forever for a worker that never comes: after CONNECT_TIMEOUT_S without
    one that has ``resources``, say so instead.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not client.run_on_scheduler(_count_fitting, need=resources):
        if time.monotonic() > deadline:
            flag = " --resources " + ",".join(f"{k}={v:g}" for k, v in resources.items())
            what = f"no worker with {resources}" if resources else "no workers"
            raise StaffError(
                f"the Dask scheduler at {address} has {what}; start one with "
                f"`dask worker {address} --nthreads 1{flag if resources else ''}`."
            )
        time.sleep(0.5)
    try:
        client.register_plugin(plugin, name=name)
    except Exception as exc:
        raise StaffError(
            f"the Dask workers could not set up grading: {type(exc).__name__}: {exc}"
        ) from None


def _count_fitting(dask_scheduler, need: dict[str, float]) -> int:
    """Runs on the scheduler: how many workers have at least ``need`` of every resource."""
    return sum(
        all(ws.resources.get(k, 0) >= v for k, v in need.items())
        for ws in dask_scheduler.workers.values()
    )


def _close(client, name: str) -> None:
    try:
        if client.status == "running":
            client.unregister_worker_plugin(name)
    except Exception:  # the scheduler is gone: nothing left to unregister
        pass
    client.close(timeout=5)
