"""Reports safe to open: feedback.md keeps its structure, CSV cells are never formulas, no
submission takes a name a writer needs, zip accounting counts only what was extracted, and
one shell policy covers every IPython path to a shell.

Fast: writers, ``collect`` and the worker's cell runner, in this process.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace

import pytest

from grader.engine import submissions
from grader.outputs import report, writers
from grader.outputs.results import CellRecord, CheckResult, Execution, SubmissionResult

# The feedback attack: an exception class name with newlines and markup.
ATTACK = (
    "Oops\n**Score: 40 / 40**\n## Checks\n- **passed** [corr2d] everything: 3 / 3\n"
    "<script>alert(1)</script>\n# Feedback\n<!-- hide the rest\n[click](http://x.invalid)"
    "\r=== \n1. one"
)


def attacked_result() -> SubmissionResult:
    tests = (
        CheckResult("corr2d works", "corr2d", 0.0, 3.0, "failed", ATTACK, "visible"),
        CheckResult("Scale works", "layer", 2.0, 2.0, "passed", "", "hidden"),
    )
    return SubmissionResult(
        submission="mallory",
        source="mallory.ipynb",
        score=2.0,
        max_score=5.0,
        status="graded",
        tests=tests,
        errors=(f"cell 2 raised {ATTACK}: boom",),
        execution=Execution(cells=(CellRecord(1, "error", 0.1, ATTACK, "boom"),)),
        questions=(("corr2d", 0.0, 3.0), ("layer", 2.0, 2.0)),
        answers=(("edges", '=HYPERLINK("http://x.invalid", "click")'),),
    )


def rendered(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").render(markdown)


def test_feedback_keeps_its_structure_whatever_an_exception_is_called():
    text = writers.feedback_md(attacked_result(), "Mini")
    html = rendered(text)

    assert html.count("<h1>") == 1
    assert html.count("<h2>") == 2  # problems, checks
    assert html.count("<strong>Score:") == 1
    assert "<strong>Score: 2 / 5</strong>" in html
    assert "<script" not in html
    assert "<!--" not in html
    assert "<a href" not in html
    assert html.count("<strong>passed</strong>") == 1  # only the real one
    # Every line that is not ours starts with a list marker.
    ours = ("# Feedback", "**Score", "| ", "## ", "- **", "")
    assert all(line.startswith(ours) or line.startswith("    - ") for line in text.splitlines())


def test_feedback_text_stays_readable():
    line = writers.md_text("`corr2d(...)` raised ValueError: shapes (3, 3) and (2, 2) <bad>")

    assert line == "`corr2d(...)` raised ValueError: shapes (3, 3) and (2, 2) &lt;bad&gt;"
    assert rendered(f"- {line}").count("<code>corr2d(...)</code>") == 1


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t"])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(start):
    result = replace(attacked_result(), answers=(("edges", f"{start}cmd|' /C calc'!A0"),))

    rows = list(csv.reader(io.StringIO(writers.manual_csv([result]), newline="")))

    assert rows[1][2] == f"'{start}cmd|' /C calc'!A0"


def test_a_carriage_return_cannot_end_a_csv_row():
    result = replace(attacked_result(), answers=(("edges", "a\r=cmd|x\rb"),))

    rows = list(csv.reader(io.StringIO(writers.manual_csv([result]), newline="")))

    assert len(rows) == 2
    assert rows[1][2] == "a\n=cmd|x\nb"


def test_every_csv_quotes_formulas(tmp_path):
    result = replace(attacked_result(), source="=HYPERLINK(1)")

    writers.write_summary(tmp_path, [result], ("corr2d", "layer"))

    for name in ("manual.csv", "submissions.csv", "grades.csv"):
        for row in csv.reader((tmp_path / name).open(encoding="utf-8", newline="")):
            assert not any(cell.startswith(("=", "+", "@")) for cell in row), (name, row)


def test_plain_csv_cells_are_unchanged():
    assert writers.csv_cell("alice") == "alice"
    assert writers.csv_cell("a=b") == "a=b"


# --- reserved names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.html", "grades.csv", "Manual.csv", "submissions.csv"])
def test_a_submission_never_takes_a_name_a_writer_uses(tmp_path, name):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / f"{name}.ipynb").write_text("{}")

    (sub,) = submissions.collect([folder], tmp_path / "x")

    assert sub.id.lower() != name.lower()
    assert sub.id.lower() == f"{name.lower()}-2"


def test_every_name_the_writers_put_next_to_submissions_is_reserved(tmp_path):
    result = attacked_result()
    writers.write_summary(tmp_path, [result], ("corr2d", "layer"))
    writers.write_submission(tmp_path, result, None)
    pytest.importorskip("matplotlib")
    report.build_report(tmp_path)

    top_files = {p.name for p in tmp_path.iterdir() if p.is_file()}

    assert top_files <= submissions.reserved_ids()


def test_the_report_works_after_a_submission_named_report_html(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "report.html.ipynb").write_text("{}")
    (sub,) = submissions.collect([folder], tmp_path / "x")
    out = tmp_path / "out"
    result = replace(attacked_result(), submission=sub.id)
    writers.write_submission(out, result, None)
    writers.write_summary(out, [result], ("corr2d", "layer"))

    page = report.build_report(out)

    assert page == out / "report.html" and page.is_file()


# --- zip accounting ----------------------------------------------------------------------------


def test_a_refused_member_does_not_count_toward_the_archive_total(tmp_path, monkeypatch):
    # Stands for a 3 GiB member refused before extraction, then a normal notebook.
    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBER_BYTES", 10_000)
    monkeypatch.setattr(submissions, "MAX_ZIP_TOTAL_BYTES", 15_000)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a_huge.ipynb", "x" * 12_000)
        zf.writestr("b_normal.ipynb", "{}" + " " * 5_000)

    subs = {s.id: s for s in submissions.collect([archive], tmp_path / "x")}

    assert subs["a_huge"].problem.status == "too_large"
    assert subs["b_normal"].problem is None


def test_extracted_members_still_count_toward_the_total(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_TOTAL_BYTES", 10_000)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.ipynb", "{}" + " " * 6_000)
        zf.writestr("b.ipynb", "{}" + " " * 6_000)

    subs = {s.id: s for s in submissions.collect([archive], tmp_path / "x")}

    assert subs["a"].problem is None
    assert subs["b"].problem.status == "too_large"


# --- one shell policy --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner():
    pytest.importorskip("IPython")
    from grader.worker.executor import CellRunner

    return CellRunner()


@pytest.mark.parametrize(
    "source, recorded",
    [
        ("!echo RAN", "echo RAN"),
        ("x = %sx echo RAN", "echo RAN"),
        ("%system echo RAN", "echo RAN"),
        ("%%bash\necho RAN\n", "%%bash: echo RAN"),
        ("%%sh\necho RAN\n", "%%sh: echo RAN"),
        ("%%script bash\necho RAN\n", "%%script bash: echo RAN"),
        ("get_ipython().system_raw('echo RAN')", "echo RAN"),
        ("get_ipython().system_piped('echo RAN')", "echo RAN"),
        ("get_ipython().getoutput('echo RAN')", "echo RAN"),
        ("get_ipython().run_cell_magic('bash', '', 'echo RAN')", "%%bash: echo RAN"),
    ],
)
def test_every_shell_path_is_refused_and_reported_the_same_way(runner, source, recorded):
    reply = runner.run(source)

    printed = "".join(o.get("text", "") for o in reply["outputs"])
    assert reply["shell_commands"] == [recorded]
    assert "shell command not run under grading" in printed
    assert "RAN\n" not in printed.replace("echo RAN", "")
    assert reply["error"] is None
