"""The grading loop: one pytest session that grades submission after submission.

:class:`GradingLoop` owns pytest's run loop, as pytest-xdist's worker does: pytest starts
once (plugins, configuration, every check module imported), then, instead of running the
collected checks once, the loop takes the next submission from its feed, runs the checks
against that submission's live notebook, and reports the result; until the feed runs dry.
Starting pytest costs seconds; paying it once per batch instead of once per submission is
most of the trusted side's speed. Local grading (one process or forked ones), the Python
API and the Dask task all grade through it; they differ only in their feed.

A feed hands out :class:`Job`\\ s: a submission whose notebook has run (its
:data:`~grader.engine.outcome.Outcome`) and where its :class:`Graded` result goes.
:class:`RunAhead` is the local feed: it runs notebooks in threads ahead of the checks.
"""

from __future__ import annotations

import functools
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import nbformat
import pytest

from grader.engine.grading import (
    GradingContext,
    RunChecks,
    executed_notebook,
    grader_error,
    run_submission,
    score,
)
from grader.engine.outcome import Outcome
from grader.engine.pytest_plugin import GradingPlugin
from grader.engine.pytest_run import check_dirs, run_pytest
from grader.engine.session import NotebookSession
from grader.engine.submissions import Submission
from grader.outputs.results import CheckResult, SubmissionResult


@dataclass(frozen=True)
class Graded:
    """A submission's result, and its notebook as it ran (None when nothing ran)."""

    submission: Submission
    result: SubmissionResult
    executed: nbformat.NotebookNode | None


@dataclass(frozen=True)
class Job:
    """One submission for the loop: its notebook's outcome, and where its result goes."""

    outcome: Outcome
    reply: Callable[[Graded], None]


# The next job, blocking until there is one; None when there are no more for this loop.
Feed = Callable[[], Job | None]


class GradingLoop(GradingPlugin):
    """Grades what ``feed`` hands out, every check in one pytest session. See the module
    docstring.

    Between submissions only the per-check outcomes are reset; check modules are imported
    once, so checks must not keep state in module globals.
    """

    def __init__(self, ctx: GradingContext, feed: Feed) -> None:
        super().__init__(ctx.assignment)
        self.ctx = ctx
        self.feed = feed
        self._items: list[pytest.Item] = []

    def run(self) -> None:
        """Grade until the feed runs dry."""
        dirs = check_dirs(self.ctx.assignment, self.ctx.options.include_hidden)
        run = run_pytest(self, self.ctx.assignment, dirs)
        # pytest failed before its run loop: no check can run, and staff see why.
        while (job := self.feed()) is not None:
            job.reply(grade_outcome(self.ctx, job.outcome, no_checks(run.output)))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self._items = [i for i in session.items if i.nodeid in self.infos]
        while (job := self.feed()) is not None:
            job.reply(grade_outcome(self.ctx, job.outcome, self._run_checks))
        return True

    def _run_checks(self, session: NotebookSession) -> tuple[list[CheckResult], str]:
        """Every collected check against ``session``, then every fixture torn down."""
        self.session = session
        self.outcomes = {}
        items = self._items
        try:
            for i, item in enumerate(items):
                nextitem = items[i + 1] if i + 1 < len(items) else None
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        finally:
            self.session = None
        return self.results()


def grade_outcome(ctx: GradingContext, outcome: Outcome, run_checks: RunChecks) -> Graded:
    """Everything the trusted side does for one submission, under one guard: its checks and
    its executed notebook. Whatever the notebook did, the submission gets a result, and
    ``grader_error`` (reason for staff only) if our side failed on it."""
    try:
        result = score(outcome, ctx, run_checks)
    except Exception:
        sub = outcome.submission
        detail = traceback.format_exc()
        result = grader_error(sub, ctx.assignment, ctx.checks, ctx.isolation, detail)
    try:
        executed = executed_notebook(outcome)
    except Exception:
        # The score stands without the staff's copy of the run notebook.
        executed = None
        note = "\nexecuted.ipynb was not written:\n" + traceback.format_exc()
        result = replace(result, staff_details=result.staff_details + note)
    return Graded(outcome.submission, result, executed)


def no_checks(output: str) -> RunChecks:
    """Checks that cannot run (pytest failed to start): no results, and pytest's output."""

    def run_checks(session: NotebookSession) -> tuple[list[CheckResult], str]:
        return [], output

    return run_checks


class RunAhead:
    """The local feed: ``ctx.parallel`` threads run notebooks ahead of the checks.

    ``next_sub()`` hands out the next submission, or None when there are no more; several
    grading processes may share one source, so none of them idles while another still has
    a queue. Each live worker holds a slot of ``ctx.parallel + 1`` (its own unprivileged
    uid): a notebook's slot is free again once its checks are done.
    """

    def __init__(
        self,
        ctx: GradingContext,
        next_sub: Callable[[], Submission | None],
        report: Callable[[Graded], None],
    ) -> None:
        self.ctx = ctx
        self.next_sub = next_sub
        self.report = report
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(ctx.parallel + 1):
            self._slots.put(ctx.first_slot + i)
        self._ready: queue.Queue[Job | None] = queue.Queue()
        self._take = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(ctx.parallel)
        ]
        self._running = len(self._threads)
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        try:
            while True:
                slot = self._slots.get()
                with self._take:
                    sub = self.next_sub()
                if sub is None:
                    self._slots.put(slot)
                    return
                outcome = run_submission(sub, self.ctx, slot)
                self._ready.put(Job(outcome, functools.partial(self._done, slot=slot)))
        finally:
            self._ready.put(None)  # this thread is done

    def _done(self, graded: Graded, slot: int) -> None:
        try:
            self.report(graded)
        finally:
            self._slots.put(slot)

    def __call__(self) -> Job | None:
        while self._running:
            job = self._ready.get()
            if job is not None:
                return job
            self._running -= 1
        return None

    def join(self) -> None:
        for t in self._threads:
            t.join()
