"""The result model: frozen records that writers render and nothing mutates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Statuses of a submission. Only the ones in NOT_GRADED make `convgrade grade` exit 1.
GRADED = "graded"
NOT_GRADED = frozenset(
    {
        "not_notebook",
        "too_large",
        "empty",
        "wrong_kernel",
        "old_format",
        "unsafe_path",
        "unreadable",
        "bad_archive",
        "grader_error",
    }
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    question: str
    score: float
    max_score: float
    status: str  # "passed" | "failed"
    message: str
    visibility: str  # "visible" | "hidden"
    nodeid: str = ""


@dataclass(frozen=True)
class CellRecord:
    index: int
    status: str  # "ok" | "error" | "timeout" | "killed" | "skipped"
    duration: float = 0.0
    ename: str = ""
    evalue: str = ""


@dataclass(frozen=True)
class Execution:
    cells: tuple[CellRecord, ...] = ()
    duration: float = 0.0
    checks_duration: float = 0.0
    isolation: str = ""
    restarts: int = 0
    shell_commands: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def failed_cells(self) -> tuple[CellRecord, ...]:
        return tuple(c for c in self.cells if c.status != "ok")


@dataclass(frozen=True)
class SubmissionResult:
    submission: str
    source: str
    score: float
    max_score: float
    status: str
    tests: tuple[CheckResult, ...] = ()
    errors: tuple[str, ...] = ()  # student-facing explanations of what went wrong
    execution: Execution = field(default_factory=Execution)
    questions: tuple[tuple[str, float, float], ...] = ()  # (question, score, max)
    answers: tuple[tuple[str, str], ...] = ()  # free-text answers for staff
    staff_details: str = ""  # tracebacks of grader bugs; never shown to students
    fingerprint: str = ""

    @property
    def graded(self) -> bool:
        return self.status not in NOT_GRADED

    @property
    def question_scores(self) -> dict[str, tuple[float, float]]:
        return {q: (s, m) for q, s, m in self.questions}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["graded"] = self.graded
        data["questions"] = {q: {"score": s, "max_score": m} for q, s, m in self.questions}
        data["answers"] = [{"question": q, "text": t} for q, t in self.answers]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        ex = dict(data.get("execution") or {})
        ex["cells"] = tuple(CellRecord(**c) for c in ex.get("cells", []))
        ex["shell_commands"] = tuple(ex.get("shell_commands", ()))
        ex["notes"] = tuple(ex.get("notes", ()))
        return cls(
            submission=data["submission"],
            source=data.get("source", ""),
            score=data["score"],
            max_score=data["max_score"],
            status=data["status"],
            tests=tuple(CheckResult(**t) for t in data.get("tests", [])),
            errors=tuple(data.get("errors", ())),
            execution=Execution(**ex),
            questions=tuple(
                (q, v["score"], v["max_score"]) for q, v in (data.get("questions") or {}).items()
            ),
            answers=tuple((a["question"], a["text"]) for a in data.get("answers", [])),
            staff_details=data.get("staff_details", ""),
            fingerprint=data.get("fingerprint", ""),
        )
