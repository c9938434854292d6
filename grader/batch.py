"""Grading many submissions: notebooks run in parallel, checks run one at a time.

Worker threads (``jobs`` of them) load each notebook and run it in its own sandboxed
worker; the calling thread runs the pytest checks for whichever submission is ready next
(pytest is not thread-safe, and the checks are short). At most ``jobs + 1`` workers are alive
at once, and each live worker has its own slot (its own unprivileged uid).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__, writers
from .assignment import Assignment
from .grading import GradeOptions, Prepared, executed_notebook, fingerprint, finish, prepare
from .launcher import Launcher
from .plugin import BatchPlugin, CheckInfo, check_dirs, run_pytest
from .results import SubmissionResult
from .submissions import Submission


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
    isolation = launcher.isolation.describe()
    results: dict[str, SubmissionResult] = {}
    todo: list[Submission] = []
    done = 0
    for sub in subs:
        previous = writers.load_result(out, sub.id) if (out and reuse) else None
        if previous and previous.fingerprint == _fp(sub, assignment, options):
            results[sub.id] = previous
            done += 1
            if on_progress:
                on_progress(Progress(done, len(subs), previous, True))
        else:
            todo.append(sub)

    slots: queue.Queue[int] = queue.Queue()
    for i in range(max(1, jobs) + 1):
        slots.put(i)
    ready: queue.Queue[tuple[Prepared, int]] = queue.Queue()
    pending: queue.Queue[Submission] = queue.Queue()
    for sub in todo:
        pending.put(sub)

    def run() -> None:
        while True:
            try:
                sub = pending.get_nowait()
            except queue.Empty:
                return
            slot = slots.get()
            ready.put((prepare(sub, launcher, options, slot), slot))

    threads = [threading.Thread(target=run, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()

    def handle(prep: Prepared, slot: int, run_checks) -> None:
        nonlocal done
        try:
            result = finish(prep, assignment, checks, options, isolation, run_checks)
            result = _with_fingerprint(result, _fp(prep.submission, assignment, options))
            if out is not None:
                writers.write_submission(out, result, executed_notebook(prep), assignment.title)
        finally:
            slots.put(slot)
        results[result.submission] = result
        done += 1
        if on_progress:
            on_progress(Progress(done, len(subs), result, False))

    def serve(run_items) -> None:
        for _ in range(len(todo)):
            prep, slot = ready.get()
            handle(prep, slot, run_items)

    if todo:
        plugin = BatchPlugin(assignment, serve)
        run_pytest(plugin, check_dirs(assignment, options.include_hidden))
        # If pytest itself failed before its run loop, grade what is left one by one.
        while done < len(subs):
            prep, slot = ready.get()
            handle(prep, slot, None)
    for t in threads:
        t.join()
    ordered = [results[s.id] for s in subs]
    if out is not None:
        writers.write_summary(out, ordered, assignment.question_ids())
    return ordered


def _fp(sub: Submission, assignment: Assignment, options: GradeOptions) -> str:
    extra = f"{__version__}|{options}|{sub.origin}|{sub.problem and sub.problem.status}"
    return fingerprint(sub.path, assignment) + ":" + hashlib.sha256(extra.encode()).hexdigest()[:16]


def _with_fingerprint(result: SubmissionResult, fp: str) -> SubmissionResult:
    from dataclasses import replace

    return replace(result, fingerprint=fp)
