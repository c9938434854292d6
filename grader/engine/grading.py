"""Grading one submission: notebook -> worker -> checks -> a SubmissionResult.

:func:`run_submission` runs the notebook (the slow part, in parallel) and gives its
:data:`~grader.engine.outcome.Outcome`; :func:`score` runs the checks against it and makes
the result. Nothing here prints. Student problems become a result with a status; our own
bugs become a ``grader_error`` result whose traceback goes to staff only.
"""

from __future__ import annotations

import copy
import hashlib
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grader.authoring.assignment import Assignment, Hint
from grader.engine.notebook import load_submission
from grader.engine.outcome import GraderCrash, NotGradable, Outcome, Ran, close, unreachable
from grader.engine.pytest_plugin import CheckInfo
from grader.engine.session import NotebookSession, Timeouts
from grader.engine.static_imports import environment_problems
from grader.engine.submissions import Submission
from grader.errors import SubmissionProblem
from grader.outputs.manual_answers import free_text_answers
from grader.outputs.results import CheckResult, Execution, SubmissionResult
from grader.sandbox.launcher import Launcher

# Runs the collected checks against a live session: their results and the staff's details.
RunChecks = Callable[[NotebookSession], tuple[list[CheckResult], str]]


@dataclass(frozen=True)
class GradeOptions:
    timeouts: Timeouts = field(default_factory=Timeouts)
    include_hidden: bool = True
    max_notebook_mib: int = 50
    packages: tuple[str, ...] | None = None  # what notebooks may import; None: anything


@dataclass(frozen=True)
class GradingContext:
    """Everything fixed while one grading process grades its submissions."""

    assignment: Assignment
    checks: tuple[CheckInfo, ...]
    launcher: Launcher
    options: GradeOptions
    isolation: str  # what the sandbox could enforce (launcher.isolation), in every result
    out: Path | None = None  # where each submission's files go; None: nowhere (the caller's)
    parallel: int = 1  # notebooks this process runs at once
    first_slot: int = 0  # the first of this process's worker slots (each live worker has one)


