"""Grading works wherever an instructor's Python lives, and is sandboxed in every layout.

Each test installs convgrade as a user would (a wheel into a venv under /tmp or in the home
folder, an editable install in a checkout's ``.venv``, ``pip install --user``, the Gradescope
image), then grades, from another folder and with the default (bundled) assignment, a
full-marks notebook and a hostile one: the untouched template plus a cell that takes every
answer from the reference solutions, and a cell that looks for the instructor's private file,
the checkout, the submissions and the output folder. The hostile one must score 0 and see
nothing. The local layouts run as an ordinary user (see ``unprivileged.py``); the Gradescope
image runs as root, as Gradescope does.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest
import unprivileged

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assignments" / "convolutions" / "examples"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unprivileged.available() is not None, reason=str(unprivileged.available())),
]

LEAK_CELL = """\
from reference import (corr2d, Conv2D, corr2d_matmul, kernel_matrix, detect_edges,
    edge_image, second_derivative_kernel, integral_kernel, derivative_kernel)
"""

LOOK_CELL = """\
import importlib, json, os
seen = {}
for name in ("grader", "reference", "convgrade_assignments"):
    try:
        importlib.import_module(name)
        seen[name] = "imported"
    except Exception as exc:
        seen[name] = type(exc).__name__
for path in %(paths)r:
    seen[path] = os.path.exists(path)
try:
    seen["secret"] = open(%(secret)r).read()
except Exception as exc:
    seen["secret"] = type(exc).__name__
print("SEEN " + json.dumps(seen))
"""


def hostile_notebook(path: Path, secret: Path, paths: list[str]) -> None:
    nb = nbformat.read(EXAMPLES / "untouched_template.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(LEAK_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(LOOK_CELL % {"paths": paths, "secret": str(secret)}))
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def wheel() -> Path:
    out = Path(tempfile.mkdtemp(prefix="convgrade-wheel-"))
    build = Path(tempfile.mkdtemp(prefix="convgrade-src-"))
    _copy_checkout(build / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(build / "src")],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(build)
    os.chmod(out, 0o755)
    (found,) = out.glob("convgrade-*.whl")
    os.chmod(found, 0o644)
    yield found
    shutil.rmtree(out)


def _copy_checkout(dest: Path) -> None:
    skip = shutil.ignore_patterns(
        ".git", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache", ".hypothesis"
    )
    shutil.copytree(ROOT, dest, ignore=skip)


@pytest.fixture
def home():
    """The ordinary user's home, cleaned of what a test installs there."""
    user = unprivileged.ensure_user()
    home = Path(user.pw_dir)
    made = [home / ".venv", home / ".local", home / "work", home / "private-notes.txt"]
    _remove(made)
    yield home
    _remove(made)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@pytest.fixture
