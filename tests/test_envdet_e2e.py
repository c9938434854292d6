"""End to end: identical re-grades, secret hidden inputs, the grading environment, manual.csv.

Real CLI, real sandboxed workers, real TensorFlow. The notebooks are made by
tests/fixtures/envdet/make_envdet_fixtures.py.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader.commands.cli import run
from grader.engine import seeding

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ENVDET = ROOT / "tests" / "fixtures" / "envdet"
MINI = ROOT / "tests" / "fixtures" / "mini"
CONV = ROOT / "assignments" / "convolutions"
HIDDEN_CORR2D = "checks/hidden/test_corr2d_hidden.py::test_random_non_square"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def without_times(value):
    """A result.json with every time field dropped (durations differ run to run)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if "duration" not in k}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def results(out: Path) -> dict[str, dict]:
    return {
        p.parent.name: without_times(json.loads(p.read_text())) for p in out.glob("*/result.json")
    }


# -- A. determinism ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regrades(tmp_path_factory):
    """One randomness-dependent notebook (and a copy with one more comment line), graded
    warm with --jobs 2, re-graded with --force --jobs 1, and graded with fresh workers."""
    subs = tmp_path_factory.mktemp("subs")
    shutil.copy(ENVDET / "conv_random_learner.ipynb", subs / "learner.ipynb")
    shutil.copy(ENVDET / "conv_answers_elsewhere.ipynb", subs / "answers.ipynb")
    nb = nbformat.read(ENVDET / "conv_random_learner.ipynb", as_version=4)
    nb.cells[1].source = "# the same code, one comment more\n" + nb.cells[1].source
    nbformat.write(nb, subs / "learner_comment.ipynb")
    # A copy of this checkout's assignment: "-a convolutions" would resolve through the
    # installed package, and grading makes the secret in the folder it grades with.
    asg = tmp_path_factory.mktemp("asg") / "convolutions"
    shutil.copytree(CONV, asg, ignore=shutil.ignore_patterns("secret", "examples"))
    warm = tmp_path_factory.mktemp("warm")
    fresh = tmp_path_factory.mktemp("fresh")
    runs = []
    for out, extra in ((warm, ["--jobs", "2"]), (warm, ["--jobs", "1", "--force"])):
        code, _, err = cli("grade", str(subs), "-a", str(asg), "--out", str(out), *extra)
        assert code == 0, err
        runs.append(results(out))
    code, _, err = cli("grade", str(subs), "-a", str(asg), "--out", str(fresh), "--fresh-workers")
    assert code == 0, err
    runs.append(results(fresh))
    return {"runs": runs, "warm": warm}


def test_regrades_give_identical_results(regrades):
    first, forced, fresh = regrades["runs"]
    assert set(first) == {"learner", "learner_comment", "answers"}
    assert forced == first  # --force, --jobs 1 instead of 2
    assert fresh == first  # a fresh zygote per worker instead of a warm one
    # The last cell's error names an object by its address, which differs between runs.
    assert any("not a layer: <object object at 0x...>" in e for e in first["learner"]["errors"])


def test_the_notebook_really_depends_on_randomness(regrades):
    """Without this, identical re-grades would prove nothing: the same code with one more
    comment gets other seeds, and its learned kernels differ."""
    first = regrades["runs"][0]

    def learn_messages(sub):
        return [t["message"] for t in first[sub]["tests"] if t["question"] == "learn_kernel"]

    assert first["learner"]["questions"] != [] and first["learner"]["score"] < 40
    assert learn_messages("learner") != learn_messages("learner_comment")


