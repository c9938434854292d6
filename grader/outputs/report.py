"""The class report: one self-contained HTML page about a folder written by ``convgrade grade``.

Reads ``grades.csv`` (the list of submissions and their per-question points) and each
``<id>/result.json`` (checks, messages, reasons), summarises them (:func:`summarize`) and
renders the summary (:func:`render_html`) with the plots embedded as base64 PNG, so the page
opens offline and can be mailed around. The page has no scripts and no external URLs.

Submission ids, check messages and error texts come from student notebooks: every piece of
text goes through :func:`html.escape` on its way into the page.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from grader.errors import StaffError
from grader.outputs.results import NOT_GRADED, SubmissionResult
from grader.outputs.writers import atomic_write, load_result

TOP_FAILING = 15
_FIXED_COLUMNS = ("submission", "score", "max_score", "status")


@dataclass(frozen=True)
class Row:
    """One line of grades.csv, with its result.json when that could be read."""

    submission: str
    score: float
    max_score: float
    status: str
    question_scores: dict[str, float]
    result: SubmissionResult | None

    @property
    def scored(self) -> bool:
        # timeout / memory / crashed notebooks still went through the checks and got points
        return self.status not in NOT_GRADED


@dataclass(frozen=True)
class QuestionStat:
    """How the scored submissions did on one question of assignment.toml."""

    question: str
    max_score: float
    mean: float
    full_marks: float  # share of scored submissions with all the question's points


@dataclass(frozen=True)
class FailingCheck:
    """A check that failed ``failed`` times out of ``seen``, with its most frequent message."""

    question: str
    name: str
    visibility: str
    failed: int
    seen: int
    typical_message: str


@dataclass(frozen=True)
class Summary:
    """Everything the page shows, computed once; the renderer only formats it."""

    grades_dir: Path
    total: int
    statuses: dict[str, int]
    max_score: float
    scores: tuple[float, ...]
    questions: tuple[QuestionStat, ...]
    failing: tuple[FailingCheck, ...]
    not_graded: tuple[tuple[str, str, str], ...]  # (submission, status, reason)
    hit_limits: tuple[tuple[str, str, str], ...]  # (submission, status, what happened)
    isolation: tuple[str, ...]
    missing_results: tuple[str, ...]
    manual_answers: int


def build_report(grades_dir: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` for a grades folder and return its path.

    Args:
        grades_dir: a folder written by ``convgrade grade`` (holds ``grades.csv``).
        out: where to write the page; ``grades_dir / "report.html"`` by default.

    Raises:
        StaffError: ``grades_dir`` has no readable ``grades.csv``.
    """
    grades_dir = Path(grades_dir)
    rows, question_ids = load_rows(grades_dir)
    out = Path(out) if out is not None else grades_dir / "report.html"
    atomic_write(out, render_html(summarize(grades_dir, rows, question_ids)))
    return out


def load_rows(grades_dir: Path) -> tuple[list[Row], tuple[str, ...]]:
    """Read grades.csv and the result.json of every submission it lists.

    Raises:
        StaffError: grades.csv is missing, unreadable or lacks its fixed columns.
    """
    path = grades_dir / "grades.csv"
    if not path.is_file():
        raise StaffError(
            f"{grades_dir} has no grades.csv, so there is nothing to report on. Give the "
            "folder that `convgrade grade ... --out DIR` wrote."
        )
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StaffError(f"{path} could not be read: {exc}") from None
    if header[: len(_FIXED_COLUMNS)] != _FIXED_COLUMNS:
        raise StaffError(
            f"{path} does not look like convgrade's grades.csv: its columns must start with "
            f"{', '.join(_FIXED_COLUMNS)}. Received: {', '.join(header) or 'no header'}"
        )
    question_ids = header[len(_FIXED_COLUMNS) :]
    rows = []
    for rec in records:
        sub = rec["submission"] or ""
        rows.append(
            Row(
                submission=sub,
                score=_number(rec["score"]),
                max_score=_number(rec["max_score"]),
                status=rec["status"] or "",
                question_scores={q: _number(rec.get(q)) for q in question_ids},
                result=_result_for(grades_dir, sub),
            )
        )
    return rows, question_ids


def _number(text: str | None) -> float:
    try:
        return float(text or "nan")
    except ValueError:
        return math.nan


