"""`convgrade` usage: help, and every usage or assignment mistake stops with exit code 2.

All of these run ``grader.commands.cli.run`` in-process and must fail before any grading starts: the
``no_grading`` fixture makes starting a worker or a batch an error.
"""

from __future__ import annotations

import io
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import grader.engine.batch
import grader.sandbox.launcher
from grader import __version__
from grader.authoring.assignment import bundled_names
from grader.commands.cli import run

# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str  # what run() wrote to the out_stream it was given (plus stray stdout)
    err: str  # the same for err_stream / stderr

    @property
    def output(self) -> str:
        return self.out + self.err

    @property
    def text(self) -> str:
        """The output with argparse's line wrapping undone, for checking help text."""
        return " ".join(self.output.split())


@pytest.fixture
def no_grading(monkeypatch):
    """Starting a worker or a batch fails loudly: usage errors must come before grading.

    Preloading libraries in the zygote (Launcher.start) may overlap with validation; it runs
    no student code, so it is stubbed out here only to keep these tests fast.
    """

    def forbidden(*args, **kwargs):
        raise AssertionError("grading started although the command line was wrong")

    monkeypatch.setattr(grader.sandbox.launcher.Launcher, "start", lambda self, wait=True: None)
    monkeypatch.setattr(grader.sandbox.launcher.Launcher, "spawn", forbidden)
    monkeypatch.setattr(grader.engine.batch, "grade_batch", forbidden)


