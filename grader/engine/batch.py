"""Grading many submissions: notebooks run in parallel, checks run one at a time.

Worker threads (``jobs`` of them) load each notebook and run it in its own sandboxed
worker; the calling thread runs the pytest checks for whichever submission is ready next
(pytest is not thread-safe, and the checks are short). At most ``jobs + 1`` workers are alive
at once, and each live worker has its own slot (its own unprivileged uid).
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from grader import __version__
from grader.authoring.assignment import Assignment
from grader.engine.grading import (
    GradeOptions,
    Prepared,
    executed_notebook,
    fingerprint,
    finish,
    grader_error,
    prepare,
)
from grader.engine.pytest_plugin import BatchPlugin, CheckInfo, check_dirs, run_pytest
from grader.engine.submissions import Submission
from grader.outputs import writers
from grader.outputs.results import SubmissionResult
from grader.sandbox.launcher import Launcher


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
    results: dict[str, SubmissionResult] = {}
    todo: list[Submission] = []
    for sub in subs:
        fp = _fp(sub, assignment, options)
        previous = writers.reusable(out, sub.id, fp, assignment.title) if (out and reuse) else None
        if previous:
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
        _grade_forked(todo, assignment, checks, launcher, options, out, shards, emit)
    elif todo:
        source = iter(todo)
        _grade_here(
            lambda: next(source, None),
            assignment,
            checks,
            launcher,
            options,
            out,
            max(1, jobs),
            0,
            emit,
        )
    isolation = launcher.isolation.describe()
    for sub in subs:  # a row for every submission, whatever happened on the way
        if sub.id not in results:
            detail = "the batch ended without a result for this submission"
            failed = grader_error(sub, assignment, checks, isolation, detail)
            results[sub.id] = _written(out, failed, None, assignment, checks)
    ordered = [results[s.id] for s in subs]
    if out is not None:
        writers.write_summary(out, ordered, assignment.question_ids())
    return ordered


def _grade_here(next_sub, assignment, checks, launcher, options, out, threads_n, slot_base, emit):
    """This process: notebooks run in ``threads_n`` threads, checks in one pytest session.

    ``next_sub()`` hands out the next submission to grade, or None when there are no more;
    several grading processes may share one source, so none of them idles while another
    still has a queue.
    """
    isolation = launcher.isolation.describe()
    slots: queue.Queue[int] = queue.Queue()
    for i in range(threads_n + 1):
        slots.put(slot_base + i)
    ready: queue.Queue[tuple[Prepared, int] | None] = queue.Queue()
    take = threading.Lock()

    def run() -> None:
        try:
            while True:
                slot = slots.get()
                with take:
                    sub = next_sub()
                if sub is None:
                    slots.put(slot)
                    return
                ready.put((prepare(sub, launcher, options, slot), slot))
        finally:
            ready.put(None)  # this thread is done

    threads = [threading.Thread(target=run, daemon=True) for _ in range(threads_n)]
    for t in threads:
        t.start()
    handled = 0

    def handle(prep: Prepared, slot: int, run_checks) -> None:
        nonlocal handled
        try:
            result = _guarded(prep, assignment, checks, options, isolation, out, run_checks)
        finally:
            slots.put(slot)
        handled += 1
        emit(result)

    running = len(threads)

    def next_ready() -> tuple[Prepared, int] | None:
        nonlocal running
        while running:
            item = ready.get()
            if item is not None:
                return item
            running -= 1
        return None

    def serve(run_items) -> None:
        while (item := next_ready()) is not None:
            handle(*item, run_items)

    plugin = BatchPlugin(assignment, serve)
    run_pytest(plugin, check_dirs(assignment, options.include_hidden))
    # If pytest itself failed before its run loop, grade what is left one by one.
    while (item := next_ready()) is not None:
        handle(*item, None)
    for t in threads:
        t.join()


def _shard_main(index, todo, counter, assignment, checks, launcher, options, out, results_q):
    launcher.in_child(index)

    def next_sub() -> Submission | None:
        with counter.get_lock():
            i = counter.value
            if i >= len(todo):
                return None
            counter.value = i + 1
        return todo[i]

    try:
        _grade_here(
            next_sub,
            assignment,
            checks,
            launcher,
            options,
            out,
            1,
            index * 4,
            lambda r: results_q.put(("result", r.to_dict())),
        )
    finally:
        results_q.put(("done", index))
        results_q.close()
        results_q.join_thread()


def _grade_forked(todo, assignment, checks, launcher, options, out, shards, emit) -> None:
    """Checks in ``shards`` forked grading processes (pytest is single-threaded).

    They are forked after the checks were collected, so TensorFlow, pytest and the check
    modules are already imported; each grading process uses its own channel to the shared
    worker zygote. Only result dicts come back (our own processes: no student data).
    """
    # The forked grading processes' collections then skip the imported libraries and checks.
    # (Done before waiting for the zygote, which is usually still importing TensorFlow.)
    gc.collect()
    gc.freeze()
    launcher.start()
    ctx = multiprocessing.get_context("fork")
    results_q = ctx.Queue()
    counter = ctx.Value("i", 0)  # the next submission to hand out, shared by the processes
    procs = []
    for i in range(shards):
        proc = ctx.Process(
            target=_shard_main,
            args=(i, todo, counter, assignment, checks, launcher, options, out, results_q),
            daemon=True,
        )
        proc.start()
        procs.append(proc)
    seen: set[str] = set()
    finished: set[int] = set()

    def take(message) -> None:
        kind, payload = message
        if kind == "result":
            result = SubmissionResult.from_dict(payload)
            seen.add(result.submission)
            emit(result)
        else:
            finished.add(payload)

    while len(finished) < shards:
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
    isolation = launcher.isolation.describe()
    for sub in todo:
        if sub.id not in seen:  # its grading process died: say so rather than lose it
            prep = Prepared(sub, bug="the grading process for this submission died")
            emit(_guarded(prep, assignment, checks, options, isolation, out, None))


def _guarded(prep: Prepared, assignment, checks, options, isolation, out, run_checks):
    """Everything the trusted side does for one submission, under one guard: its checks,
    its fingerprint, executed.ipynb and its files. Whatever the notebook did, the
    submission gets a result, and ``grader_error`` (reason for staff only) if our side
    failed on it."""
    sub = prep.submission
    try:
        result = finish(prep, assignment, checks, options, isolation, run_checks)
        result = _with_fingerprint(result, _fp(sub, assignment, options))
    except Exception:
        result = grader_error(sub, assignment, checks, isolation, traceback.format_exc())
    executed = None
    if out is not None:
        try:
            executed = executed_notebook(prep)
        except Exception:
            # The score stands without the staff's copy of the run notebook.
            result = replace(
                result,
                staff_details=result.staff_details
                + "\nexecuted.ipynb was not written:\n"
                + traceback.format_exc(),
            )
    return _written(out, result, executed, assignment, checks)


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
    from dataclasses import replace

    return replace(result, fingerprint=fp)
