"""Writers: grades.csv, result.json, feedback.md and Gradescope's results.json.

The rendered files are compared with golden files in ``tests/golden/`` through one
normalisation function; every registered output format must have its golden file. After an
intended change of the output (or for a new format), regenerate them with::

    UPDATE_GOLDEN=1 python -m pytest tests/test_writers.py

and review the diff of ``tests/golden/`` before committing it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from grader.outputs import renderers, writers
from grader.outputs.results import CellRecord, CheckResult, Execution, SubmissionResult

GOLDEN = Path(__file__).parent / "golden"
QUESTIONS = ("corr2d", "layer")

HIDDEN_NODEID = "checks/hidden/test_corr2d.py::test_secret_rectangular_case"
STAFF_TRACEBACK = (
    "--- " + HIDDEN_NODEID + "\n"
    "    def test_secret_rectangular_case(student):\n"
    "        X = np.arange(35.0).reshape(5, 7)\n"
    "E       AssertionError"
)

# --- helpers -------------------------------------------------------------------------------


def normalise(text: str, tmp_path: Path) -> str:
    """The one place that makes rendered output comparable across runs and machines."""
    text = text.replace(str(tmp_path), "<tmp>")
    text = re.sub(
        r'"(duration|checks_duration|execution_time)": [0-9.e+-]+', r'"\1": <seconds>', text
    )
    return text


def check_golden(name: str, text: str, tmp_path: Path) -> None:
    text = normalise(text, tmp_path)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from {path}; if the change is intended, run with UPDATE_GOLDEN=1"
    )


def graded_result(tmp_path: Path, submission: str = "alice") -> SubmissionResult:
    """A graded submission: one public pass, one hidden failure, one public pass."""
    tests = (
        CheckResult(
            name="corr2d reproduces the book's 3x3 example",
            question="corr2d",
            score=1.0,
            max_score=1.0,
            status="passed",
            message="",
            visibility="visible",
            nodeid="checks/public/test_corr2d.py::test_book_example",
        ),
        CheckResult(
            name="corr2d works on a rectangular input",
            question="corr2d",
            score=0.0,
            max_score=2.0,
            status="failed",
            message="corr2d(X, K) returned shape (4, 6); expected shape (3, 5)",
            visibility="hidden",
            nodeid=HIDDEN_NODEID,
        ),
        CheckResult(
            name="Conv2D learns a bias",
            question="layer",
            score=2.0,
            max_score=2.0,
            status="passed",
            message="",
            visibility="visible",
            nodeid="checks/public/test_layer.py::test_bias",
        ),
    )
    execution = Execution(
        cells=(
            CellRecord(0, "ok", 0.125),
            CellRecord(1, "error", 0.5, "ValueError", "shapes do not match"),
            CellRecord(2, "ok", 1.0),
        ),
        duration=3.25,
        checks_duration=0.75,
        isolation="namespaces + seccomp",
        restarts=0,
        shell_commands=("pip install d2l",),
        notes=("converted from nbformat 3 to nbformat 4",),
    )
    return SubmissionResult(
        submission=submission,
        source=str(tmp_path / "submissions" / f"{submission}.ipynb"),
        score=3.0,
        max_score=5.0,
        status="graded",
        tests=tests,
        errors=("cell 2 raised ValueError: shapes do not match",),
        execution=execution,
        questions=(("corr2d", 1.0, 3.0), ("layer", 2.0, 2.0)),
        answers=(("edges", "The kernel [1, -1] finds vertical edges."),),
        staff_details=STAFF_TRACEBACK,
        fingerprint="0123abcd",
    )


def not_graded_result(tmp_path: Path, submission: str = "bob") -> SubmissionResult:
    message = "the file is not valid JSON; a notebook is a JSON document."
    tests = tuple(
        CheckResult(
            t.name,
            t.question,
            0.0,
            t.max_score,
            "failed",
            f"not graded: {message}",
            t.visibility,
            t.nodeid,
        )
        for t in graded_result(tmp_path).tests
    )
    return SubmissionResult(
        submission=submission,
        source=f"{tmp_path / 'class.zip'}:{submission}/hw.ipynb",
        score=0.0,
        max_score=5.0,
        status="not_notebook",
        tests=tests,
        errors=(message,),
        execution=Execution(isolation="namespaces + seccomp"),
        questions=(("corr2d", 0.0, 3.0), ("layer", 0.0, 2.0)),
    )


def executed_notebook() -> nbformat.NotebookNode:
    """A run notebook whose file is the same on every run (fixed cell ids)."""
    output = nbformat.v4.new_output("stream", name="stdout", text="3\n")
    cells = [
        nbformat.v4.new_markdown_cell("# Convolutions", id="intro"),
        nbformat.v4.new_code_cell("print(1 + 2)", id="sum", execution_count=1, outputs=[output]),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- golden files --------------------------------------------------------------------------


def test_grades_csv_matches_golden(tmp_path):
    results = [
        not_graded_result(tmp_path, "zoe"),
        graded_result(tmp_path),
        not_graded_result(tmp_path),
    ]

    check_golden("grades.csv", writers.grades_csv(results, QUESTIONS), tmp_path)


@pytest.mark.parametrize("kind", ["graded", "not_graded"])
def test_submission_files_match_golden(tmp_path, kind):
    result = graded_result(tmp_path) if kind == "graded" else not_graded_result(tmp_path)
    out = tmp_path / "out"

    writers.write_submission(out, result, None, title="Convolutions for Images")

    for name in ("result.json", "feedback.md", "results.json"):
        text = (out / result.submission / name).read_text(encoding="utf-8")
        check_golden(f"{kind}.{name}", text, tmp_path)


# Every registered format, so that a new one is one renderer plus its golden file.
SUBMISSION_FILES = [r.file_name for r in renderers.submission_renderers()]
BATCH_FILES = [r.file_name for r in renderers.batch_renderers()]


@pytest.mark.parametrize("name", SUBMISSION_FILES)
def test_every_submission_format_matches_its_golden_files(tmp_path, name):
    cases = [
        ("graded", graded_result(tmp_path), executed_notebook()),
        ("not_graded", not_graded_result(tmp_path), None),
    ]
    written = []
    for kind, result, executed in cases:
        out = tmp_path / kind
        writers.write_submission(out, result, executed, title="Convolutions for Images")
        path = out / result.submission / name
        if path.exists():
            check_golden(f"{kind}.{name}", path.read_text(encoding="utf-8"), tmp_path)
            written.append(kind)
        else:  # no file for this case, so no golden file either
            assert not (GOLDEN / f"{kind}.{name}").exists()

    assert written, f"the {name} format wrote nothing for any case, so it has no golden file"


@pytest.mark.parametrize("name", BATCH_FILES)
def test_every_batch_format_matches_its_golden_file(tmp_path, name):
    results = [
        not_graded_result(tmp_path, "zoe"),
        graded_result(tmp_path),
        not_graded_result(tmp_path),
    ]
    out = tmp_path / "out"

    writers.write_summary(out, results, QUESTIONS)

    check_golden(name, (out / name).read_text(encoding="utf-8"), tmp_path)


def test_normalise_masks_paths_and_durations_only(tmp_path):
    text = f'{{"source": "{tmp_path}/a.ipynb", "duration": 1.25, "score": 3.5}}'

    assert (
        normalise(text, tmp_path)
        == '{"source": "<tmp>/a.ipynb", "duration": <seconds>, "score": 3.5}'
    )


# --- grades.csv ----------------------------------------------------------------------------


def test_grades_csv_has_one_row_per_submission_sorted_by_id(tmp_path):
    results = [
        not_graded_result(tmp_path, "zoe"),
        graded_result(tmp_path, "alice"),
        not_graded_result(tmp_path, "bob"),
        graded_result(tmp_path, "Alice-2"),
    ]

    rows = list(csv.reader(io.StringIO(writers.grades_csv(results, QUESTIONS))))

    assert rows[0] == ["submission", "score", "max_score", "status", "corr2d", "layer"]
    assert [r[0] for r in rows[1:]] == ["Alice-2", "alice", "bob", "zoe"]
    assert rows[2] == ["alice", "3", "5", "graded", "1", "2"]
    assert rows[3] == ["bob", "0", "5", "not_notebook", "0", "0"]


def test_grades_csv_question_columns_follow_the_assignment_order(tmp_path):
    text = writers.grades_csv([graded_result(tmp_path)], ("layer", "corr2d", "extra"))

    header, row = list(csv.reader(io.StringIO(text)))
    assert header[4:] == ["layer", "corr2d", "extra"]
    assert row[4:] == ["2", "1", "0"]  # a question the result does not know scores 0


def test_grades_csv_without_results_is_just_the_header():
    assert writers.grades_csv([], QUESTIONS) == "submission,score,max_score,status,corr2d,layer\n"


def test_grades_csv_keeps_fractional_points(tmp_path):
    result = graded_result(tmp_path)
    result = replace(result, score=2.5, questions=(("corr2d", 0.5, 3.0), ("layer", 2.0, 2.0)))

    _, row = list(csv.reader(io.StringIO(writers.grades_csv([result], QUESTIONS))))
    assert row == ["alice", "2.5", "5", "graded", "0.5", "2"]


def test_write_summary_writes_grades_submissions_and_manual_csv(tmp_path):
    out = tmp_path / "out"
    results = [graded_result(tmp_path), not_graded_result(tmp_path)]

    writers.write_summary(out, results, QUESTIONS)

    assert files_in(out) == ["grades.csv", "manual.csv", "submissions.csv"]
    sources = list(csv.DictReader((out / "submissions.csv").open(encoding="utf-8")))
    assert [(r["submission"], r["source"]) for r in sources] == [
        ("alice", results[0].source),
        ("bob", results[1].source),
    ]
    manual = list(csv.DictReader((out / "manual.csv").open(encoding="utf-8")))
    assert manual == [
        {"submission": "alice", "question": "edges", "text": results[0].answers[0][1]}
    ]


# --- atomic writes -------------------------------------------------------------------------


def test_atomic_write_creates_folders_and_leaves_only_the_target(tmp_path):
    target = tmp_path / "a" / "b" / "grades.csv"

    writers.atomic_write(target, "x,y\n1,2\n")

    assert target.read_text(encoding="utf-8") == "x,y\n1,2\n"
    assert files_in(tmp_path / "a") == ["b", "b/grades.csv"]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "grades.csv"
    target.write_text("old\n")

    writers.atomic_write(target, "new\n")

    assert target.read_text() == "new\n"
    assert files_in(tmp_path) == ["grades.csv"]


def test_atomic_write_files_get_the_usual_permissions(tmp_path):
    # A temporary file is created owner-only (0600); staff sharing the results need the
    # permissions an ordinary new file gets.
    target = tmp_path / "grades.csv"

    writers.atomic_write(target, "x\n")

    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()


@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "interrupted"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["over-old-file", "new-file"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path, monkeypatch, failure, existing
):
    target = tmp_path / "grades.csv"
    if existing:
        target.write_text("old complete file\n")

    def fail(fd):
        raise failure

    monkeypatch.setattr(writers.os, "fsync", fail)  # the data is written, then the disk fails
    with pytest.raises(type(failure)):
        writers.atomic_write(target, "new\n" * 10_000)

    if existing:
        assert target.read_text() == "old complete file\n"
        assert files_in(tmp_path) == ["grades.csv"]
    else:
        assert files_in(tmp_path) == []


def test_text_that_cannot_be_encoded_leaves_no_file(tmp_path):
    target = tmp_path / "feedback.md"

    with pytest.raises(UnicodeEncodeError):
        writers.atomic_write(target, "ok so far " * 1000 + "\udc80")

    assert files_in(tmp_path) == []


def test_the_target_is_never_half_written(tmp_path, monkeypatch):
    # Observe the only moment the target changes: it must go from the old content to the
    # complete new content in one rename.
    target = tmp_path / "grades.csv"
    target.write_text("old\n")
    new_text = "row\n" * 50_000
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(dst).read_text(), Path(src).read_text(), Path(src).parent))
        real_replace(src, dst)

    monkeypatch.setattr(writers.os, "replace", spy)
    writers.atomic_write(target, new_text)

    assert len(seen) == 1
    before, temp_content, temp_dir = seen[0]
    assert before == "old\n"
    assert temp_content == new_text
    assert temp_dir == tmp_path  # same folder, so the rename is atomic
    assert target.read_text() == new_text


# --- result.json ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["graded", "not_graded"])
def test_result_json_round_trips_through_from_dict(tmp_path, kind):
    result = graded_result(tmp_path) if kind == "graded" else not_graded_result(tmp_path)

    data = json.loads(writers.result_json(result))

    assert SubmissionResult.from_dict(data) == result


def test_result_json_has_the_documented_keys(tmp_path):
    data = json.loads(writers.result_json(graded_result(tmp_path)))

    assert {"submission", "score", "max_score", "status", "tests", "errors", "execution"} <= set(
        data
    )
    assert data["graded"] is True
    for test in data["tests"]:
        assert {"name", "question", "score", "max_score", "status", "message", "visibility"} <= set(
            test
        )
        assert test["status"] in {"passed", "failed"}


def test_load_result_reads_back_what_write_submission_wrote(tmp_path):
    out = tmp_path / "out"
    result = graded_result(tmp_path)

    writers.write_submission(out, result, None)

    assert writers.load_result(out, "alice") == result


@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "{not json",
        "[]",
        '{"score": 1}',
        '{"submission": "a", "score": 1, '
        '"max_score": 2, "status": "graded", "tests": [{"bogus": 1}]}',
    ],
    ids=["missing", "empty", "not-json", "list", "missing-keys", "bad-test-entry"],
)
def test_load_result_gives_none_for_a_missing_or_broken_file(tmp_path, content):
    if content is not None:
        (tmp_path / "alice").mkdir()
        (tmp_path / "alice" / "result.json").write_text(content)

    assert writers.load_result(tmp_path, "alice") is None


# --- Gradescope results.json ---------------------------------------------------------------

GRADESCOPE_VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.mark.parametrize("kind", ["graded", "not_graded"])
def test_gradescope_json_is_valid(tmp_path, kind):
    result = graded_result(tmp_path) if kind == "graded" else not_graded_result(tmp_path)

    data = json.loads(json.dumps(writers.gradescope_json(result), allow_nan=False))

    assert isinstance(data["score"], (int, float)) and data["score"] == result.score
    assert isinstance(data["execution_time"], (int, float)) and data["execution_time"] >= 0
    assert data["stdout_visibility"] in GRADESCOPE_VISIBILITIES
    assert isinstance(data["output"], str)
    assert len(data["tests"]) == len(result.tests)
    for test, check in zip(data["tests"], result.tests, strict=True):
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["name"] == check.name
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in {"passed", "failed"}
        assert test["visibility"] in GRADESCOPE_VISIBILITIES
        assert isinstance(test["output"], str)
        if test["status"] == "failed":
            assert test["output"], "a failed test must say why"
    assert sum(t["score"] for t in data["tests"]) == data["score"]


def test_gradescope_execution_time_is_notebook_plus_checks(tmp_path):
    assert writers.gradescope_json(graded_result(tmp_path))["execution_time"] == 4.0


def test_gradescope_shows_hidden_checks_after_publishing(tmp_path):
    tests = writers.gradescope_json(graded_result(tmp_path))["tests"]

    assert [t["visibility"] for t in tests] == ["visible", "after_published", "visible"]


# --- feedback.md ---------------------------------------------------------------------------


def test_feedback_for_a_hidden_failing_check_shows_name_and_message_only(tmp_path):
    out = tmp_path / "out"
    result = graded_result(tmp_path)

    writers.write_submission(out, result, None)

    hidden = result.tests[1]
    for name in ("feedback.md", "results.json"):  # both are shown to students
        text = (out / "alice" / name).read_text(encoding="utf-8")
        assert hidden.name in text
        assert hidden.message in text
        assert hidden.nodeid not in text
        assert "test_secret_rectangular_case" not in text
        assert "checks/hidden" not in text
        assert "np.arange(35.0)" not in text  # the check's source, from staff_details
    feedback = (out / "alice" / "feedback.md").read_text(encoding="utf-8")
    assert f"**FAILED** [corr2d] {hidden.name} (hidden check): 0 / 2" in feedback


def test_feedback_lists_every_check_with_points(tmp_path):
    feedback = writers.feedback_md(graded_result(tmp_path))

    assert "**Score: 3 / 5**" in feedback
    assert "| corr2d | 1 / 3 |" in feedback
    assert "| layer | 2 / 2 |" in feedback
    assert "- **passed** [corr2d] corr2d reproduces the book's 3x3 example: 1 / 1" in feedback
    assert "- **passed** [layer] Conv2D learns a bias: 2 / 2" in feedback
    assert "cell 2 raised ValueError: shapes do not match" in feedback


def test_feedback_for_a_submission_that_could_not_be_graded_says_why(tmp_path):
    feedback = writers.feedback_md(not_graded_result(tmp_path))

    assert "Your submission could not be graded: the file is not valid JSON" in feedback
    assert "**Score: 0 / 5**" in feedback


def test_feedback_shows_at_most_eight_lines_of_a_message(tmp_path):
    result = graded_result(tmp_path)
    long = CheckResult(
        "long", "corr2d", 0.0, 1.0, "failed", "\n".join(f"line {i}" for i in range(20)), "visible"
    )
    result = replace(result, tests=(long,))

    feedback = writers.feedback_md(result)

    assert "line 7" in feedback
    assert "line 8" not in feedback


# --- one folder per submission -------------------------------------------------------------


def test_write_submission_writes_the_four_files_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])

    writers.write_submission(out, graded_result(tmp_path), executed)

    assert files_in(out) == [
        "alice",
        "alice/executed.ipynb",
        "alice/feedback.md",
        "alice/result.json",
        "alice/results.json",
    ]
    assert nbformat.reads((out / "alice" / "executed.ipynb").read_text(), as_version=4) == executed


def test_writing_twice_gives_identical_files(tmp_path):
    out = tmp_path / "out"
    result = graded_result(tmp_path)

    writers.write_submission(out, result, None)
    first = {p: (out / p).read_bytes() for p in files_in(out) if (out / p).is_file()}
    writers.write_submission(out, result, None)
    second = {p: (out / p).read_bytes() for p in files_in(out) if (out / p).is_file()}

    assert first == second
