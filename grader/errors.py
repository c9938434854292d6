"""The three kinds of errors convgrade knows, each with the exit code it leads to.

- :class:`StaffError`: a bad assignment, bad flags or paths. Detected before grading starts;
  the command stops with exit code 2 and a message that says how to fix it.
- student problems are *not* exceptions that escape: a bad notebook, a timeout or a missing
  name end up in the submission's report (:class:`SubmissionProblem` carries them inside the
  grader).
- :class:`GraderBug`: our fault. The report is still written; students see "the autograder
  failed", staff see the traceback.
"""

from __future__ import annotations

from typing import Literal

# How a worker failed to answer. timeout: it missed its deadline and was killed;
# interrupted: it missed it and stopped on SIGINT; died: it exited, crashed or would not
# start; protocol: it broke the wire protocol and was killed; memory: killed for its memory
# budget; budget: the checks' time for this notebook is spent, so it was not asked at all.
FailureKind = Literal["timeout", "interrupted", "died", "protocol", "memory", "budget"]


class ConvgradeError(Exception):
    exit_code = 1


class StaffError(ConvgradeError):
    """Bad assignment, option or path: fix it and run again."""

    exit_code = 2


class GraderBug(ConvgradeError):
    """Something in convgrade itself went wrong."""

    exit_code = 1


class SubmissionProblem(Exception):
    """A submission cannot be graded (not a notebook, too large, ...).

    ``status`` is the short reason in grades.csv; the message is shown to the student.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WorkerFailure(Exception):
    """The worker did not answer; ``kind`` says why (see :data:`FailureKind`)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