def _result_for(grades_dir: Path, submission: str) -> SubmissionResult | None:
    # grades.csv may have been edited by hand: never follow an id out of the folder
    try:
        inside = (grades_dir / submission).resolve().parent == grades_dir.resolve()
    except (OSError, ValueError):  # e.g. a NUL byte in the id
        return None
    return load_result(grades_dir, submission) if submission and inside else None


def summarize(grades_dir: Path, rows: list[Row], question_ids: tuple[str, ...]) -> Summary:
    """Compute the numbers, tables and plot data of the report."""
    scored = [r for r in rows if r.scored]
    max_scores = Counter(r.max_score for r in rows if math.isfinite(r.max_score))
    max_score = max_scores.most_common(1)[0][0] if max_scores else 0.0
    not_graded, hit_limits = [], []
    for r in rows:
        errors = "; ".join(r.result.errors) if r.result else ""
        if not r.scored:
            not_graded.append((r.submission, r.status, errors or "(no result.json)"))
        elif r.status != "graded":
            hit_limits.append((r.submission, r.status, errors))
    isolation = sorted({r.result.execution.isolation for r in rows if r.result} - {""})
    return Summary(
        grades_dir=grades_dir,
        total=len(rows),
        statuses=dict(sorted(Counter(r.status for r in rows).items())),
        max_score=max_score,
        scores=tuple(r.score for r in scored if math.isfinite(r.score)),
        questions=_question_stats(scored, question_ids),
        failing=_failing_checks(scored),
        not_graded=tuple(not_graded),
        hit_limits=tuple(hit_limits),
        isolation=tuple(isolation),
        missing_results=tuple(r.submission for r in rows if r.result is None),
        manual_answers=sum(len(r.result.answers) for r in rows if r.result),
    )


def _question_stats(scored: list[Row], question_ids: tuple[str, ...]) -> tuple[QuestionStat, ...]:
    stats = []
    for q in question_ids:
        maxima = [r.result.question_scores.get(q, (0.0, 0.0))[1] for r in scored if r.result]
        maxima = [m for m in maxima if m > 0]
        points = [r.question_scores[q] for r in scored if math.isfinite(r.question_scores[q])]
        # without any result.json the best observed score is the best guess at the maximum
        q_max = max(maxima) if maxima else max(points, default=0.0)
        mean = statistics.fmean(points) if points else 0.0
        full = sum(p >= q_max - 1e-9 for p in points) / len(points) if points and q_max else 0.0
        stats.append(QuestionStat(q, q_max, mean, full))
    return tuple(stats)


def _failing_checks(scored: list[Row]) -> tuple[FailingCheck, ...]:
    failed: Counter[tuple[str, str, str]] = Counter()
    seen: Counter[tuple[str, str, str]] = Counter()
    messages: dict[tuple[str, str, str], Counter[str]] = {}
    for r in scored:
        for t in r.result.tests if r.result else ():
            key = (t.question, t.name, t.visibility)
            seen[key] += 1
            if t.status != "passed":
                failed[key] += 1
                messages.setdefault(key, Counter())[t.message.strip()] += 1
    ranked = sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_FAILING]
    return tuple(
        FailingCheck(
            q, name, vis, n, seen[(q, name, vis)], messages[(q, name, vis)].most_common(1)[0][0]
        )
        for (q, name, vis), n in ranked
    )


# ---------------------------------------------------------------- rendering


def _png(fig: Figure) -> str:
    """The figure as a data: URL (Agg canvas, no pyplot: no global state, no display)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(scores: tuple[float, ...], max_score: float) -> str:
    """A histogram of the scores, one bar per point when there are few points."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if scores:
        top = max(max_score, max(scores), 1.0)
        # one bar per point when points are few, otherwise twenty even bins
        step = 1.0 if top <= 40 else top / 20
        edges = [i * step - step / 2 for i in range(int(top / step) + 2)]
        ax.hist(scores, bins=edges, color="#3b6fb6", edgecolor="white")
        ax.set_xlim(edges[0], edges[-1])
    else:
        ax.text(0.5, 0.5, "no scored submissions", ha="center", va="center")
    ax.set_xlabel(f"score (out of {max_score:g})")
    ax.set_ylabel("submissions")
    ax.set_title("Score distribution")
    return _png(fig)


