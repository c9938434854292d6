"""The grading loop: one pytest session grades whatever its feed hands out.

Fast: the real loop, checks (the mini assignment's, through pytest), session and client,
against fake workers that run the notebook's cells with ``exec`` (tests/fakeworker.py via
test_batch_guard's ExecLauncher). The notebooks are this file's own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_batch_guard import CORR2D, SCALE, ExecLauncher, write_nb

from grader.authoring import assignment as assignment_mod
from grader.engine.grading import GradeOptions, GradingContext, run_submission
from grader.engine.loop import Graded, GradingLoop, Job
from grader.engine.outcome import GraderCrash, Outcome, Ran, unreachable
from grader.engine.pytest_plugin import collect_checks
from grader.engine.session import Timeouts
from grader.engine.submissions import Submission
from grader.errors import SubmissionProblem


@pytest.fixture
def launcher():
    launcher = ExecLauncher()
    yield launcher
    launcher.close()


def context(root: Path, launcher, checks=None) -> GradingContext:
    asg = assignment_mod.load(root)
    checks = collect_checks(asg) if checks is None else checks
    options = GradeOptions(timeouts=Timeouts(cell=10, notebook=30, call=5))
    return GradingContext(asg, tuple(checks), launcher, options, launcher.isolation.describe())


def grade_all(ctx: GradingContext, outcomes: list[Outcome]) -> list[Graded]:
    graded: list[Graded] = []
    jobs = iter([Job(o, graded.append) for o in outcomes])
    GradingLoop(ctx, lambda: next(jobs, None)).run()
    return graded


def test_one_session_grades_each_kind_of_outcome_and_replies_in_order(
    tmp_path, mini_assignment, launcher
):
    ctx = context(mini_assignment, launcher)
    path = write_nb(tmp_path / "good.ipynb", CORR2D, SCALE)
    ran = run_submission(Submission("good", str(path), path), ctx)
    assert isinstance(ran, Ran)
    problem = SubmissionProblem("empty", "the file is empty")
    not_gradable = run_submission(Submission("empty", "empty.ipynb", None, problem), ctx)
    crash = GraderCrash(Submission("crash", "crash.ipynb", None), "our side broke here")

    graded = grade_all(ctx, [ran, not_gradable, crash])

    assert [g.submission.id for g in graded] == ["good", "empty", "crash"]
    good, empty, crashed = (g.result for g in graded)
    assert (good.status, good.score) == ("graded", 5)
    assert graded[0].executed is not None
    assert (empty.status, empty.score, empty.errors) == ("empty", 0, ("the file is empty",))
    assert graded[1].executed is None
    assert crashed.status == "grader_error"
    assert crashed.staff_details == "our side broke here"
    assert "our side broke here" not in " ".join(crashed.errors)
    assert ran.session.worker is None  # its worker was stopped once its checks were done


def test_checks_that_cannot_start_give_every_submission_a_grader_error_with_the_reason(
    tmp_path, mini_assignment, launcher
):
    checks = collect_checks(assignment_mod.load(mini_assignment))
    broken = tmp_path / "mini"
    shutil.copytree(mini_assignment, broken)
    (broken / "checks" / "public" / "conftest.py").write_text(
        "def pytest_collection_modifyitems(items):\n"
        "    raise RuntimeError('this conftest breaks the session')\n"
    )
    ctx = context(broken, launcher, checks)
    path = write_nb(tmp_path / "good.ipynb", CORR2D, SCALE)
    outcomes = [run_submission(Submission(n, str(path), path), ctx) for n in ("a", "b")]

    graded = grade_all(ctx, outcomes)

    assert [g.result.status for g in graded] == ["grader_error", "grader_error"]
    for g in graded:
        assert g.result.staff_details.startswith("no check results: ")
        assert "this conftest breaks the session" in g.result.staff_details
        assert all(t.status == "failed" for t in g.result.tests)


def test_an_outcome_outside_the_union_is_refused():
    with pytest.raises(AssertionError, match="unhandled outcome 'something else'"):
        unreachable("something else")  # type: ignore[arg-type]