def fingerprint(path: Path | None, assignment: Assignment) -> str:
    h = hashlib.sha256()
    if path is not None and path.is_file():
        h.update(path.read_bytes())
    for d in (assignment.root / "checks", assignment.root / "assignment.toml", assignment.probes):
        files = [] if d is None else sorted(d.rglob("*.py")) if d.is_dir() else [d]
        for f in files:
            h.update(str(f.relative_to(assignment.root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def run_submission(sub: Submission, ctx: GradingContext, slot: int = 0) -> Outcome:
    """Load the notebook and run it in a fresh worker (the slow, parallel part)."""
    started = time.monotonic()
    notebook = session = None
    options = ctx.options
    try:
        if sub.problem is not None:
            raise sub.problem
        if sub.path is None:  # only a submission with a problem has no file
            raise ValueError(f"submission {sub.id} has neither a file nor a problem")
        notebook = load_submission(sub.path, options.max_notebook_mib)
        session = NotebookSession(
            ctx.launcher, notebook.code_cells, options.timeouts, slot, options.packages
        )
        session.run_notebook()
    except SubmissionProblem as exc:
        if session is not None:
            session.close()
        return NotGradable(sub, exc)
    except Exception:
        return GraderCrash(sub, traceback.format_exc(), notebook, session)
    return Ran(sub, notebook, session, time.monotonic() - started)


def _not_run(checks: Sequence[CheckInfo], message: str) -> list[CheckResult]:
    return [
        CheckResult(c.name, c.question, 0.0, c.points, "failed", message, c.visibility, c.nodeid)
        for c in checks
    ]


def _question_totals(
    assignment: Assignment, tests: list[CheckResult]
) -> tuple[tuple[str, float, float], ...]:
    out = []
    for q in assignment.questions:
        score = sum(t.score for t in tests if t.question == q.id)
        out.append((q.id, score, q.points))
    return tuple(out)


MAX_CELL_ERRORS = 50  # listed for the student; a notebook of 20,000 failing cells says so once


def _cell_errors(session: NotebookSession, hints: tuple[Hint, ...] = ()) -> list[str]:
    errors = []
    for rec in session.records:
        label = f"cell {rec.index + 1}"
        if rec.status == "error":
            known = [h.says for h in hints if h.applies(rec.ename, rec.evalue)]
            # The plain sentence first; the raw error after it, for those who want it.
            lead = f"{label}: {known[0]} It raised" if known else f"{label} raised"
            errors.append(f"{lead} {rec.ename}: {rec.evalue}")
        elif rec.status == "timeout":
            errors.append(f"{label} was stopped: it {rec.evalue}")
        elif rec.status == "killed":
            errors.append(f"{label}: {rec.evalue}")
        elif rec.status == "skipped":
            errors.append(f"{label} was not run: {rec.evalue}")
    if len(errors) > MAX_CELL_ERRORS:
        more = len(errors) - MAX_CELL_ERRORS
        errors = errors[:MAX_CELL_ERRORS] + [f"... and {more} more cells like these"]
    if session.shell_commands:
        errors.append(
            "shell commands (!, %sx, %%bash, %%sh, %%script and the like) are not run under "
            "grading: " + ", ".join(_shell_label(c) for c in session.shell_commands[:5])
        )
    if session.output_note:
        errors.append(session.output_note)
    return errors


def _shell_label(command: str) -> str:
    # A cell magic is recorded with its name ("%%bash: ..."); a line escape as its command.
    return command if command.startswith("%") else f"!{command}"


def _status(session: NotebookSession) -> str:
    statuses = {r.status for r in session.records}
    if any(r.ename == "MemoryError" for r in session.records):
        return "memory"
    # A cell skipped because its worker kept dying is a crash, not a timeout.
    timed_out = [r for r in session.records if r.status == "skipped" and r.ename != "WorkerDied"]
    if "timeout" in statuses or timed_out:
        return "timeout"
    if "killed" in statuses or "skipped" in statuses or session.restarts:
        return "crashed"
    return "graded"


def score(outcome: Outcome, ctx: GradingContext, run_checks: RunChecks) -> SubmissionResult:
    """The result of a submission: its checks run against its outcome (trusted process,
    one submission at a time), and its worker stopped.

    The fingerprint (what decides reuse on a re-run) is the batch's business.
    """
    try:
        match outcome:
            case NotGradable():
                return _not_gradable(outcome, ctx)
            case GraderCrash():
                return grader_error(
                    outcome.submission, ctx.assignment, ctx.checks, ctx.isolation, outcome.detail
                )
            case Ran():
                return _checked(outcome, ctx, run_checks)
            case _:
                unreachable(outcome)
    except Exception as exc:
        detail = exc.args[0] if isinstance(exc, _Bug) else traceback.format_exc()
        sub = outcome.submission
        return grader_error(sub, ctx.assignment, ctx.checks, ctx.isolation, detail)
    finally:
        close(outcome)


def _base(sub: Submission, assignment: Assignment) -> dict:
    return dict(submission=sub.id, source=sub.origin, max_score=assignment.max_score)


def _not_gradable(outcome: NotGradable, ctx: GradingContext) -> SubmissionResult:
    problem = outcome.problem
    tests = _not_run(ctx.checks, f"not graded: {problem.message}")
    return SubmissionResult(
        score=0.0,
        status=problem.status,
        tests=tuple(tests),
        errors=(problem.message,),
        questions=_question_totals(ctx.assignment, tests),
        execution=Execution(isolation=ctx.isolation),
        **_base(outcome.submission, ctx.assignment),
    )


def _checked(ran: Ran, ctx: GradingContext, run_checks: RunChecks) -> SubmissionResult:
    session, assignment = ran.session, ctx.assignment
    started = time.monotonic()
    tests, details = run_checks(session)
    checks_duration = time.monotonic() - started
    if not tests:
        raise _Bug("no check results: " + details[-3000:])
    cells = ((c.index, c.source) for c in ran.notebook.code_cells)
    errors = environment_problems(cells, assignment.packages) + _cell_errors(
        session, assignment.hints
    )
    if session.gave_up:
        errors.append(f"grading stopped early: {session.gave_up}")
    execution = Execution(
        cells=tuple(session.records),
        duration=ran.duration,
        checks_duration=checks_duration,
        isolation=ctx.isolation,
        restarts=session.restarts,
        shell_commands=tuple(session.shell_commands),
        notes=tuple(session.notes) + ran.notebook.notes,
    )
    return SubmissionResult(
        score=sum(t.score for t in tests),
        status=_status(session),
        tests=tuple(tests),
        errors=tuple(errors),
        execution=execution,
        questions=_question_totals(assignment, tests),
        answers=free_text_answers(ran.notebook.nb, assignment.student),
        staff_details=details,
        **_base(ran.submission, assignment),
    )


GRADER_ERROR_MESSAGE = "the autograder failed on this submission; course staff can see why"


def grader_error(
    sub: Submission,
    assignment: Assignment,
    checks: Sequence[CheckInfo],
    isolation: str,
    detail: str,
) -> SubmissionResult:
    """The row of a submission our side failed on: 0 points, the reason for staff only."""
    tests = _not_run(checks, GRADER_ERROR_MESSAGE)
    return SubmissionResult(
        submission=sub.id,
        source=sub.origin,
        max_score=assignment.max_score,
        score=0.0,
        status="grader_error",
        tests=tuple(tests),
        errors=(GRADER_ERROR_MESSAGE,),
        questions=_question_totals(assignment, tests),
        execution=Execution(isolation=isolation),
        staff_details=detail,
    )


class _Bug(Exception):
    pass


def executed_notebook(outcome: Outcome) -> nbformat.NotebookNode | None:
    """The submitted notebook with the outputs it produced under grading (staff review)."""
    match outcome:
        case NotGradable():
            return None
        case GraderCrash() | Ran():
            if outcome.notebook is None:
                return None
            nb = copy.deepcopy(outcome.notebook.nb)
            outputs = outcome.session.outputs if outcome.session is not None else {}
        case _:
            unreachable(outcome)
    count = 0
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        if index in outputs:
            count += 1
            cell["execution_count"] = count
            cell["outputs"] = [nbformat.from_dict(o) for o in outputs[index]]
    return nb
