"""Writing results: every file goes to a temporary name first and is renamed into place.

Writers only render :class:`~grader.outputs.results.SubmissionResult` records; they never grade.
Each file is one output format of :mod:`grader.outputs.renderers`; this module registers the
built-in ones and writes whatever is registered.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import nbformat

from grader.engine.replies import clean_text
from grader.engine.static_imports import is_environment_line
from grader.outputs.renderers import (
    BatchInput,
    BatchRenderer,
    Rendered,
    SubmissionInput,
    SubmissionRenderer,
    batch_renderers,
    register,
    submission_renderers,
)
from grader.outputs.results import SubmissionResult

GRADESCOPE_VISIBILITY = {"visible": "visible", "hidden": "after_published"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: str | bytes) -> None:
    """Put ``data`` (text as UTF-8) in ``path``: readers see the old file or the new one whole."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
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


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...),
# =cmd|...). Such text cells get a leading apostrophe, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t")


def csv_cell(value: str) -> str:
    """``value`` made safe for a spreadsheet: never read as a formula.

    A lone carriage return becomes a newline too: the csv module quotes a cell that holds
    a newline, but not one that holds only a "\\r", which readers take for a row's end.
    """
    value = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return "'" + value if value.startswith(_FORMULA_START) else value


def _writer(buf: io.StringIO):
    return csv.writer(buf, lineterminator="\n")


