"""The Gradescope autograder zip, and grading with it offline in a fake ``/autograder``.

The generated ``run_autograder`` runs for real against a temp directory laid out like
Gradescope's (``source/``, ``submission/``, ``results/``), found through
``CONVGRADE_AUTOGRADER_ROOT``, with the current Python as ``python3``. ``setup.sh`` is not
run here: it would apt-get and pip install into this machine; the test only checks it is
there, executable and valid bash. A real Gradescope run is not part of the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.commands import gradescope
from grader.commands.gradescope import build_autograder
from grader.errors import StaffError

GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory, mini_assignment) -> Path:
    return build_autograder(mini_assignment, tmp_path_factory.mktemp("zip") / "autograder.zip")


def _members(zip_path: Path) -> dict[str, int]:
    """Member name -> Unix mode, as Gradescope's unzip would restore it."""
    with zipfile.ZipFile(zip_path) as zf:
        return {i.filename: i.external_attr >> 16 for i in zf.infolist()}


def _extract(zip_path: Path, dest: Path) -> None:
    # zipfile drops permission bits; put them back as unzip does
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode:
                os.chmod(dest / info.filename, stat.S_IMODE(mode))


def test_zip_holds_scripts_project_and_every_check(autograder_zip, mini_assignment):
    members = _members(autograder_zip)
    for script in ("setup.sh", "run_autograder"):
        assert script in members
        assert members[script] & 0o111 == 0o111, f"{script} must be executable"
    for needed in (
        "convgrade/pyproject.toml",
        "convgrade/README.md",
        "convgrade/grader/__init__.py",
        "convgrade/grader/commands/gradescope.py",
        "convgrade/grader/worker/zygote.py",
        "convgrade/reference/__init__.py",
        "assignment/assignment.toml",
    ):
        assert needed in members
    checks = {
        "assignment/checks/" + p.relative_to(mini_assignment / "checks").as_posix()
        for p in (mini_assignment / "checks").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert any("/hidden/" in c for c in checks)
    assert checks <= set(members), f"missing checks: {sorted(checks - set(members))}"
    for name in members:
        assert not name.startswith(("convgrade/tests/", ".git")), name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name


def test_zip_leaves_out_notebooks_and_examples(tmp_path, mini_assignment):
    asg = tmp_path / "asg"
    shutil.copytree(mini_assignment, asg)
    (asg / "source.ipynb").write_text('{"cells": [], "SOLUTION": true}')
    (asg / "student.ipynb").write_text("{}")
    (asg / "examples").mkdir(exist_ok=True)
    (asg / "examples" / "good.ipynb").write_text("{}")
    (asg / "checks" / "hidden" / "__pycache__").mkdir(exist_ok=True)
    (asg / "checks" / "hidden" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    members = _members(build_autograder(asg, tmp_path / "out" / "ag.zip"))
    assert not [m for m in members if m.endswith(".ipynb") or "examples" in m]
    assert not [m for m in members if "__pycache__" in m]


def test_zip_is_reproducible(tmp_path, mini_assignment):
    first = build_autograder(mini_assignment, tmp_path / "a.zip").read_bytes()
    assert build_autograder(mini_assignment, tmp_path / "b.zip").read_bytes() == first


def test_scripts_call_the_bundled_grader(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as zf:
        run = zf.read("run_autograder").decode()
        setup = zf.read("setup.sh").decode()
    assert run.startswith("#!/usr/bin/env bash")
    assert 'python3 -m grader.commands.gradescope run "$ROOT"' in run
    assert "${CONVGRADE_AUTOGRADER_ROOT:-/autograder}" in run
    assert "bubblewrap" in setup and "pip install" in setup and "./convgrade" in setup
    for script in (run, setup):  # bash parses them (setup.sh itself is not run here)
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_bad_assignment_is_a_staff_error(tmp_path):
    with pytest.raises(StaffError, match="assignment"):
        build_autograder(tmp_path / "nope", tmp_path / "ag.zip")


# ---------------------------------------------------------------- running run_autograder


@pytest.fixture
def autograder_root(tmp_path, autograder_zip) -> Path:
    """A directory laid out like Gradescope's /autograder, with the zip in source/."""
    root = tmp_path / "autograder"
    _extract(autograder_zip, root / "source")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def _run_autograder(root: Path) -> tuple[dict, str]:
    # The interpreter's own bin dir provides python3: a symlink elsewhere would point the
    # sandbox at a path it does not mount.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CONVGRADE_AUTOGRADER_ROOT": str(root),
    }
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(root / "source" / "run_autograder")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    _assert_gradescope_format(results)
    return results, proc.stdout


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _assert_gradescope_format(results: dict) -> None:
    """The fields of Gradescope's results.json specification that we fill in."""
    assert _is_number(results["score"])
    assert _is_number(results["execution_time"])
    assert isinstance(results.get("output", ""), str)
    assert isinstance(results["tests"], list) and results["tests"]
    for t in results["tests"]:
        assert isinstance(t["name"], str) and t["name"]
        assert _is_number(t["score"]) and _is_number(t["max_score"])
        assert t["status"] in {"passed", "failed"}
        assert isinstance(t["output"], str)
        assert t["visibility"] in GRADESCOPE_VISIBILITY
    assert "Traceback" not in json.dumps(results)


@pytest.mark.slow
@pytest.mark.parametrize(("notebook", "score"), [("good", 5), ("partial", 2)])
def test_run_autograder_grades_the_submission(autograder_root, engine_notebooks, notebook, score):
    shutil.copy(engine_notebooks / f"{notebook}.ipynb", autograder_root / "submission")
    results, stdout = _run_autograder(autograder_root)
    assert results["score"] == score
    assert sum(t["score"] for t in results["tests"]) == score
    assert sum(t["max_score"] for t in results["tests"]) == 5
    assert {t["visibility"] for t in results["tests"]} == {"visible", "after_published"}
    # the grader that ran is the bundled copy, not whatever convgrade is installed
    assert f"from {autograder_root / 'source' / 'convgrade' / 'grader'}" in stdout


@pytest.mark.parametrize(
    ("files", "expected"),
    [([], "no notebook"), (["a.ipynb", "sub/b.ipynb"], "2 notebooks (a.ipynb, sub/b.ipynb)")],
    ids=["none", "two"],
)
def test_run_autograder_wants_exactly_one_notebook(
    autograder_root, engine_notebooks, files, expected
):
    for name in files:
        target = autograder_root / "submission" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(engine_notebooks / "good.ipynb", target)
    (autograder_root / "submission" / "notes.txt").write_text("not a notebook")
    results, _ = _run_autograder(autograder_root)
    assert results["score"] == 0
    assert expected in results["output"]
    assert "Upload exactly one Jupyter notebook" in results["output"]
    assert results["tests"][0]["visibility"] == "visible"
    assert results["tests"][0]["max_score"] == 5


def test_run_autograder_hides_its_own_crash(autograder_root, engine_notebooks):
    shutil.copy(engine_notebooks / "good.ipynb", autograder_root / "submission")
    toml = autograder_root / "source" / "assignment" / "assignment.toml"
    toml.write_text("this is [not toml")
    results, stdout = _run_autograder(autograder_root)
    assert results["score"] == 0
    assert "problem on our side" in results["output"]
    assert "toml" not in json.dumps(results).lower()
    assert "Traceback" in stdout and "not valid TOML" in stdout  # staff see why
    assert results["stdout_visibility"] == "hidden"


def test_run_refuses_to_run_student_code_when_the_full_sandbox_cannot_start(
    autograder_root, engine_notebooks, monkeypatch, capsys
):
    # as in a container where bwrap starts a bare sandbox but not the full one
    monkeypatch.setattr(gradescope, "sandbox_works", lambda mode, hidden=(): (False, "no userns"))
    shutil.copy(engine_notebooks / "good.ipynb", autograder_root / "submission")
    assert gradescope.run(autograder_root) == 2
    results = json.loads((autograder_root / "results" / "results.json").read_text())
    _assert_gradescope_format(results)
    assert results["score"] == 0
    assert "could not be isolated safely" in results["output"]
    staff = capsys.readouterr().out
    assert "refusing to run student notebooks without a sandbox" in staff
    assert "no userns" in staff
    assert "isolation:" not in staff  # the notebook never ran


def test_run_autograder_exits_2_without_bubblewrap(autograder_root, engine_notebooks, tmp_path):
    """The real runner script, on a PATH where bwrap cannot be found."""
    shutil.copy(engine_notebooks / "good.ipynb", autograder_root / "submission")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    # python3 from its own folder: a symlink elsewhere would lose a venv's packages
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}"}
    env["CONVGRADE_AUTOGRADER_ROOT"] = str(autograder_root)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(autograder_root / "source" / "run_autograder")],
        cwd=autograder_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "apt-get install bubblewrap" in proc.stdout
    results = json.loads((autograder_root / "results" / "results.json").read_text())
    assert results["score"] == 0 and "could not be isolated safely" in results["output"]
