"""A second assignment, written from docs/assignment-format.md alone, needs no engine change.

``tests/fixtures/smoothing`` has its own answer key, probe, shared check helpers and
expected.toml (both forms); ``convgrade validate`` passes on it. Also here: what an
assignment's own files may reach, inside and outside the sandbox.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.authoring import expected
from grader.authoring.assignment import load
from grader.authoring.release import leaks, release_members, student_notebook
from grader.checks import load_helpers
from grader.errors import StaffError

ROOT = Path(__file__).resolve().parent.parent
SMOOTHING = ROOT / "tests" / "fixtures" / "smoothing"
CONVOLUTIONS = ROOT / "assignments" / "convolutions"


def test_the_assignment_declares_its_probes_file():
    asg = load(SMOOTHING)
    assert asg.probes == SMOOTHING / "probes.py"
    assert asg.packages == ("numpy",) and len(asg.hints) == 1
    assert load(CONVOLUTIONS).probes == CONVOLUTIONS / "probes.py"


def test_the_release_ships_public_helpers_and_probes_but_no_key():
    asg = load(SMOOTHING)
    members = release_members(asg, student_notebook(asg))
    assert sorted(members) == [
        "smoothing/assignment.toml",
        "smoothing/checks/public/helpers.py",
        "smoothing/checks/public/test_moving_average.py",
        "smoothing/checks/public/test_running_total.py",
        "smoothing/probes.py",
        "smoothing/student.ipynb",
    ]
    assert leaks(asg, members) == []


@pytest.mark.parametrize("folder", [SMOOTHING, CONVOLUTIONS], ids=["smoothing", "convolutions"])
def test_hidden_checks_reach_the_key_and_public_checks_do_not(folder):
    hidden_check = next((folder / "checks" / "hidden").glob("test_*.py"))
    public_check = next((folder / "checks" / "public").glob("test_*.py"))
    key = load_helpers(str(hidden_check), "answers")
    assert Path(key.__file__) == folder / "checks" / "hidden" / "answers.py"
    assert load_helpers(str(hidden_check)) is load_helpers(str(public_check))
    with pytest.raises(FileNotFoundError, match=r"no shared check module answers\.py"):
        load_helpers(str(public_check), "answers")


def test_expected_toml_reads_both_forms():
    entries = expected.load(SMOOTHING / "examples")
    assert entries["untouched"].score == 0 and entries["untouched"].lost is None
    table = entries["in_place_total"]
    assert table.lost == {"running_total": 1.0} and table.status == "graded"
    assert table.describe() == "loses running_total 1"


@pytest.mark.parametrize(
    "entry, message",
    [
        ("x = true", r"the entry of 'x' must be a number"),
        ("[x]\nfeedback = ['a']", r"the entry of 'x' needs a score or a lost table"),
        ("[x]\nscore = 1\nsays = 'a'", r"unknown key\(s\) \['says'\]"),
        ("[x]\nscore = 1\nfeedback = ['(']", r"'\(' is not a regular expression"),
    ],
)
def test_a_malformed_expected_toml_is_a_staff_error(tmp_path, entry, message):
    (tmp_path / "expected.toml").write_text(entry + "\n")
    with pytest.raises(StaffError, match=message):
        expected.load(tmp_path)


@pytest.mark.parametrize(
    "probes, message",
    [
        ('"missing.py"', r"\[worker\] probes must name a \.py file inside the assignment"),
        ('"../mini/assignment.toml"', r"\[worker\] probes must name a \.py file"),
        ('"checks/hidden/answers.py"', r"lies in checks/hidden, but student code can read"),
        ('"broken.py"', r"broken\.py is not valid Python"),
    ],
)
def test_a_bad_probes_entry_is_a_staff_error(tmp_path, probes, message):
    folder = tmp_path / "smoothing"
    shutil.copytree(SMOOTHING, folder)
    (folder / "broken.py").write_text("def probe(:\n")
    toml = folder / "assignment.toml"
    toml.write_text(toml.read_text().replace('probes = "probes.py"', f"probes = {probes}"))
    with pytest.raises(StaffError, match=message):
        load(folder)


@pytest.mark.slow
def test_validate_passes_on_the_second_assignment(tmp_path):
    folder = tmp_path / "smoothing"
    shutil.copytree(SMOOTHING, folder, ignore=shutil.ignore_patterns("secret"))
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "validate", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    example in_place_total loses running_total 1" in proc.stdout
    assert "7 of 7 passed" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "folder, probes",
    [
        (SMOOTHING, ["changes_its_argument"]),
        (CONVOLUTIONS, ["corr_gradient", "layer_gradients"]),
    ],
    ids=["smoothing", "convolutions"],
)
def test_student_code_sees_the_probes_file_but_not_the_key_or_the_checks(folder, probes):
    from grader.sandbox.launcher import Launcher

    asg = load(folder)
    launcher = Launcher(preload=("numpy",), hidden=(asg.root,), probes=asg.probes)
    if launcher.mode is None:
        launcher.close()
        pytest.skip(launcher.isolation.describe())
    key = asg.hidden_dir / "answers.py"
    source = (
        "import os, sys\n"
        f"print(os.path.exists({str(key)!r}), os.path.exists({str(asg.hidden_dir)!r}))\n"
        "print(open('/opt/convgrade/cgprobes.py').read() == "
        f"{asg.probes.read_text()!r})\n"
        "print(sorted(sys.modules['cgprobes'].__all__))"
    )
    try:
        worker = launcher.spawn(0)
        reply = worker.request({"op": "run_cell", "source": source}, 30)
        worker.close()
    finally:
        launcher.close()
    lines = reply["outputs"][0]["text"].split("\n")
    assert lines[0] == "False False"
    assert lines[1] == "True"
    assert lines[2] == repr(probes)


def test_the_gradescope_zip_carries_the_probes_file_and_the_key(tmp_path):
    import zipfile

    from grader.commands.gradescope import build_autograder

    folder = tmp_path / "smoothing"
    shutil.copytree(SMOOTHING, folder, ignore=shutil.ignore_patterns("secret"))
    with zipfile.ZipFile(build_autograder(folder, tmp_path / "ag.zip")) as zf:
        names = set(zf.namelist())
    assert {"assignment/probes.py", "assignment/checks/hidden/answers.py"} <= names
    assert "assignment/source.ipynb" not in names


def test_the_default_assignment_is_the_one_bundled(tmp_path, monkeypatch):
    from grader.authoring import assignment

    assert assignment.default_name() == "convolutions"  # the checkout bundles one
    assert assignment.resolve(None) == CONVOLUTIONS
    monkeypatch.setattr(assignment, "bundled_dir", lambda: tmp_path)
    with pytest.raises(StaffError, match=r"no single bundled one to default to \(bundled: none\)"):
        assignment.load(None)
    for name in ("smoothing", "mini"):
        shutil.copytree(ROOT / "tests" / "fixtures" / name, tmp_path / name)
    with pytest.raises(StaffError, match=r"\(bundled: mini, smoothing\)\. Pass --assignment"):
        assignment.resolve(None)
    shutil.rmtree(tmp_path / "mini")
    assert assignment.load(None).name == "smoothing"


def test_the_bundled_release_with_its_probes_file_leaks_nothing():
    asg = load(CONVOLUTIONS)
    members = release_members(asg, student_notebook(asg))
    assert "convolutions/probes.py" in members
    assert leaks(asg, members) == []