@pytest.fixture
def cli(capsys, no_grading):
    """Run convgrade in-process; collect what it wrote to its streams and to stdout/stderr."""
    modules_before = set(sys.modules)

    def invoke(*argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = run(list(argv), out, err)
        stray = capsys.readouterr()
        return Result(code, out.getvalue() + stray.out, err.getvalue() + stray.err)

    yield invoke
    # pytest's importlib mode reuses a module already in sys.modules under the same name
    # ("checks.public.test_q1"), so forget the check files this test's assignment imported.
    for name in set(sys.modules) - modules_before:
        if name == "checks" or name.startswith("checks."):
            del sys.modules[name]


GOOD_TOML = """\
[assignment]
title = "Tiny"

[questions.q1]
title = "One point"
points = 1

[worker]
preload = ["numpy"]
"""

GOOD_CHECK = '''\
import pytest


@pytest.mark.points(1)
def test_one(student):
    """a trivial check"""
'''


def make_assignment(root: Path, toml: str = GOOD_TOML, checks: dict[str, str] | None = None):
    """A minimal assignment folder: assignment.toml and checks/public/<files>."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "assignment.toml").write_text(textwrap.dedent(toml), encoding="utf-8")
    for name, text in (checks if checks is not None else {"test_q1.py": GOOD_CHECK}).items():
        path = root / "checks" / "public" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def notebook(tmp_path) -> Path:
    path = tmp_path / "submission.ipynb"
    path.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}')
    return path


# --- help ----------------------------------------------------------------------------------


def test_help_shows_the_grade_command_with_an_example(cli):
    result = cli("--help")

    assert result.code == 0
    assert "usage: convgrade" in result.output
    assert "grade notebooks, folders or zips of notebooks" in result.output
    assert "  convgrade grade submissions/ --out /tmp/g" in result.output
    assert "exit codes: 0 all graded, 1 some submissions could not be graded" in result.output


def test_grade_help_lists_paths_options_defaults_and_an_example(cli):
    result = cli("grade", "--help")

    assert result.code == 0
    assert "usage: convgrade grade" in result.output
    assert "PATH [PATH ...]" in result.output
    for flag in ("--assignment", "--out", "--jobs", "--cell-timeout", "--timeout", "--memory"):
        assert flag in result.output
    assert (
        "--cell-timeout S seconds one notebook cell may run (default: 60.0, or the "
        "assignment's [limits])" in result.text
    )
    assert "(default: 2048, or the assignment's [limits])" in result.text
    assert "(default: the bundled assignment, when exactly one is bundled)" in result.text
    assert "example:\n  convgrade grade " in result.output


def test_each_default_is_stated_once(cli):
    text = cli("grade", "--help").text

    assert "--jobs N, -j N notebooks run in parallel (default: number of cores) --" in text


def test_no_command_prints_the_help_and_exits_2(cli):
    result = cli()

    assert result.code == 2
    assert "usage: convgrade" in result.out


def test_version(cli):
    result = cli("--version")

    assert (result.code, result.output.strip()) == (0, f"convgrade {__version__}")


def test_help_and_usage_errors_go_to_the_streams_given_to_run(capsys):
    out, err = io.StringIO(), io.StringIO()

    assert run(["--help"], out, err) == 0
    assert run(["grade", "--jobs", "0", "x.ipynb"], out, err) == 2

    stray = capsys.readouterr()
    assert (stray.out, stray.err) == ("", "")
    assert "usage: convgrade" in out.getvalue()
    assert "--jobs" in err.getvalue()


# --- bad command lines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["grade"], "the following arguments are required: PATH"),
        (["grade", "x.ipynb", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
    ids=["unknown-command", "no-path", "unknown-flag"],
)
def test_a_malformed_command_line_exits_2(cli, argv, match):
    result = cli(*argv)

    assert result.code == 2
    assert match in result.err


@pytest.mark.parametrize(
    ("flag", "value", "match"),
    [
        ("--jobs", "0", "argument --jobs/-j: expected a number >= 1, got 0"),
        ("--jobs", "-3", "argument --jobs/-j: expected a number >= 1, got -3"),
        ("--jobs", "two", "argument --jobs/-j: expected a whole number, got 'two'"),
        ("--jobs", "1.5", "argument --jobs/-j: expected a whole number, got '1.5'"),
        ("--cell-timeout", "0", "argument --cell-timeout: expected a positive number, got 0"),
        ("--timeout", "soon", "argument --timeout: expected a number of seconds, got 'soon'"),
        ("--memory", "0", "argument --memory: expected a number >= 1, got 0"),
    ],
    ids=[
        "jobs-zero",
        "jobs-negative",
        "jobs-word",
        "jobs-fraction",
        "cell-timeout-zero",
        "timeout-word",
        "memory-zero",
    ],
)
def test_a_bad_option_value_exits_2_and_names_the_option(cli, notebook, flag, value, match):
    result = cli("grade", str(notebook), flag, value)

    assert result.code == 2
    assert match in result.err


def test_an_unknown_assignment_exits_2_and_names_the_bundled_ones(cli, notebook):
    result = cli("grade", str(notebook), "--assignment", "no-such-assignment")

    assert result.code == 2
    assert "convgrade: error: no assignment 'no-such-assignment'" in result.err
    names = bundled_names()
    assert "convolutions" in names
    assert f"(bundled: {', '.join(names)})" in result.err


def test_a_nonexistent_path_exits_2(cli, tmp_path):
    asg = make_assignment(tmp_path / "tiny")

    result = cli(
        "grade", str(tmp_path / "missing.ipynb"), "-a", str(asg), "-o", str(tmp_path / "o")
    )

    assert result.code == 2
    assert f"convgrade: error: {tmp_path / 'missing.ipynb'} does not exist" in result.err
    assert not (tmp_path / "o").exists()


def test_a_path_that_is_not_a_notebook_exits_2(cli, tmp_path):
    asg = make_assignment(tmp_path / "tiny")
    (tmp_path / "essay.docx").write_text("not a notebook")

    result = cli("grade", str(tmp_path / "essay.docx"), "-a", str(asg))

    assert result.code == 2
    assert "essay.docx is not a notebook (.ipynb), a folder or a .zip archive" in result.err


def test_a_folder_without_notebooks_exits_2(cli, tmp_path):
    asg = make_assignment(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()

    result = cli("grade", str(tmp_path / "empty"), "-a", str(asg))

    assert result.code == 2
    assert "no notebooks (*.ipynb) found in" in result.err


# --- bad assignments -----------------------------------------------------------------------

BAD_TOML = {
    "not-toml": (
        "[questions.q1\npoints = 1\n",
        "assignment.toml is not valid TOML",
    ),
    "no-questions": (
        '[assignment]\ntitle = "Tiny"\n',
        "no [questions.<id>] tables in",
    ),
    "missing-points": (
        '[questions.q1]\ntitle = "One"\n',
        "[questions.q1] needs a positive number of points in",
    ),
    "negative-points": (
        "[questions.q1]\npoints = -2\n",
        "Received: points=-2",
    ),
    "zero-points": (
        "[questions.q1]\npoints = 0\n",
        "Received: points=0",
    ),
    "points-as-text": (
        '[questions.q1]\npoints = "3"\n',
        "Received: points='3'",
    ),
    "points-as-bool": (
        "[questions.q1]\npoints = true\n",
        "Received: points=True",
    ),
    "question-not-a-table": (
        "questions = { q1 = 3 }\n",
        "[questions.q1] must be a table",
    ),
    "unknown-limit": (
        "[questions.q1]\npoints = 1\n[limits]\ncell_timout = 5\n",
        "unknown key(s) ['cell_timout'] in [limits]",
    ),
    "negative-limit": (
        "[questions.q1]\npoints = 1\n[limits]\nmemory_mib = -1\n",
        "[limits] memory_mib must be a positive number",
    ),
    "limits-not-a-table": (
        "limits = 5\n[questions.q1]\npoints = 1\n",
        "[limits] must be a table",
    ),
}


@pytest.mark.parametrize(("toml", "match"), BAD_TOML.values(), ids=BAD_TOML.keys())
def test_a_malformed_assignment_toml_exits_2_before_grading(cli, tmp_path, notebook, toml, match):
    asg = make_assignment(tmp_path / "bad", toml)

    result = cli("grade", str(notebook), "--assignment", str(asg))

    assert result.code == 2, result.err
    assert result.err.startswith("convgrade: error: ")
    assert match in result.err
    assert str(asg / "assignment.toml") in result.err  # says which file is wrong


def test_an_assignment_folder_without_assignment_toml_exits_2(cli, tmp_path, notebook):
    (tmp_path / "empty-asg").mkdir()

    result = cli("grade", str(notebook), "--assignment", str(tmp_path / "empty-asg"))

    assert result.code == 2
    assert "has no assignment.toml; every assignment needs one" in result.err


def test_an_assignment_without_checks_exits_2(cli, tmp_path, notebook):
    asg = make_assignment(tmp_path / "tiny", checks={})

    result = cli("grade", str(notebook), "--assignment", str(asg))

    assert result.code == 2
    assert "has neither checks/public nor checks/hidden" in result.err


BAD_CHECKS = {
    "points-do-not-add-up": (
        {"test_q1.py": GOOD_CHECK.replace("points(1)", "points(3)")},
        "question 'q1': checks add up to 3, assignment.toml says 1",
    ),
    "check-without-points": (
        {"test_q1.py": "def test_one(student):\n    pass\n"},
        "has no @pytest.mark.points(N); every check needs its points",
    ),
    "check-of-no-question": (
        {"test_other.py": GOOD_CHECK},
        "belongs to no question of assignment.toml",
    ),
    "check-that-does-not-import": (
        {"test_q1.py": "import no_such_module_here\n" + GOOD_CHECK},
        "could not be collected",
    ),
}


@pytest.mark.parametrize(("checks", "match"), BAD_CHECKS.values(), ids=BAD_CHECKS.keys())
def test_bad_checks_exit_2_before_grading(cli, tmp_path, notebook, checks, match):
    asg = make_assignment(tmp_path / "tiny", checks=checks)

    result = cli("grade", str(notebook), "--assignment", str(asg))

    assert result.code == 2, result.err
    assert match in result.err
