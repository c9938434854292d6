"""Writing results: every file goes to a temporary name first and is renamed into place.

Writers only render :class:`~grader.results.SubmissionResult` records; they never grade.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import nbformat

from .imports import is_environment_line
from .results import SubmissionResult

GRADESCOPE_VISIBILITY = {"visible": "visible", "hidden": "after_published"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes it owner-only; give it a new file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fmt(x: float) -> str:
    return f"{x:g}"


def grades_csv(results: list[SubmissionResult], question_ids: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "score", "max_score", "status", *question_ids])
    for r in sorted(results, key=lambda r: r.submission):
        per_q = r.question_scores
        w.writerow(
            [
                r.submission,
                _fmt(r.score),
                _fmt(r.max_score),
                r.status,
                *(_fmt(per_q.get(q, (0.0, 0.0))[0]) for q in question_ids),
            ]
        )
    return buf.getvalue()


def submissions_csv(results: list[SubmissionResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "source"])
    for r in sorted(results, key=lambda r: r.submission):
        w.writerow([r.submission, r.source])
    return buf.getvalue()


def manual_csv(results: list[SubmissionResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["submission", "question", "text"])
    for r in sorted(results, key=lambda r: r.submission):
        for question, text in r.answers:
            w.writerow([r.submission, question, text])
    return buf.getvalue()


def result_json(result: SubmissionResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n"


def gradescope_json(result: SubmissionResult) -> dict:
    tests = []
    for t in result.tests:
        tests.append(
            {
                "name": t.name,
                "score": t.score,
                "max_score": t.max_score,
                "status": t.status,
                "output": t.message if t.status == "failed" else "",
                "visibility": GRADESCOPE_VISIBILITY.get(t.visibility, "visible"),
            }
        )
    output = "\n".join(result.errors)
    return {
        "score": result.score,
        "execution_time": round(result.execution.duration + result.execution.checks_duration, 3),
        "output": output,
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def feedback_md(result: SubmissionResult, title: str = "") -> str:
    lines = [f"# Feedback{': ' + title if title else ''}", ""]
    lines.append(f"**Score: {_fmt(result.score)} / {_fmt(result.max_score)}**")
    environment = [e for e in result.errors if is_environment_line(e)]  # first thing to read
    lines += [line for e in environment for line in ("", e)]
    if not result.graded:
        lines += ["", f"Your submission could not be graded: {'; '.join(result.errors)}"]
    lines += ["", "| question | points |", "| --- | --- |"]
    for q, s, m in result.questions:
        lines.append(f"| {q} | {_fmt(s)} / {_fmt(m)} |")
    problems = [e for e in result.errors if not is_environment_line(e)]
    if result.graded and problems:
        lines += ["", "## Problems while running your notebook", ""]
        lines += [f"- {e}" for e in problems]
    lines += ["", "## Checks", ""]
    # In the order of the questions, so each part's checks read together.
    order = {q: i for i, (q, _, _) in enumerate(result.questions)}
    for t in sorted(result.tests, key=lambda t: order.get(t.question, len(order))):
        mark = "passed" if t.status == "passed" else "FAILED"
        kind = " (hidden check)" if t.visibility == "hidden" else ""
        lines.append(
            f"- **{mark}** [{t.question}] {t.name}{kind}: {_fmt(t.score)} / {_fmt(t.max_score)}"
        )
        if t.status != "passed" and t.message:
            for msg_line in t.message.splitlines()[:8]:
                lines.append(f"    - {msg_line}")
    return "\n".join(lines) + "\n"


def write_submission(out: Path, result: SubmissionResult, executed, title: str = "") -> None:
    d = out / result.submission
    atomic_write(d / "result.json", result_json(result))
    atomic_write(d / "feedback.md", feedback_md(result, title))
    atomic_write(d / "results.json", json.dumps(gradescope_json(result), indent=2) + "\n")
    if executed is not None:
        atomic_write(d / "executed.ipynb", nbformat.writes(executed))


def write_summary(out: Path, results: list[SubmissionResult], question_ids) -> None:
    atomic_write(out / "grades.csv", grades_csv(results, question_ids))
    atomic_write(out / "submissions.csv", submissions_csv(results))
    atomic_write(out / "manual.csv", manual_csv(results))


def load_result(out: Path, submission_id: str) -> SubmissionResult | None:
    path = out / submission_id / "result.json"
    try:
        return SubmissionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
