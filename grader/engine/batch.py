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
import queue
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class _Shard:
    """One forked grading process: its index (its zygote channel) and what it shares."""

    index: int
    todo: list[Submission]
    counter: Any  # multiprocessing.Value: the next submission to hand out
    results: Any  # multiprocessing.Queue: ("result", dict) and ("done", index) messages


def _shard_main(ctx: GradingContext, shard: _Shard) -> None:
    ctx.launcher.in_child(shard.index)

    def next_sub() -> Submission | None:
        with shard.counter.get_lock():
            i = shard.counter.value
            if i >= len(shard.todo):
                return None
            shard.counter.value = i + 1
        return shard.todo[i]

    try:
        mine = replace(ctx, parallel=1, first_slot=shard.index * 4)
        _grade_here(mine, next_sub, lambda r: shard.results.put(("result", r.to_dict())))
    finally:
        shard.results.put(("done", shard.index))
        shard.results.close()
        shard.results.join_thread()


def _grade_forked(ctx: GradingContext, todo: list[Submission], shards: int, emit: Emit) -> None:
    """Checks in ``shards`` forked grading processes (pytest is single-threaded).

    They are forked after the checks were collected, so TensorFlow, pytest and the check
    modules are already imported; each grading process uses its own channel to the shared
    worker zygote. Only result dicts come back (our own processes: no student data).
    """
    # The forked grading processes' collections then skip the imported libraries and checks.
    # (Done before waiting for the zygote, which is usually still importing TensorFlow.)
    gc.collect()
    gc.freeze()
    ctx.launcher.start()
    mp = multiprocessing.get_context("fork")
    results_q = mp.Queue()
    counter = mp.Value("i", 0)
    procs = []
    for i in range(shards):
        shard = _Shard(i, todo, counter, results_q)
        proc = mp.Process(target=_shard_main, args=(ctx, shard), daemon=True)
        proc.start()
        procs.append(proc)
    seen = _collect(procs, results_q, emit)
    for sub in todo:
        if sub.id not in seen:  # its grading process died: say so rather than lose it
            crash = GraderCrash(sub, "the grading process for this submission died")
            emit(_recorded(ctx, grade_outcome(ctx, crash, no_checks(""))))


def _collect(procs: list, results_q: Any, emit: Emit) -> set[str]:
    """Emit what the grading processes send until each is done or dead; the ids seen."""
    seen: set[str] = set()
    finished: set[int] = set()

    def take(message: tuple[str, Any]) -> None:
        kind, payload = message
        if kind == "result":
            result = SubmissionResult.from_dict(payload)
            seen.add(result.submission)
            emit(result)
        else:
            finished.add(payload)

    while len(finished) < len(procs):
        try:
            take(results_q.get(timeout=1.0))
        except queue.Empty:
            for i, proc in enumerate(procs):
                if not proc.is_alive() and i not in finished:
                    proc.join()
                    while True:  # what it sent before it died
                        try:
                            take(results_q.get(timeout=0.2))
                        except queue.Empty:
                            break
                    finished.add(i)
    for proc in procs:
        proc.join()
    return seen


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