def grades_csv(results: list[SubmissionResult], question_ids: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = _writer(buf)
    w.writerow(["submission", "score", "max_score", "status", *question_ids])
    for r in sorted(results, key=lambda r: r.submission):
        per_q = r.question_scores
        w.writerow(
            [
                csv_cell(r.submission),
                _fmt(r.score),
                _fmt(r.max_score),
                r.status,
                *(_fmt(per_q.get(q, (0.0, 0.0))[0]) for q in question_ids),
            ]
        )
    return buf.getvalue()


def submissions_csv(results: list[SubmissionResult]) -> str:
    buf = io.StringIO()
    w = _writer(buf)
    w.writerow(["submission", "source"])
    for r in sorted(results, key=lambda r: r.submission):
        w.writerow([csv_cell(r.submission), csv_cell(r.source)])
    return buf.getvalue()


def manual_csv(results: list[SubmissionResult]) -> str:
    buf = io.StringIO()
    w = _writer(buf)
    w.writerow(["submission", "question", "text"])
    for r in sorted(results, key=lambda r: r.submission):
        for question, text in r.answers:
            w.writerow([csv_cell(r.submission), csv_cell(question), csv_cell(text)])
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


# Student-controlled text in feedback.md: single backtick code spans are kept (their content
# is shown literally); everywhere else, characters that start markup are escaped.
_CODE_SPAN = re.compile(r"(?<!`)`[^`]+`(?!`)")
_MARKUP = re.compile(r"([\\`*_\[\]|#])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LIST_START = re.compile(r"^(\d*)([-+=~.)])")


def md_text(text: str) -> str:
    """One line of student-controlled text, safe to put after a list marker in Markdown.

    It cannot start a heading, a list, a quote or a code block, open HTML or a comment
    (``<!--``), make a link, an image or bold text (a fake score line): newlines become
    spaces, ``<`` and ``>`` become entities and other markup characters are escaped.
    """
    text = _CONTROL.sub(" ", " ".join(str(text).splitlines())).lstrip()
    out, pos = [], 0
    for span in _CODE_SPAN.finditer(text):
        out += [_escape(text[pos : span.start()]), span.group()]
        pos = span.end()
    out.append(_escape(text[pos:]))
    # "- x", "+ x", "1. x": a list inside the item; "===": a heading's underline
    return _LIST_START.sub(r"\1\\\2", "".join(out))


def _escape(segment: str) -> str:
    segment = _MARKUP.sub(r"\\\1", segment)
    return segment.replace("<", "&lt;").replace(">", "&gt;")


def feedback_md(result: SubmissionResult, title: str = "") -> str:
    lines = [f"# Feedback{': ' + title if title else ''}", ""]
    lines.append(f"**Score: {_fmt(result.score)} / {_fmt(result.max_score)}**")
    environment = [e for e in result.errors if is_environment_line(e)]  # first thing to read
    lines += [line for e in environment for line in ("", md_text(e))]
    if not result.graded:
        reason = md_text("; ".join(result.errors))
        lines += ["", f"Your submission could not be graded: {reason}"]
    lines += ["", "| question | points |", "| --- | --- |"]
    for q, s, m in result.questions:
        lines.append(f"| {q} | {_fmt(s)} / {_fmt(m)} |")
    problems = [e for e in result.errors if not is_environment_line(e)]
    if result.graded and problems:
        lines += ["", "## Problems while running your notebook", ""]
        lines += [f"- {md_text(e)}" for e in problems]
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
                lines.append(f"    - {md_text(msg_line)}")
    return "\n".join(lines) + "\n"


# --- the built-in formats, in the order their files are written ----------------------------


@register
class ResultJson(SubmissionRenderer):
    """The whole record; re-runs and ``convgrade report`` read it back."""

    file_name = "result.json"

    def render(self, item: SubmissionInput) -> str:
        return result_json(item.result)


@register
class FeedbackMarkdown(SubmissionRenderer):
    """What the student reads."""

    file_name = "feedback.md"

    def render(self, item: SubmissionInput) -> str:
        return feedback_md(item.result, item.title)


@register
class GradescopeJson(SubmissionRenderer):
    """Gradescope's results format, for uploading or for a Gradescope autograder."""

    file_name = "results.json"

    def render(self, item: SubmissionInput) -> str:
        return json.dumps(gradescope_json(item.result), indent=2) + "\n"


@register
class ExecutedNotebook(SubmissionRenderer):
    """The staff's copy of the run notebook; only a fresh run has it."""

    file_name = "executed.ipynb"

    def render(self, item: SubmissionInput) -> str | None:
        return None if item.executed is None else nbformat.writes(item.executed)


@register
class GradesCsv(BatchRenderer):
    """One row per submission: score, status and the points of each question."""

    file_name = "grades.csv"

    def render(self, batch: BatchInput) -> str:
        return grades_csv(list(batch.results), batch.question_ids)


@register
class SubmissionsCsv(BatchRenderer):
    """Which file each submission id was read from."""

    file_name = "submissions.csv"

    def render(self, batch: BatchInput) -> str:
        return submissions_csv(list(batch.results))


@register
class ManualCsv(BatchRenderer):
    """The free-text answers, for staff to grade by hand."""

    file_name = "manual.csv"

    def render(self, batch: BatchInput) -> str:
        return manual_csv(list(batch.results))


# --- writing -----------------------------------------------------------------------------------


def _write(path: Path, data: Rendered) -> None:
    # Text from a notebook may hold lone surrogates (a markdown answer, a source line), which
    # UTF-8 cannot encode: they become U+FFFD rather than fail the file.
    atomic_write(path, clean_text(data) if isinstance(data, str) else data)


def batch_file_names() -> tuple[str, ...]:
    """The files every registered per-batch format writes beside the submission folders."""
    return tuple(r.file_name for r in batch_renderers())


def write_submission(
    out: Path, result: SubmissionResult, executed: nbformat.NotebookNode | None, title: str = ""
) -> None:
    """Write every registered per-submission file of ``result`` into ``out/<submission>/``."""
    item = SubmissionInput(result, title, executed)
    for renderer in submission_renderers():
        data = renderer.render(item)
        if data is not None:
            _write(out / result.submission / renderer.file_name, data)


def discard_submission_files(out: Path, submission: str) -> None:
    """Remove the files any registered format wrote for ``submission`` (best effort): a
    result that replaces a half-written one must not sit next to the other's files."""
    for renderer in submission_renderers():
        try:
            (out / submission / renderer.file_name).unlink(missing_ok=True)
        except OSError:  # e.g. the submission's folder is not a folder
            pass


def write_summary(out: Path, results: list[SubmissionResult], question_ids: Iterable[str]) -> None:
    """Write every registered per-batch file (grades.csv, ...) into ``out``."""
    batch = BatchInput(tuple(results), tuple(question_ids))
    for renderer in batch_renderers():
        _write(out / renderer.file_name, renderer.render(batch))


def reusable(
    out: Path, submission_id: str, fingerprint: str, title: str = ""
) -> SubmissionResult | None:
    """The stored result of ``submission_id`` if it was graded under ``fingerprint``, else None.

    The files the reused result is missing (deleted, or of a format registered since it was
    written) are rendered again from result.json; a missing executed.ipynb stays missing, as
    result.json does not hold the run notebook. When a missing file cannot be rendered or
    written, the result is not reused: grading the submission again records the failure in
    its row, as for any fresh result.
    """
    result = load_result(out, submission_id)
    if result is None or result.fingerprint != fingerprint:
        return None
    item = SubmissionInput(result, title)
    try:
        for renderer in submission_renderers():
            path = out / submission_id / renderer.file_name
            data = None if path.exists() else renderer.render(item)
            if data is not None:
                _write(path, data)
    except Exception:
        return None
    return result


def load_result(out: Path, submission_id: str) -> SubmissionResult | None:
    path = out / submission_id / "result.json"
    try:
        return SubmissionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
