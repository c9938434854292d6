"""The fixture class of issue 16: convgrade gives every notebook exactly its fair score.

``tests/fixtures/class/*.ipynb`` are notebooks written the way different students write
them (``make_class.py`` builds them from the student template), and ``fair_scores.toml``
says, per notebook and question, what each deserves under docs/grading-policy.md, written
down before they were graded. The slow test grades the whole class in one batch through
the command line (in-process) and compares every question; a failure lists each notebook,
question, fair score, graded score and the feedback of the failed checks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
CLASS = ROOT / "tests" / "fixtures" / "class"
ASSIGNMENT = ROOT / "assignments" / "convolutions"


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"fair_class_{name}", CLASS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


distance = load_module("fair_distance")


def question_points() -> dict[str, int]:
    config = tomllib.loads((ASSIGNMENT / "assignment.toml").read_text())
    return {qid: q["points"] for qid, q in config["questions"].items()}


# --- fast: the class and its table agree ------------------------------------------------------


def test_the_class_has_at_least_30_notebooks_and_each_has_a_fair_score():
    stems = {p.stem for p in CLASS.glob("*.ipynb")}
    fair = distance.load_fair()
    assert len(stems) >= 30
    assert set(fair) == stems, set(fair) ^ stems


def test_fair_scores_name_every_question_within_its_points_and_say_why():
    points = question_points()
    table = tomllib.loads((CLASS / "fair_scores.toml").read_text())
    for stem, entry in table.items():
        assert entry.get("why", "").strip(), f"{stem} has no `why`"
        scores = {q: v for q, v in entry.items() if q != "why"}
        assert set(scores) == set(points), f"{stem}: {set(scores) ^ set(points)}"
        for q, v in scores.items():
            assert isinstance(v, int) and 0 <= v <= points[q], f"{stem}.{q} = {v!r}"


def test_the_class_spans_correct_styles_and_mistakes():
    points = question_points()
    fair = distance.load_fair()
    full = [s for s, q in fair.items() if sum(q.values()) == sum(points.values())]
    assert len(full) >= 10 and len(fair) - len(full) >= 15, (len(full), len(fair))


def test_make_class_rebuilds_the_committed_notebooks(tmp_path):
    load_module("make_class").build(tmp_path)
    built = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    committed = {p.name: p.read_bytes() for p in CLASS.glob("*.ipynb")}
    assert set(built) == set(committed)
    stale = sorted(name for name in built if built[name] != committed[name])
    assert not stale, f"run python tests/fixtures/class/make_class.py and commit: {stale}"
    for name in built:
        nbformat.validate(nbformat.reads(built[name].decode(), as_version=4))


def test_compare_reports_each_difference_with_its_feedback():
    fair = {"nb": {"corr2d": 6.0, "edges": 4.0}, "gone": {"corr2d": 6.0}}
    results = {
        "nb": {
            "status": "graded",
            "questions": {"corr2d": {"score": 6.0}, "edges": {"score": 2.0}},
            "tests": [
                {"name": "t1", "question": "edges", "status": "failed", "message": "bad shape"},
                {"name": "t2", "question": "edges", "status": "passed", "message": ""},
            ],
        },
        "gone": None,
    }
    diffs = distance.compare(fair, results)
    assert [(d.notebook, d.question, d.fair, d.got) for d in diffs] == [
        ("gone", "corr2d", 6.0, None),
        ("nb", "edges", 4.0, 2.0),
    ]
    assert diffs[1].feedback == ("t1: bad shape",)
    assert "nb / edges: fair 4, got 2\n    - t1: bad shape" in diffs[1].describe()
    assert distance.summary(diffs, 2) == (
        "distance to the fair scores: 8 points over 2 question(s); notebooks off: 2 of 2"
    )


# --- slow: grade the class once, in one batch -------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the whole class with `convgrade grade` in-process; stem -> result.json dict."""
    out = tmp_path_factory.mktemp("fair-class")
    modules_before = set(sys.modules)
    code = distance.grade_class(out, jobs=2)
    # The assignment's check modules were imported under the name "checks...": forget them,
    # as tests/test_cli_usage.py does, so another test's assignment is not shadowed.
    for name in set(sys.modules) - modules_before:
        if name == "checks" or name.startswith("checks."):
            del sys.modules[name]
    assert code == 0, f"convgrade grade exited with {code}; results in {out}"
    return distance.read_results(out, distance.load_fair())


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(distance.load_fair()))
def test_notebook_gets_exactly_its_fair_score(graded, stem):
    fair = {stem: distance.load_fair()[stem]}
    diffs = distance.compare(fair, graded)
    assert not diffs, "\n".join(d.describe() for d in diffs)
