"""What became of a submission's notebook: the closed set of outcomes the checks start from.

Every submission ends as exactly one of them. :data:`Outcome` is matched exhaustively
(``match``, with :func:`unreachable` for the rest), so a new kind of outcome is a type error
wherever one is handled rather than a silent fall-through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from grader.engine.notebook import LoadedNotebook
from grader.engine.session import NotebookSession
from grader.engine.submissions import Submission
from grader.errors import SubmissionProblem


@dataclass(frozen=True)
class NotGradable:
    """The submission could not be graded at all (not a notebook, too large, ...)."""

    submission: Submission
    problem: SubmissionProblem


@dataclass(frozen=True)
class GraderCrash:
    """Our side failed while running the notebook; ``detail`` is for staff only."""

    submission: Submission
    detail: str
    notebook: LoadedNotebook | None = None  # what was loaded before the failure
    session: NotebookSession | None = None  # its worker, to close


@dataclass(frozen=True)
class Ran:
    """The notebook ran (whatever its cells did): its live session awaits the checks."""

    submission: Submission
    notebook: LoadedNotebook
    session: NotebookSession
    duration: float  # seconds the notebook took, replays included


Outcome = NotGradable | GraderCrash | Ran


def unreachable(value: NoReturn) -> NoReturn:
    """The end of an exhaustive ``match``: a type checker proves no outcome gets here."""
    raise AssertionError(f"unhandled outcome {value!r}")


def close(outcome: Outcome) -> None:
    """Stop the outcome's worker, if it has one (the result stands whatever happens)."""
    session = outcome.session if isinstance(outcome, (Ran, GraderCrash)) else None
    if session is not None:
        try:
            session.close()
        except Exception:  # the worker is killed by its pidfd anyway
            pass
