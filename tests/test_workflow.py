"""The instructor, student and CI commands, run for real on the mini assignment."""

from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.commands.cli import run

pytestmark = pytest.mark.slow


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def mini_copy(tmp_path, mini_assignment) -> Path:
    dest = tmp_path / "mini"
    shutil.copytree(mini_assignment, dest)
    return dest


@pytest.fixture(scope="module")
def release(tmp_path_factory, mini_assignment):
    out = tmp_path_factory.mktemp("release")
    code, stdout, stderr = cli("assign", str(mini_assignment), "--out", str(out))
    assert code == 0, stderr
    return out


def test_assign_writes_the_student_notebook_and_zip(release):
    nb = nbformat.read(release / "student.ipynb", as_version=4)
    sources = "\n".join(c.source for c in nb.cells)
    assert "raise NotImplementedError" in sources
    assert "windows = [[" not in sources
    names = zipfile.ZipFile(release / "mini-student.zip").namelist()
    assert sorted(names) == [
        "mini/assignment.toml",
        "mini/checks/public/test_corr2d.py",
        "mini/student.ipynb",
    ]


def test_assign_refuses_a_solution_that_does_not_score_the_maximum(mini_copy, tmp_path):
    source = nbformat.read(mini_copy / "source.ipynb", as_version=4)
    for cell in source.cells:
        cell.source = cell.source.replace("* K).sum()", "* K[::-1, ::-1]).sum()")
    nbformat.write(source, mini_copy / "source.ipynb")
    code, _, err = cli("assign", str(mini_copy), "--out", str(tmp_path / "rel"))
    assert code == 2
    assert "refusing to build the student release" in err
    assert "the solution scores 2/5" in err
    assert not (tmp_path / "rel").exists()


def test_assign_refuses_a_template_that_scores_points(mini_copy, tmp_path):
    source = nbformat.read(mini_copy / "source.ipynb", as_version=4)
    # Move the Scale solution out of its solution region: the template keeps it.
    source.cells[2].source = (
        source.cells[2].source.replace("# BEGIN SOLUTION\n", "").replace("# END SOLUTION\n", "")
    )
    nbformat.write(source, mini_copy / "source.ipynb")
    code, _, err = cli("assign", str(mini_copy), "--out", str(tmp_path / "rel"))
    assert code == 2
    assert "the student notebook scores 2 before any work" in err


def test_check_works_from_the_unpacked_student_zip_alone(release, tmp_path, engine_notebooks):
    with zipfile.ZipFile(release / "mini-student.zip") as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "mini"
    assert not (folder / "checks" / "hidden").exists()
    shutil.copy(engine_notebooks / "good.ipynb", folder / "mine.ipynb")
    code, out, _ = cli("check", str(folder / "mine.ipynb"))
    assert code == 0
    assert "corr2d on a 3x3 example" in out
    assert "1 of 1 public checks passed" in out
    assert "hidden" not in out.split("Hidden checks")[0]

    code, out, _ = cli("check", str(folder / "student.ipynb"))
    assert code == 1
    assert "FAILED" in out and "NotImplementedError" in out


def test_check_inside_a_notebook_prints_the_same_table(
    release, tmp_path, engine_notebooks, capsys, monkeypatch
):
    from grader.commands.check import check_notebook

    with zipfile.ZipFile(release / "mini-student.zip") as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "mini"
    shutil.copy(engine_notebooks / "partial.ipynb", folder / "mine.ipynb")
    monkeypatch.setenv("JPY_SESSION_NAME", str(folder / "mine.ipynb"))
    assert check_notebook() is False
    printed = capsys.readouterr().out
    assert "corr2d(X, K) is wrong at index" in printed
    _, table, _ = cli("check", str(folder / "mine.ipynb"))
    assert printed == table


def test_check_missing_notebook_is_a_usage_error():
    code, _, err = cli("check", "no/such/notebook.ipynb")
    assert code == 2
    assert "does not exist" in err


def test_validate_passes_on_a_good_assignment_and_writes_junit(mini_assignment, tmp_path):
    junit = tmp_path / "v.xml"
    code, out, _ = cli("validate", str(mini_assignment), "--junit", str(junit))
    assert code == 0, out
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    names = [case.get("name") for case in suite.iter("testcase")]
    assert "solution scores the maximum" in names
    assert "example partial scores 2" in names


def test_validate_fails_on_a_stale_student_notebook_and_wrong_expectations(mini_copy, tmp_path):
    student = nbformat.read(mini_copy / "student.ipynb", as_version=4)
    student.cells[1].source += "\n# edited by hand"
    nbformat.write(student, mini_copy / "student.ipynb")
    (mini_copy / "examples" / "expected.toml").write_text("good = 5\npartial = 3\n")
    junit = tmp_path / "v.xml"
    code, out, _ = cli("validate", str(mini_copy), "--junit", str(junit))
    assert code == 1
    assert "FAIL  committed student.ipynb matches the source" in out
    assert "FAIL  example partial scores 3" in out
    failed = [
        c.get("name")
        for c in ET.parse(junit).getroot().iter("testcase")
        if c.find("failure") is not None
    ]
    assert failed == ["committed student.ipynb matches the source", "example partial scores 3"]
