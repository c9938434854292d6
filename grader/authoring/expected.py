"""``examples/expected.toml``: what each example submission must score, and say.

Two forms, which may be mixed, at the top level or under a ``[scores]`` table:

- ``stem = 35``: the example ``examples/<stem>.ipynb`` scores 35 in total.
- ``[stem]`` (a table): ``lost = {question = points, ...}`` (exactly these questions lose
  exactly these points; the others keep all of theirs), ``score`` (the total),
  ``feedback = ["regex", ...]`` (each must match the text of the failed checks' messages),
  ``not_feedback = ["regex", ...]`` (none may), ``clean = true`` (no check fails at all, not
  even one worth 0 points) and ``status`` (default ``"graded"``).

``convgrade validate`` grades every example and holds it to its entry
(:meth:`Expectation.problems`); the project's tests do the same.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import StaffError
from grader.outputs.results import SubmissionResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TABLE_KEYS = {"score", "lost", "feedback", "not_feedback", "clean", "status"}
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Expectation:
    """What one example must score and say (see the module docstring)."""

    stem: str
    score: float | None = None
    lost: dict[str, float] | None = field(default=None, hash=False)
    feedback: tuple[str, ...] = ()
    not_feedback: tuple[str, ...] = ()
    clean: bool = False
    status: str | None = None

    def describe(self) -> str:
        """A short title for a validate item, e.g. ``scores 35`` or ``loses pool2d 2``."""
        if self.lost is not None:
            lost = ", ".join(f"{q} {p:g}" for q, p in sorted(self.lost.items()))
            return f"loses {lost}" if lost else "loses nothing"
        return f"scores {self.score:g}"

    def problems(self, result: SubmissionResult) -> list[str]:
        """What in ``result`` breaks this expectation; empty when it holds."""
        found = []
        if self.status is not None and result.status != self.status:
            found.append(f"its status is {result.status}, expected {self.status}")
        if self.score is not None and abs(result.score - self.score) > TOLERANCE:
            found.append(f"it scores {result.score:g} (status {result.status})")
        if self.lost is not None:
            got = {q: m - s for q, (s, m) in result.question_scores.items() if s != m}
            if set(got) != set(self.lost) or any(
                abs(got[q] - self.lost[q]) > TOLERANCE for q in got
            ):
                found.append(f"it loses {_points(got)}, expected {_points(self.lost)}")
        messages = "\n".join(t.message for t in result.tests if t.status == "failed")
        if self.clean and messages:
            found.append(f"a check failed although none may: {messages[:300]}")
        for pattern in self.feedback:
            if not re.search(pattern, messages):
                found.append(f"no failed check says /{pattern}/")
        for pattern in self.not_feedback:
            if re.search(pattern, messages):
                found.append(f"a failed check says /{pattern}/, which it must not")
        if found and messages:
            found.append("the failed checks said:\n" + messages)
        return found


def _points(lost: dict[str, float]) -> str:
    return "{" + ", ".join(f"{q}: {p:g}" for q, p in sorted(lost.items())) + "}"


def load(examples_dir: Path) -> dict[str, Expectation]:
    """The entries of ``examples_dir/expected.toml`` by stem ({} when there is no file).

    Raises:
        StaffError: the file is not TOML, or an entry is malformed.
    """
    path = examples_dir / "expected.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StaffError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("scores", data)
    return {str(stem): _entry(str(stem), value, path) for stem, value in table.items()}


def _entry(stem: str, value, path: Path) -> Expectation:
    where = f"{path}: the entry of {stem!r}"
    if not isinstance(value, dict):
        return Expectation(stem, score=_number(value, where))
    unknown = set(value) - TABLE_KEYS
    if unknown:
        raise StaffError(
            f"{where} has unknown key(s) {sorted(unknown)}; known: {sorted(TABLE_KEYS)}"
        )
    lost = value.get("lost")
    if lost is not None:
        if not isinstance(lost, dict):
            raise StaffError(f"{where}: lost must be a table of question = points lost")
        lost = {str(q): _number(p, f"{where}, lost.{q}") for q, p in lost.items()}
    if "score" not in value and lost is None:
        raise StaffError(f"{where} needs a score or a lost table")
    clean = value.get("clean", False)
    status = value.get("status", "graded")
    if not isinstance(clean, bool) or not isinstance(status, str):
        raise StaffError(f"{where}: clean must be true or false and status a string")
    return Expectation(
        stem,
        score=_number(value["score"], where) if "score" in value else None,
        lost=lost,
        feedback=_patterns(value.get("feedback", []), f"{where}, feedback"),
        not_feedback=_patterns(value.get("not_feedback", []), f"{where}, not_feedback"),
        clean=clean,
        status=status,
    )


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StaffError(f"{where} must be a number. Received: {value!r}")
    return float(value)


def _patterns(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise StaffError(f"{where} must be a list of regular expressions. Received: {value!r}")
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise StaffError(f"{where}: {pattern!r} is not a regular expression ({exc})") from None
    return tuple(value)