def place():
    """A folder under /tmp that the ordinary user owns."""
    path = Path(tempfile.mkdtemp(prefix="convgrade-user-"))
    os.chmod(path, 0o755)
    unprivileged.give(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = unprivileged.run([str(a) for a in argv], cwd)
    return proc


def _submissions(home: Path, place: Path) -> tuple[Path, Path]:
    """A private file in the user's home, and a folder of two notebooks to grade."""
    secret = home / "private-notes.txt"
    secret.write_text("the answers to next week's quiz")
    os.chmod(secret, 0o600)
    subs = place / "submissions"
    subs.mkdir()
    shutil.copy(EXAMPLES / "full_marks.ipynb", subs / "full_marks.ipynb")
    out = place / "grades"
    hostile_notebook(subs / "hostile.ipynb", secret, [str(ROOT), str(subs), str(out)])
    unprivileged.give(home / "private-notes.txt")
    unprivileged.give(place)
    return secret, subs


def _check_graded(out: Path, proc: subprocess.CompletedProcess, secret: Path) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["submission"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert rows["full_marks"]["score"] == "40"
    assert rows["hostile"]["score"] == "0", rows["hostile"]
    result = json.loads((out / "hostile" / "result.json").read_text())
    assert result["execution"]["isolation"].startswith("sandboxed (bubblewrap, user namespaces)")
    (seen_line,) = [
        line for line in _stdout_lines(out / "hostile" / "executed.ipynb") if "SEEN " in line
    ]
    seen = json.loads(seen_line.split("SEEN ", 1)[1])
    assert {seen[n] for n in ("grader", "reference", "convgrade_assignments")} == {
        "ModuleNotFoundError"
    }, seen
    assert not any(v is True for v in seen.values()), seen
    assert seen["secret"] in ("FileNotFoundError", "PermissionError"), seen
    for path in out.rglob("*"):
        if path.is_file():
            assert "next week's quiz" not in path.read_text(errors="replace"), path


def _stdout_lines(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text") or f"{output.get('ename')}: {output.get('evalue')}"
            lines += str(text).splitlines()
    return lines


@pytest.mark.parametrize("where", ["tmp", "home"])
def test_wheel_in_a_venv_grades_from_any_folder(wheel, home, place, where):
    venv = place / "v" if where == "tmp" else home / ".venv"
    secret, subs = _submissions(home, place)
    made = as_user([sys.executable, "-m", "venv", "--system-site-packages", venv], place)
    assert made.returncode == 0, made.stderr
    pip = as_user([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", wheel], place)
    assert pip.returncode == 0, pip.stderr[-2000:]
    out = place / "grades"
    proc = as_user([venv / "bin/convgrade", "grade", subs, "--out", out], home)
    _check_graded(out, proc, secret)


def test_editable_install_in_the_checkouts_own_venv(home, place):
    checkout = home / "work" / "convgrade"
    _copy_checkout(checkout)
    unprivileged.give(home / "work")
    secret, subs = _submissions(home, place)
    venv = checkout / ".venv"
    made = as_user([sys.executable, "-m", "venv", "--system-site-packages", venv], checkout)
    assert made.returncode == 0, made.stderr
    pip = as_user(
        [venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps"]
        + ["--no-build-isolation", "-e", "."],
        checkout,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    out = place / "grades"
    proc = as_user([venv / "bin/convgrade", "grade", subs, "--out", out], place)
    _check_graded(out, proc, secret)


def test_pip_install_user(wheel, home, place):
    secret, subs = _submissions(home, place)
    pip = as_user(
        [sys.executable, "-m", "pip", "install", "-q", "--user", "--no-deps", wheel], place
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    out = place / "grades"
    proc = as_user([home / ".local/bin/convgrade", "grade", subs, "--out", out], place)
    _check_graded(out, proc, secret)


def test_gradescope_image_hides_both_copies(wheel, tmp_path):
    """setup.sh installs convgrade into the image's Python, and run_autograder puts the zip's
    own copy on PYTHONPATH: neither may be importable from the student's notebook."""
    from grader.commands.gradescope import build_autograder

    zip_path = build_autograder(ROOT / "assignments" / "convolutions", tmp_path / "ag.zip")
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    for script in ("run_autograder", "setup.sh"):
        os.chmod(root / "source" / script, 0o755)
    image_python = tmp_path / "image"  # stands for the image's system Python
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(image_python)], check=True
    )
    subprocess.run(
        [str(image_python / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
    )
    (root / "submission").mkdir()
    (root / "results").mkdir()
    hostile_notebook(root / "submission" / "answers.ipynb", tmp_path / "none", [str(root)])
    env = {
        **os.environ,
        "PATH": f"{image_python / 'bin'}:{os.environ['PATH']}",
        "CONVGRADE_AUTOGRADER_ROOT": str(root),
    }
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(root / "source" / "run_autograder")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "isolation: sandboxed (bubblewrap, as root)" in proc.stdout
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0, proc.stdout[-3000:]
