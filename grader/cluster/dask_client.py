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

import io
import os
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from grader.authoring.assignment import Assignment
from grader.engine import seeding
from grader.engine.submissions import Submission
from grader.errors import ConvgradeError, StaffError
from grader.outputs import writers
from grader.outputs.results import SubmissionResult

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
MAX_ASSIGNMENT_MIB = 64
CONNECT_TIMEOUT_S = 30
# Folders and files of an assignment that grading does not need: they stay home.
_LEFT_HOME = ("examples", "__pycache__", ".git", ".pytest_cache")


class SchedulerLost(ConvgradeError):
    """The Dask scheduler went away mid-batch (exit code 1; a re-run reuses the results)."""

    exit_code = 1


def scheduler_address(flag: str | None) -> str | None:
    """``--cluster``, else ``$DASK_SCHEDULER_ADDRESS``, else None (grade locally)."""
    return flag or os.environ.get(ADDRESS_ENV) or None


def worker_resources(assignment: Assignment) -> dict[str, float]:
    """``[worker] resources`` of assignment.toml: what a Dask worker must have to grade.

    Raises:
        StaffError: it is not a table of positive numbers.
    """
    from grader.authoring.assignment import tomllib

    path = assignment.root / "assignment.toml"
    worker = tomllib.loads(path.read_text(encoding="utf-8")).get("worker", {})
    raw = worker.get("resources", {}) if isinstance(worker, dict) else {}
    ok = isinstance(raw, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in raw.values()
    )
    if not ok:
        raise StaffError(
            f"[worker] resources in {path} must be a table of positive numbers, for example "
            f"resources = {{GPU = 1}}. Received: {raw!r}"
        )
    return {str(k): float(v) for k, v in raw.items()}