def questions_png(questions: tuple[QuestionStat, ...]) -> str:
    """Per question: the share of full marks and the mean share of points, as bars."""
    fig = Figure(figsize=(6.4, 1.4 + 0.45 * max(1, len(questions))), layout="constrained")
    ax = fig.add_subplot()
    names = [q.question for q in questions]
    ys = list(range(len(questions)))
    full = [100 * q.full_marks for q in questions]
    mean = [100 * q.mean / q.max_score if q.max_score else 0.0 for q in questions]
    ax.barh([y + 0.2 for y in ys], full, height=0.4, color="#2e8b57", label="full marks")
    ax.barh([y - 0.2 for y in ys], mean, height=0.4, color="#b0b0b0", label="mean points")
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of scored submissions / % of the question's points")
    ax.set_title("Per-question pass rates")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return _png(fig)


def _table(headers: tuple[str, ...], rows: list[tuple], empty: str) -> str:
    """An HTML table; every cell is escaped here, so callers pass raw text."""
    if not rows:
        return f"<p class='empty'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_rows(s: Summary) -> list[tuple[str, str]]:
    scores = s.scores
    out = [
        ("submissions", str(s.total)),
        ("scored", f"{len(scores)} (graded, or stopped by a limit and scored)"),
        ("not graded", str(len(s.not_graded))),
        ("statuses", ", ".join(f"{k}: {v}" for k, v in s.statuses.items()) or "-"),
    ]
    if scores:
        out += [
            ("mean score", f"{statistics.fmean(scores):.2f} / {s.max_score:g}"),
            ("median score", f"{statistics.median(scores):g} / {s.max_score:g}"),
            ("lowest / highest", f"{min(scores):g} / {max(scores):g}"),
            ("full marks", f"{sum(x >= s.max_score for x in scores)} of {len(scores)}"),
        ]
    out.append(("free-text answers to read", f"{s.manual_answers} (see manual.csv)"))
    if s.isolation:
        out.append(("worker isolation", " | ".join(s.isolation)))
    if s.missing_results:
        out.append(("without result.json", ", ".join(s.missing_results)))
    return out


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f3f8; } td { white-space: pre-wrap; max-width: 40em; }
img { max-width: 100%; } .plots { display: flex; flex-wrap: wrap; gap: 1em; }
.meta, .empty { color: #666; } .warn { color: #a33; font-weight: bold; }
"""


def render_html(s: Summary) -> str:
    """The report page for a :class:`Summary` (all text escaped)."""
    esc = html.escape
    warn = ""
    if any(i.startswith("NOT sandboxed") for i in s.isolation):
        warn = "<p class='warn'>Some notebooks ran without the sandbox (see isolation).</p>"
    failing = [
        (f.question, f.name, f.visibility, f"{f.failed} of {f.seen}", f.typical_message)
        for f in s.failing
    ]
    questions = [
        (q.question, f"{q.mean:.2f} / {q.max_score:g}", f"{100 * q.full_marks:.0f}%")
        for q in s.questions
    ]
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        # an empty data: icon stops the browser from asking for /favicon.ico
        "<link rel='icon' href='data:,'>",
        f"<title>convgrade report: {esc(s.grades_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Class report: {esc(s.grades_dir.name)}</h1>",
        f"<p class='meta'>From {esc(str(s.grades_dir))}/grades.csv and result.json files.</p>",
        warn,
        "<h2>Summary</h2>",
        _table(("", "value"), _summary_rows(s), "no submissions"),
        "<h2>Plots</h2><div class='plots'>",
        f"<img alt='histogram of scores' src='{histogram_png(s.scores, s.max_score)}'>",
        f"<img alt='pass rate per question' src='{questions_png(s.questions)}'>"
        if s.questions
        else "",
        "</div>",
        "<h2>Questions</h2>",
        _table(("question", "mean points", "full marks"), questions, "no question columns"),
        f"<h2>Most common failing checks (top {TOP_FAILING})</h2>",
        _table(
            ("question", "check", "visibility", "failed", "most common message"),
            failing,
            "no check failed",
        ),
        "<h2>Not graded</h2>",
        _table(
            ("submission", "status", "reason"), list(s.not_graded), "every submission was graded"
        ),
        "<h2>Stopped by a limit (scored with what ran)</h2>",
        _table(("submission", "status", "what happened"), list(s.hit_limits), "none"),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
