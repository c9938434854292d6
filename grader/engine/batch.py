"""Grading many submissions: notebooks run in parallel, checks run one at a time.

Worker threads (``jobs`` of them, :class:`~grader.engine.loop.RunAhead`) load each notebook
and run it in its own sandboxed worker; the calling thread's
:class:`~grader.engine.loop.GradingLoop` runs the pytest checks for whichever submission is
ready next (pytest is not thread-safe, and the checks are short). With a warm zygote and
``jobs`` > 1, ``jobs`` forked grading processes each run such a loop. At most ``jobs + 1``
workers are alive at once, and each live worker has its own slot (its own unprivileged uid).
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import connection
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from grader import __version__
from grader.authoring.assignment import Assignment
from grader.engine.grading import GradeOptions, GradingContext, fingerprint, grader_error
from grader.engine.loop import Graded, GradingLoop, RunAhead, grade_outcome, no_checks
from grader.engine.outcome import GraderCrash
from grader.engine.pytest_plugin import CheckInfo
from grader.engine.submissions import Submission
from grader.outputs import writers
from grader.outputs.results import SubmissionResult
from grader.sandbox.launcher import Launcher

Emit = Callable[[SubmissionResult], None]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    result: SubmissionResult
    reused: bool


def grade_batch(
    subs: list[Submission],
    assignment: Assignment,
    checks: list[CheckInfo],
    launcher: Launcher,
    options: GradeOptions,
    out: Path | None,
    jobs: int = 1,
    reuse: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[SubmissionResult]:
    """Grade ``subs``; with ``jobs`` > 1 and a warm launcher with as many channels, the
    checks run in ``jobs`` forked grading processes that share the launcher's zygote."""
    isolation = launcher.isolation.describe()
    ctx = GradingContext(
        assignment, tuple(checks), launcher, options, isolation, out, parallel=max(1, jobs)
    )
    results: dict[str, SubmissionResult] = {}
    todo: list[Submission] = []
    for sub in subs:
        previous = _reusable(ctx, sub) if reuse else None
        if previous is not None:
            results[sub.id] = previous
            if on_progress:
                on_progress(Progress(len(results), len(subs), previous, True))
        else:
            todo.append(sub)

    def emit(result: SubmissionResult) -> None:
        results[result.submission] = result
        if on_progress:
            on_progress(Progress(len(results), len(subs), result, False))

    shards = min(jobs, launcher.channels, len(todo)) if launcher.warm else 1
    if shards > 1:
        _grade_forked(ctx, todo, shards, emit)
    elif todo:
        source = iter(todo)
        _grade_here(ctx, lambda: next(source, None), emit)
    for sub in subs:  # a row for every submission, whatever happened on the way
        if sub.id not in results:
            detail = "the batch ended without a result for this submission"
            failed = grader_error(sub, assignment, checks, ctx.isolation, detail)
            results[sub.id] = _written(out, failed, None, assignment, checks)
    ordered = [results[s.id] for s in subs]
    if out is not None:
        writers.write_summary(out, ordered, assignment.question_ids())
    return ordered


def _reusable(ctx: GradingContext, sub: Submission) -> SubmissionResult | None:
    """The result of an earlier run in ``ctx.out``, if nothing that decides it changed; the
    files it is missing (deleted, or of a format registered since) are rendered again."""
    if ctx.out is None:
        return None
    fp = _fp(sub, ctx.assignment, ctx.options)
    return writers.reusable(ctx.out, sub.id, fp, ctx.assignment.title)


def _grade_here(ctx: GradingContext, next_sub: Callable[[], Submission | None], emit: Emit) -> None:
    """This process: notebooks run in ``ctx.parallel`` threads, checks in one pytest session."""
    feed = RunAhead(ctx, next_sub, lambda graded: emit(_recorded(ctx, graded)))
    GradingLoop(ctx, feed).run()
    feed.join()


def _recorded(ctx: GradingContext, graded: Graded) -> SubmissionResult:
    """A graded submission with its fingerprint, its files written."""
    sub = graded.submission
    try:
        result = _with_fingerprint(graded.result, _fp(sub, ctx.assignment, ctx.options))
    except Exception:
        detail = traceback.format_exc()
        result = grader_error(sub, ctx.assignment, ctx.checks, ctx.isolation, detail)
    return _written(ctx.out, result, graded.executed, ctx.assignment, ctx.checks)


def _shard_main(ctx: GradingContext, index: int, todo: list[Submission], conn: Connection) -> None:
    """A forked grading process: asks the parent for each next submission over its own pipe
    and sends each result back the same way."""
    ctx.launcher.in_child(index)

    def next_sub() -> Submission | None:
        conn.send(("next", None))
        i = conn.recv()
        return None if i is None else todo[i]

    try:
        mine = replace(ctx, parallel=1, first_slot=index * 4)
        _grade_here(mine, next_sub, lambda r: conn.send(("result", r.to_dict())))
    finally:
        conn.send(("done", None))
        conn.close()


