"""Always a result: whatever one notebook does, the batch writes every row.

Fast: the real batch, checks (the mini assignment's, through pytest), session, client and
writers, against fake workers that run the notebook's cells with ``exec`` in a thread
(tests/fakeworker.py). The notebooks are this file's own, so ``exec`` runs nothing foreign.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import numpy as np
import pytest
from fakeworker import FakeLauncher, cell_reply
from nbformat.v4 import new_code_cell, new_notebook

import grader.engine.loop
from grader.authoring import assignment as assignment_mod
from grader.engine.batch import grade_batch
from grader.engine.grading import GradeOptions
from grader.engine.pytest_plugin import collect_checks
from grader.engine.session import Timeouts
from grader.engine.submissions import Submission
from grader.outputs import writers
from grader.sandbox.launcher import Isolation
from grader.worker.serve import Server

CORR2D = """import numpy as np

def corr2d(X, K):
    h, w = K.shape
    out = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return out
"""
SCALE = """class Scale:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return np.asarray(x) * self.factor
"""


class ExecServer(Server):
    """The real worker's request loop, with cells run by ``exec`` in a private namespace.

    A cell whose source is ``FORGE-ARRAY`` gets a forged reply: a NumPy array in its output.
    """

    def __init__(self, channel) -> None:
        super().__init__(channel)
        self.ns: dict = {}

    def _namespace(self) -> dict:
        return self.ns

    def op_run_cell(self, req):
        source = str(req["source"])
        if source == "FORGE-ARRAY":
            forged = {"output_type": "stream", "name": "stdout", "text": np.ones(3)}
            return cell_reply(outputs=[forged])
        printed: list[str] = []
        self.ns["print"] = lambda *args: printed.append(" ".join(map(str, args)) + "\n")
        try:
            with redirect_stdout(io.StringIO()):
                exec(compile(source, "<cell>", "exec"), self.ns)
        except Exception as exc:
            error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": ""}
            return cell_reply("".join(printed), error=error)
        return cell_reply("".join(printed))


class ExecLauncher(FakeLauncher):
    warm = False
    channels = 1
    isolation = Isolation(sandboxed=False, notes=("fake workers for the trusted side's tests",))

    def __init__(self) -> None:
        super().__init__(lambda fake: ExecServer(fake.channel).serve())

    def start(self, wait: bool = True) -> None:
        pass


def write_nb(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def mini(mini_assignment):
    asg = assignment_mod.load(mini_assignment)
    return asg, collect_checks(asg)


def grade(tmp_path: Path, mini, notebooks: dict[str, tuple[str, ...]], jobs: int):
    asg, checks = mini
    subs = []
    for name, sources in sorted(notebooks.items()):
        path = write_nb(tmp_path / f"{name}.ipynb", *sources)
        subs.append(Submission(name, str(path), path))
    out = tmp_path / "out"
    launcher = ExecLauncher()
    options = GradeOptions(timeouts=Timeouts(cell=10, notebook=30, call=5))
    try:
        results = grade_batch(subs, asg, checks, launcher, options, out, jobs=jobs, reuse=False)
    finally:
        launcher.close()
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    return {r.submission: r for r in results}, rows, out


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_full_marks_notebook_that_prints_a_lone_surrogate_keeps_its_score(tmp_path, mini, jobs):
    # Before: with --jobs 1 the batch ended with exit 3 and no grades.csv; with --jobs 2 the
    # notebook scored 0 as grader_error.
    notebooks = {
        "good": (CORR2D, SCALE),
        "surrogate": (CORR2D, 'print("bad \\udc80 byte")', SCALE),
    }

    results, rows, out = grade(tmp_path, mini, notebooks, jobs)

    assert rows["surrogate"]["score"] == rows["good"]["score"] == "5"
    assert results["surrogate"].status == "graded"
    executed = (out / "surrogate" / "executed.ipynb").read_text(encoding="utf-8")
    assert "bad \\ufffd byte" in executed or "bad \ufffd byte" in executed


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_forged_array_in_an_output_costs_that_cell_only(tmp_path, mini, jobs):
    notebooks = {"good": (CORR2D, SCALE), "forged": (CORR2D, SCALE, "FORGE-ARRAY", "x = 1")}

    results, rows, out = grade(tmp_path, mini, notebooks, jobs)

    assert sorted(rows) == ["forged", "good"]
    assert rows["forged"]["score"] == "5"  # the checks run in a restarted worker
    forged = results["forged"]
    assert forged.status == "crashed"
    assert any("broke the protocol" in e for e in forged.errors)


@pytest.mark.parametrize("jobs", [1, 2])
def test_our_own_failure_on_one_submission_is_its_grader_error_row(
    tmp_path, mini, jobs, monkeypatch
):
    real_score = grader.engine.loop.score

    def score(outcome, *args, **kwargs):
        if outcome.submission.id == "victim":
            raise RuntimeError("a bug in the trusted side")
        return real_score(outcome, *args, **kwargs)

    monkeypatch.setattr(grader.engine.loop, "score", score)
    notebooks = {"good": (CORR2D, SCALE), "victim": (CORR2D, SCALE)}

    results, rows, out = grade(tmp_path, mini, notebooks, jobs)

    assert rows["good"]["score"] == "5"
    assert rows["victim"]["status"] == "grader_error"
    feedback = (out / "victim" / "feedback.md").read_text()
    assert "the autograder failed on this submission" in feedback
    assert "a bug in the trusted side" not in feedback  # for staff only
    staff = json.loads((out / "victim" / "result.json").read_text())["staff_details"]
    assert "a bug in the trusted side" in staff


def test_a_failing_executed_notebook_keeps_the_score(tmp_path, mini, monkeypatch):
    def broken(outcome):
        raise ValueError("cannot build the notebook")

    monkeypatch.setattr(grader.engine.loop, "executed_notebook", broken)

    results, rows, out = grade(tmp_path, mini, {"good": (CORR2D, SCALE)}, 1)

    assert rows["good"]["score"] == "5"
    assert not (out / "good" / "executed.ipynb").exists()
    assert "executed.ipynb was not written" in results["good"].staff_details


def test_a_writer_that_fails_for_one_submission_loses_no_row(tmp_path, mini, monkeypatch):
    real = writers.write_submission

    def write_submission(out, result, executed, title=""):
        if result.submission == "victim":
            raise OSError("disk says no")
        return real(out, result, executed, title)

    monkeypatch.setattr(writers, "write_submission", write_submission)
    notebooks = {"good": (CORR2D, SCALE), "victim": (CORR2D, SCALE)}

    results, rows, out = grade(tmp_path, mini, notebooks, 1)

    assert sorted(rows) == ["good", "victim"]
    assert rows["good"]["score"] == "5"
    assert rows["victim"]["status"] == "grader_error"
    assert "disk says no" in results["victim"].staff_details
