"""Grading one submission: notebook -> worker -> checks -> a SubmissionResult.

Nothing here prints. Student problems become a result with a status; our own bugs become a
``grader_error`` result whose traceback goes to staff only.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grader.authoring.assignment import Assignment, Hint
from grader.engine.notebook import LoadedNotebook, load_submission
from grader.engine.pytest_plugin import CheckInfo, GradingPlugin, check_dirs, run_pytest
from grader.engine.session import NotebookSession, Timeouts
from grader.engine.static_imports import environment_problems
from grader.engine.submissions import Submission
from grader.errors import SubmissionProblem
from grader.outputs.manual_answers import free_text_answers
from grader.outputs.results import CheckResult, Execution, SubmissionResult
from grader.sandbox.launcher import Launcher


@dataclass(frozen=True)
class GradeOptions:
    timeouts: Timeouts = field(default_factory=Timeouts)
    include_hidden: bool = True
    max_notebook_mib: int = 50
    packages: tuple[str, ...] | None = None  # what notebooks may import; None: anything


@dataclass
class Prepared:
    """A submission whose notebook has run (or could not): ready for its checks."""

    submission: Submission
    notebook: LoadedNotebook | None = None
    session: NotebookSession | None = None
    problem: SubmissionProblem | None = None
    bug: str = ""
    duration: float = 0.0


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


def prepare(sub: Submission, launcher: Launcher, options: GradeOptions, slot: int = 0) -> Prepared:
    """Load the notebook and run it in a fresh worker (the slow, parallel part)."""
    started = time.monotonic()
    prep = Prepared(sub)
    try:
        if sub.problem is not None:
            raise sub.problem
        prep.notebook = load_submission(sub.path, options.max_notebook_mib)
        prep.session = NotebookSession(
            launcher, prep.notebook.code_cells, options.timeouts, slot, options.packages
        )
        prep.session.run_notebook()
    except SubmissionProblem as exc:
        prep.problem = exc
    except Exception:
        prep.bug = traceback.format_exc()
    prep.duration = time.monotonic() - started
    return prep


def _not_run(checks: list[CheckInfo], message: str) -> list[CheckResult]:
    return [
        CheckResult(c.name, c.question, 0.0, c.points, "failed", message, c.visibility, c.nodeid)
        for c in checks
    ]


def _question_totals(assignment: Assignment, tests: list[CheckResult]):
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


def finish(
    prep: Prepared,
    assignment: Assignment,
    checks: list[CheckInfo],
    options: GradeOptions,
    isolation: str,
    run_checks: Callable[[NotebookSession], tuple[list[CheckResult], str]] | None = None,
) -> SubmissionResult:
    """Run the checks against a prepared submission (trusted process, one at a time).

    ``run_checks`` runs the collected checks against a live session; by default a fresh
    pytest run does it (a batch reuses one pytest session for all submissions instead).
    """
    sub = prep.submission
    # The fingerprint (what decides reuse on a re-run) is the batch's business.
    base = dict(submission=sub.id, source=sub.origin, max_score=assignment.max_score)
    try:
        if prep.problem is not None:
            tests = _not_run(checks, f"not graded: {prep.problem.message}")
            return SubmissionResult(
                score=0.0,
                status=prep.problem.status,
                tests=tuple(tests),
                errors=(prep.problem.message,),
                questions=_question_totals(assignment, tests),
                execution=Execution(isolation=isolation),
                **base,
            )
        if prep.bug:
            raise _Bug(prep.bug)
        session = prep.session
        started = time.monotonic()
        tests, details = (run_checks or _pytest_once(assignment, options))(session)
        checks_duration = time.monotonic() - started
        if not tests:
            raise _Bug("no check results: " + details[-3000:])
        cells = ((c.index, c.source) for c in prep.notebook.code_cells)
        errors = environment_problems(cells, assignment.packages) + _cell_errors(
            session, assignment.hints
        )
        if session.gave_up:
            errors.append(f"grading stopped early: {session.gave_up}")
        execution = Execution(
            cells=tuple(session.records),
            duration=prep.duration,
            checks_duration=checks_duration,
            isolation=isolation,
            restarts=session.restarts,
            shell_commands=tuple(session.shell_commands),
            notes=tuple(session.notes) + prep.notebook.notes,
        )
        score = sum(t.score for t in tests)
        return SubmissionResult(
            score=score,
            status=_status(session),
            tests=tuple(tests),
            errors=tuple(errors),
            execution=execution,
            questions=_question_totals(assignment, tests),
            answers=free_text_answers(prep.notebook.nb, assignment.student),
            staff_details=details,
            **base,
        )
    except Exception as exc:
        detail = exc.args[0] if isinstance(exc, _Bug) else traceback.format_exc()
        return grader_error(sub, assignment, checks, isolation, detail)
    finally:
        if prep.session is not None:
            try:
                prep.session.close()
            except Exception:  # the result stands; the worker is killed by its pidfd anyway
                pass


GRADER_ERROR_MESSAGE = "the autograder failed on this submission; course staff can see why"


def grader_error(
    sub: Submission, assignment: Assignment, checks: list[CheckInfo], isolation: str, detail: str
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


def _pytest_once(assignment: Assignment, options: GradeOptions):
    def run(session: NotebookSession) -> tuple[list[CheckResult], str]:
        plugin = GradingPlugin(assignment, session)
        run_pytest(plugin, check_dirs(assignment, options.include_hidden))
        tests, details = plugin.results()
        return tests, details or getattr(plugin, "output", "")

    return run


class _Bug(Exception):
    pass


def executed_notebook(prep: Prepared):
    """The submitted notebook with the outputs it produced under grading (staff review)."""
    if prep.notebook is None:
        return None
    import copy

    import nbformat

    nb = copy.deepcopy(prep.notebook.nb)
    outputs = prep.session.outputs if prep.session is not None else {}
    count = 0
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        if index in outputs:
            count += 1
            cell["execution_count"] = count
            cell["outputs"] = [nbformat.from_dict(o) for o in outputs[index]]
    return nb