def _grade_forked(ctx: GradingContext, todo: list[Submission], shards: int, emit: Emit) -> None:
    """Checks in ``shards`` forked grading processes (pytest is single-threaded).

    They are forked after the checks were collected, so TensorFlow, pytest and the check
    modules are already imported; each grading process uses its own channel to the shared
    worker zygote. Each has a pipe of its own to this process, and nothing else is shared
    (no queue, no lock): one that dies, even halfway through a message, cannot stall the
    others. Only result dicts come back (our own processes: no student data).
    """
    # The forked grading processes' collections then skip the imported libraries and checks.
    # (Done before waiting for the zygote, which is usually still importing TensorFlow.)
    gc.collect()
    gc.freeze()
    ctx.launcher.start()
    mp = multiprocessing.get_context("fork")
    shard_ends: dict[int, tuple[Connection, Any]] = {}
    for i in range(shards):
        mine, theirs = mp.Pipe()
        proc = mp.Process(target=_shard_main, args=(ctx, i, todo, theirs), daemon=True)
        proc.start()
        # Only the shard holds its end now, so its death reads as the end of the pipe.
        theirs.close()
        shard_ends[i] = (mine, proc)
    seen = _Dispatcher(todo, emit).serve(shard_ends)
    for sub in todo:
        if sub.id not in seen:  # its grading process died: say so rather than lose it
            crash = GraderCrash(sub, "the grading process for this submission died")
            emit(_recorded(ctx, grade_outcome(ctx, crash, no_checks(""))))


class _Dispatcher:
    """Hands out submissions to the grading processes on request and takes their results."""

    def __init__(self, todo: list[Submission], emit: Emit) -> None:
        self.todo = todo
        self.emit = emit
        self.handed = 0
        self.seen: set[str] = set()

    def serve(self, shards: dict[int, tuple[Connection, Any]]) -> set[str]:
        """Until every grading process is done or gone; the ids whose results came back."""
        live = dict(shards)
        while live:
            waitables = [c for c, _ in live.values()] + [p.sentinel for _, p in live.values()]
            ready = set(connection.wait(waitables, timeout=5.0))
            for i, (conn, proc) in list(live.items()):
                if conn not in ready and proc.sentinel not in ready:
                    continue
                done = not self._answer(conn)
                if not done and not proc.is_alive():
                    self._answer(conn)  # what it sent before it died
                    done = True
                if done:
                    conn.close()
                    proc.join()
                    del live[i]
        return self.seen

    def _answer(self, conn: Connection) -> bool:
        """Read what the grading process sent; False once it is done or gone."""
        try:
            while conn.poll():
                kind, payload = conn.recv()
                if kind == "next":
                    conn.send(self._next())
                elif kind == "result":
                    result = SubmissionResult.from_dict(payload)
                    self.seen.add(result.submission)
                    self.emit(result)
                else:
                    return False
        except (EOFError, OSError):  # it died, perhaps in the middle of a message
            return False
        return True

    def _next(self) -> int | None:
        if self.handed >= len(self.todo):
            return None
        self.handed += 1
        return self.handed - 1


def _written(out, result: SubmissionResult, executed, assignment: Assignment, checks):
    """Write a submission's files; if that fails, its row says so instead of vanishing."""
    if out is None:
        return result
    try:
        writers.write_submission(out, result, executed, assignment.title)
        return result
    except Exception:
        detail = traceback.format_exc()
    if executed is not None:  # the staff's copy is the likeliest to fail: try without it
        result = replace(
            result,
            staff_details=result.staff_details + "\nexecuted.ipynb was not written:\n" + detail,
        )
        try:
            writers.write_submission(out, result, None, assignment.title)
            return result
        except Exception:
            detail = traceback.format_exc()
    sub = Submission(result.submission, result.source, None)
    failed = grader_error(sub, assignment, checks, result.execution.isolation, detail)
    writers.discard_submission_files(out, result.submission)
    try:
        writers.write_submission(out, failed, None, assignment.title)
    except Exception:
        pass  # grades.csv still lists it, as grader_error
    return failed


def _fp(sub: Submission, assignment: Assignment, options: GradeOptions) -> str:
    extra = f"{__version__}|{options}|{sub.origin}|{sub.problem and sub.problem.status}"
    return fingerprint(sub.path, assignment) + ":" + hashlib.sha256(extra.encode()).hexdigest()[:16]


def _with_fingerprint(result: SubmissionResult, fp: str) -> SubmissionResult:
    return replace(result, fingerprint=fp)