def test_manual_csv_finds_answers_typed_outside_the_tagged_cell(regrades):
    with open(regrades["warm"] / "manual.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["submission"] == "answers"]
    found = {r["question"]: r["text"] for r in rows}
    assert set(found) == {"diagonal", "gradient", "matmul", "kernels"}
    for question in ("diagonal", "gradient", "matmul"):
        assert f"{question.upper()}-ANSWER" in found[question]
    assert found["kernels"].startswith("[MISSING]")


# -- B. hidden inputs stay secret -------------------------------------------------------------


def _mini_nb(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.read(ENVDET / "mini_good.ipynb", as_version=4)
    nb = copy.deepcopy(nb)
    nb.cells = nb.cells[:1] + [nbformat.v4.new_code_cell(s) for s in sources]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def _hidden_inputs(nb: nbformat.NotebookNode, secret: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The inputs the hidden corr2d check draws for this notebook (as the check does)."""
    key = seeding.content_key(c.source for c in nb.cells if c.cell_type == "code")
    rng = np.random.default_rng(seeding.check_seed(key, HIDDEN_CORR2D, secret))
    return rng.normal(size=(5, 7)), rng.normal(size=(2, 3))


ZEROS = "    return np.zeros((X.shape[0] - K.shape[0] + 1, X.shape[1] - K.shape[1] + 1))\n"


def _corr(X, K):
    h, w = K.shape
    return np.array(
        [
            [(X[i : i + h, j : j + w] * K).sum() for j in range(X.shape[1] - w + 1)]
            for i in range(X.shape[0] - h + 1)
        ]
    )


@pytest.fixture(scope="module")
def mini_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asg") / "mini"
    shutil.copytree(MINI, folder, ignore=shutil.ignore_patterns("secret"))
    toml = folder / "assignment.toml"
    toml.write_text(
        toml.read_text() + '\n[environment]\npackages = ["numpy", "IPython", "matplotlib"]\n'
    )
    return folder


def test_a_table_of_hidden_inputs_learned_from_one_submission_fails_on_the_next(
    mini_copy, tmp_path
):
    first = _mini_nb("import numpy as np\n\ndef corr2d(X, K):\n" + ZEROS)
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(first, subs / "first.ipynb")
    code, _, err = cli("grade", str(subs), "-a", str(mini_copy), "--out", str(tmp_path / "o1"))
    assert code == 0, err
    secret = seeding.assignment_secret(mini_copy)
    X, K = _hidden_inputs(first, secret)
    # The inputs worked out here are those the check used: its message names the first
    # expected entry, which is corr2d of exactly these inputs.
    r1 = json.loads((tmp_path / "o1" / "first" / "result.json").read_text())
    [hidden] = [t for t in r1["tests"] if t["nodeid"] == HIDDEN_CORR2D]
    expected = float(re.search(r"expected (\S+) ", hidden["message"]).group(1))
    assert expected == pytest.approx(_corr(X, K)[0, 0], rel=1e-5)
    # The next submission answers from a table of what the first one was asked.
    table = {"X": X.tolist(), "K": K.tolist(), "Y": _corr(X, K).tolist()}
    replay = _mini_nb(
        f"import numpy as np\nTABLE = {json.dumps(table)}\n\n"
        "def corr2d(X, K):\n"
        "    X, K = np.asarray(X), np.asarray(K)\n"
        "    if np.allclose(X, TABLE['X']) and np.allclose(K, TABLE['K']):\n"
        "        return np.array(TABLE['Y'])\n" + ZEROS
    )
    (subs / "first.ipynb").unlink()
    nbformat.write(replay, subs / "replay.ipynb")
    code, _, err = cli("grade", str(subs), "-a", str(mini_copy), "--out", str(tmp_path / "o2"))
    assert code == 0, err
    r2 = json.loads((tmp_path / "o2" / "replay" / "result.json").read_text())
    [hidden] = [t for t in r2["tests"] if t["nodeid"] == HIDDEN_CORR2D]
    assert hidden["status"] == "failed" and "is wrong at index (0, 0)" in hidden["message"]


def test_a_leaking_exception_message_reaches_feedback_as_one_short_line(mini_copy, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(ENVDET / "mini_leaky.ipynb", subs / "leaky.ipynb")
    out = tmp_path / "out"
    code, _, err = cli("grade", str(subs), "-a", str(mini_copy), "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "leaky" / "result.json").read_text())
    [hidden] = [t for t in result["tests"] if t["nodeid"] == HIDDEN_CORR2D]
    lead = "your code raised an error when the check called `corr2d(...)`: ValueError: "
    assert hidden["message"].startswith(lead + "LEAK:"), hidden["message"]
    assert len(hidden["message"]) <= len(lead) + 80 + 6
    feedback = (out / "leaky" / "feedback.md").read_text()
    blobs = re.findall(r"LEAK:(\S+)", feedback)
    assert blobs and all(len(b) <= 80 for b in blobs)
    # Not one hidden input in any form the student sees: the blob is cut and sanitised.
    X, _ = _hidden_inputs(
        nbformat.read(subs / "leaky.ipynb", as_version=4), seeding.assignment_secret(mini_copy)
    )
    for name in ("feedback.md", "results.json"):
        text = (out / "leaky" / name).read_text()
        assert f"{X[0, 0]:.6f}"[:7] not in text


# -- C. the grading environment ---------------------------------------------------------------


@pytest.fixture(scope="module")
def environment(mini_copy, tmp_path_factory):
    subs = tmp_path_factory.mktemp("envsubs")
    for name in (
        "mini_good",
        "mini_scipy_import_cell",
        "mini_scipy_in_corr2d",
        "mini_scipy_inside_function",
        "mini_d2l_first",
        "mini_dl_first",
        "mini_d2l_used",
    ):
        shutil.copy(ENVDET / f"{name}.ipynb", subs / f"{name.removeprefix('mini_')}.ipynb")
    out = tmp_path_factory.mktemp("envout")
    code, stdout, err = cli("grade", str(subs), "-a", str(mini_copy), "--out", str(out))
    assert code == 0, err
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    return {"out": out, "rows": rows, "stdout": stdout}


def test_a_failed_import_in_the_import_cell_costs_nothing_the_functions_do_not_need(
    environment,
):
    rows = environment["rows"]
    assert rows["good"]["score"] == "5"
    assert rows["scipy_import_cell"]["score"] == "5"  # import scipy.signal, then defs
    assert rows["d2l_first"]["score"] == "5"  # from d2l import tensorflow as d2l
    assert rows["dl_first"]["score"] == "5"  # the chapter's spelling


@pytest.mark.parametrize("sub", ["scipy_in_corr2d", "scipy_inside_function"])
def test_corr2d_built_on_scipy_loses_its_points_naming_scipy(environment, sub):
    assert (environment["rows"][sub]["corr2d"], environment["rows"][sub]["layer"]) == ("0", "2")
    result = json.loads((environment["out"] / sub / "result.json").read_text())
    for test in result["tests"]:
        if test["question"] == "corr2d":
            assert "scipy is not available in the grading environment" in test["message"]


def test_a_used_book_helper_fails_with_a_message_that_names_it(environment):
    result = json.loads((environment["out"] / "d2l_used" / "result.json").read_text())
    messages = [t["message"] for t in result["tests"] if t["question"] == "corr2d"]
    assert messages and all("d2l.corr2d: a book helper" in m for m in messages)


def test_unavailable_imports_come_first_in_feedback_and_in_the_grade_output(environment):
    feedback = (environment["out"] / "scipy_import_cell" / "feedback.md").read_text()
    first_paragraph = feedback.split("\n\n")[2]  # title, score, then this
    assert first_paragraph.startswith("imports grading cannot satisfy: scipy (cell 2, line 2;")
    assert environment["stdout"].startswith(
        ("d2l_used: book helpers", "scipy_import_cell: imports grading cannot satisfy")
    )
    good = (environment["out"] / "good" / "feedback.md").read_text()
    assert "imports grading cannot satisfy" not in good


def test_convgrade_check_lists_unavailable_imports_at_the_top(mini_copy):
    code, out, _ = cli(
        "check", str(ENVDET / "mini_scipy_in_corr2d.ipynb"), "--assignment", str(mini_copy)
    )
    assert code == 1
    assert out.startswith("imports grading cannot satisfy: scipy (cell 2, line 2)")
    assert "scipy is not available in the grading environment" in out