def pack_assignment(assignment: Assignment) -> bytes:
    """The assignment folder as tar bytes (with its secret), without its examples and its
    solution notebook."""
    root = assignment.root

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in _LEFT_HOME for p in parts) or info.name.endswith(".pyc"):
            return None
        if (root / info.name).resolve() == assignment.source.resolve():
            return None
        return info

    # The hidden checks' key (grader/engine/seeding.py) goes with them, wherever it is kept here:
    # a worker that made its own would draw other hidden inputs than local grading.
    secret = (seeding.assignment_secret(root).decode() + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(root.iterdir()):
            if child.name != seeding.SECRET_FILE:
                tar.add(child, arcname=child.name, filter=keep)
        info = tarfile.TarInfo(seeding.SECRET_FILE)
        info.size, info.mode = len(secret), 0o600
        tar.addfile(info, io.BytesIO(secret))
    data = buf.getvalue()
    if len(data) > MAX_ASSIGNMENT_MIB * 2**20:
        raise StaffError(
            f"{root} packs to {len(data) / 2**20:.0f} MiB; at most {MAX_ASSIGNMENT_MIB} MiB "
            "travels to the Dask workers. Move large data out of the assignment folder."
        )
    return data


def _task(sub: Submission, max_mib: int):
    """The plain-data task for ``sub``: its notebook's bytes, or the problem found here."""
    from grader.cluster.dask_worker import Task
    from grader.engine.notebook import load_submission
    from grader.errors import SubmissionProblem

    problem, data = sub.problem, None
    if problem is None and sub.path is not None:
        try:
            if sub.path.stat().st_size <= max_mib * 2**20:
                data = sub.path.read_bytes()
        except OSError:
            pass
        if data is None:  # too large or unreadable: the same problem, in the same words
            try:
                load_submission(sub.path, max_mib)
                data = sub.path.read_bytes()  # it became readable in the meantime
            except SubmissionProblem as exc:
                problem = exc
    as_tuple = (problem.status, problem.message) if problem is not None else None
    filename = sub.path.name if sub.path is not None else f"{sub.id}.ipynb"
    return Task(sub.id, sub.origin, filename, data, as_tuple)


def grade_on_cluster(
    address: str,
    subs: list[Submission],
    assignment: Assignment,
    checks: list,
    options,
    out: Path,
    memory_mib: int,
    sandbox: str,
    reuse: bool = True,
    on_progress: Callable | None = None,
    on_isolation: Callable[[str], None] | None = None,
) -> list[SubmissionResult]:
    """Grade ``subs`` on the Dask scheduler at ``address``; write results into ``out``.

    Raises:
        StaffError: no scheduler at ``address``, or the workers could not set up grading.
        SchedulerLost: the scheduler went away mid-batch.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from grader.cluster.dask_worker import GradingWorkerPlugin, grade_task
    from grader.engine.batch import Progress, _fp, _with_fingerprint, _written
    from grader.engine.grading import grader_error

    results: dict[str, SubmissionResult] = {}
    todo: list[Submission] = []
    fps = {s.id: _fp(s, assignment, options) for s in subs}
    for sub in subs:
        previous = writers.load_result(out, sub.id) if reuse else None
        if previous and previous.fingerprint == fps[sub.id]:
            results[sub.id] = previous
            if on_progress:
                on_progress(Progress(len(results), len(subs), previous, True))
        else:
            todo.append(sub)

    def emit(result: SubmissionResult, executed) -> None:
        if result.submission in results:  # a second answer for the same submission
            return
        result = _with_fingerprint(result, fps[result.submission])
        # As local grading: if a file cannot be written, the row says so instead of vanishing.
        result = _written(out, result, executed, assignment, checks)
        results[result.submission] = result
        if on_progress:
            on_progress(Progress(len(results), len(subs), result, False))

    isolation = ""

    def failed(sub: Submission, why: str) -> SubmissionResult:
        return grader_error(sub, assignment, checks, isolation, why)

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
            by_key = {}
            for sub in todo:
                future = client.submit(
                    grade_task,
                    name,
                    _task(sub, options.max_notebook_mib),
                    key=f"{name}-{sub.id}",
                    pure=False,
                    retries=1,
                    resources=resources or None,
                )
                by_key[future.key] = (future, sub)
            for future in as_completed([f for f, _ in by_key.values()], loop=client.loop):
                sub = by_key.pop(future.key)[1]
                try:
                    data, executed_json = future.result()
                    future.release()  # its result leaves the cluster's memory
                except KilledWorker as exc:
                    emit(failed(sub, _killed_reason(exc)), None)
                    continue
                except Exception as exc:
                    if future.cancelled() or client.status != "running":
                        lost = _lost_message(address, len(results), len(subs))
                        raise SchedulerLost(lost) from None
                    emit(failed(sub, f"the Dask task failed: {type(exc).__name__}: {exc}"), None)
                    continue
                try:
                    result = SubmissionResult.from_dict(data)
                    executed = _notebook(executed_json)
                    if result.submission != sub.id:
                        raise ValueError(f"a result for {result.submission!r}")
                except Exception as exc:  # our own worker code, so a bug: say so, go on
                    why = f"the Dask worker sent back a malformed result: {exc!r}"[:2000]
                    emit(failed(sub, why), None)
                    continue
                if not isolation:
                    isolation = result.execution.isolation
                    if on_isolation:
                        on_isolation(isolation)
                emit(result, executed)
        finally:
            _close(client, name)
    ordered = [results[s.id] for s in subs]
    writers.write_summary(out, ordered, assignment.question_ids())
    return ordered


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


def run_grade_command(args, address: str, out_stream, err_stream) -> int:
    """``convgrade grade --cluster``: the same inputs, output and exit codes as local."""
    import tempfile

    from grader.authoring import assignment as assignment_mod
    from grader.commands import options as options_mod
    from grader.commands.cli import Reporter, _summary
    from grader.engine.grading import GradeOptions
    from grader.engine.pytest_plugin import collect_checks
    from grader.engine.submissions import collect_to_grade
    from grader.sandbox.bubblewrap import UNSANDBOXED_WARNING

    started = time.monotonic()
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise StaffError(
            f"--cluster {address} needs Dask distributed, which is not installed: "
            "pip install 'convgrade[cluster]' (or dask[distributed]), on this machine and on "
            "every cluster machine."
        ) from None
    asg = assignment_mod.load(args.assignment)
    timeouts, memory = options_mod.grading_limits(asg.limits, **vars(args))
    out = Path(args.out)

    def warn(isolation: str) -> None:
        if not isolation.startswith("sandboxed"):
            err_stream.write(UNSANDBOXED_WARNING)

    with tempfile.TemporaryDirectory(prefix="convgrade-") as tmp:
        subs = collect_to_grade(args.paths, Path(tmp))
        checks = collect_checks(asg)
        results = grade_on_cluster(
            address,
            subs,
            asg,
            checks,
            GradeOptions(timeouts=timeouts, packages=asg.packages),  # as cli.cmd_grade
            out,
            memory,
            "off" if args.no_sandbox else "require",
            reuse=not args.force,
            on_progress=Reporter(err_stream, args.quiet),
            on_isolation=warn,
        )
    out_stream.write(_summary(results, out, time.monotonic() - started))
    return 0 if all(r.graded for r in results) else 1
