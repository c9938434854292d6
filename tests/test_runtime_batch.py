"""The batch's own paths: forked grading processes, one that dies, files that cannot be written.

Fast: the real batch, pytest checks (the mini assignment's), sessions and writers, with
workers that run each notebook in IPython inside the grading process itself
(tests/fakeworker.py: :func:`real_worker`). With ``jobs=2`` the batch really forks two
grading processes, as it does with a warm zygote; no root, no sandbox, no TensorFlow.
"""

from __future__ import annotations

import csv
import gc
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from fakeworker import ForkingLauncher, InProcessLauncher, TensorFlowHidden, deadline

from grader.authoring import assignment as assignment_mod
from grader.engine.batch import Progress, grade_batch
from grader.engine.grading import GRADER_ERROR_MESSAGE, GradeOptions
from grader.engine.pytest_plugin import collect_checks
from grader.engine.session import Timeouts
from grader.engine.submissions import Submission
from grader.outputs.renderers import SubmissionInput, SubmissionRenderer, register, unregister
from grader.outputs.results import SubmissionResult
from grader.worker import imports

pytestmark = pytest.mark.usefixtures("short_grace")

KILL = "KILL-GRADER"  # a cell that ends the process it runs in: here, the grading process
CUES = {KILL: "exit"}
FAST = Timeouts(cell=5, notebook=30, call=5)
DIED = "the grading process for this submission died"


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()  # a forked batch froze this process's heap for its children


def submissions(folder: Path, examples: Path, plan: dict[str, str]) -> list[Submission]:
    """One submission per ``id: example`` of ``plan``, a copy of the mini example of that name;
    the example ``"killer"`` is the good one with a first cell that ends its grading process."""
    subs = []
    for sub_id, example in plan.items():
        nb = nbformat.read(examples / f"{'good' if example == 'killer' else example}.ipynb", 4)
        if example == "killer":
            nb.cells.insert(0, nbformat.v4.new_code_cell(KILL))
        path = folder / f"{sub_id}.ipynb"
        nbformat.write(nb, path)
        subs.append(Submission(sub_id, path.name, path))
    return subs


def batch(subs, mini, launcher, out: Path | None, jobs: int = 1, progress=None, reuse=False):
    """``grade_batch`` as ``convgrade grade`` runs it; a hang fails the test."""
    asg, checks = mini
    options = GradeOptions(timeouts=FAST)
    try:
        with TensorFlowHidden() as hidden, deadline(60):
            results = grade_batch(
                subs,
                asg,
                checks,
                launcher,
                options,
                out,
                jobs=jobs,
                reuse=reuse,
                on_progress=progress,
            )
    finally:
        launcher.close()
        imports.configure(None)  # a setup request set this process's import policy
    assert hidden.attempts == [], "the batch imported TensorFlow"
    return results


def grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="") as fh:
        return {row["submission"]: row for row in csv.DictReader(fh)}


def marks(result: SubmissionResult) -> tuple:
    """What a grade is made of (not how long it took)."""
    tests = tuple((t.nodeid, t.status, t.score, t.message) for t in result.tests)
    return (result.submission, result.status, result.score, result.questions, tests)


@pytest.fixture
def examples(mini_assignment: Path) -> Path:
    return mini_assignment / "examples"


# --- forked grading processes ------------------------------------------------------------------


def test_two_grading_processes_give_every_submission_the_one_process_grade(
    mini, examples, tmp_path
):
    plan = {"a": "good", "b": "partial", "c": "good", "d": "partial"}
    subs = submissions(tmp_path, examples, plan)
    alone = batch(subs, mini, InProcessLauncher(), tmp_path / "one")
    launcher, progress = ForkingLauncher(tmp_path / "events.log"), []

    forked = batch(subs, mini, launcher, tmp_path / "two", jobs=2, progress=progress.append)

    assert [(r.submission, r.status, r.score) for r in forked] == [
        ("a", "graded", 5),
        ("b", "graded", 2),
        ("c", "graded", 5),
        ("d", "graded", 2),
    ]
    assert [marks(r) for r in forked] == [marks(r) for r in alone]
    assert [r.fingerprint for r in forked] == [r.fingerprint for r in alone]
    assert grades(tmp_path / "two") == grades(tmp_path / "one")
    for sub in plan:  # each grading process wrote the files of what it graded
        two = tmp_path / "two" / sub
        assert (two / "feedback.md").read_text() == (
            tmp_path / "one" / sub / "feedback.md"
        ).read_text()
        assert (two / "executed.ipynb").is_file()
    assert sorted(p.result.submission for p in progress) == list(plan)
    assert [p.done for p in progress] == [1, 2, 3, 4] and not any(p.reused for p in progress)


def test_each_grading_process_is_its_own_process_with_its_own_channel_and_slots(
    mini, examples, tmp_path
):
    subs = submissions(tmp_path, examples, {"a": "good", "b": "partial", "c": "good"})
    launcher = ForkingLauncher(tmp_path / "events.log")

    batch(subs, mini, launcher, tmp_path / "out", jobs=2)

    events = launcher.events()
    channel_of = {pid: n for what, n, pid in events if what == "in_child"}
    assert sorted(channel_of.values()) == [0, 1]
    assert len(channel_of) == 2 and os.getpid() not in channel_of
    spawns = [(slot, pid) for what, slot, pid in events if what == "spawn"]
    assert len(spawns) == 3  # one worker per submission, each in a grading process
    for slot, pid in spawns:  # slots 0-1 for the first process, 4-5 for the second
        assert slot - 4 * channel_of[pid] in (0, 1)
    assert launcher.starts == 1 and launcher.spawned == []  # the parent ran no notebook


def test_no_more_grading_processes_than_submissions_or_channels(mini, examples, tmp_path):
    one = submissions(tmp_path, examples, {"a": "good"})
    three = submissions(tmp_path, examples, {"b": "good", "c": "partial", "d": "good"})
    alone = ForkingLauncher(tmp_path / "events-1.log", channels=2)
    bounded = ForkingLauncher(tmp_path / "events-3.log", channels=2)

    results = batch(one, mini, alone, tmp_path / "one", jobs=5)
    results += batch(three, mini, bounded, tmp_path / "three", jobs=5)

    assert [(r.submission, r.score) for r in results] == [
        ("a", 5),
        ("b", 5),
        ("c", 2),
        ("d", 5),
    ]
    # One submission: graded here, by whichever of the batch's threads took it.
    assert [(what, pid) for what, _, pid in alone.events()] == [("spawn", os.getpid())]
    assert sorted(n for what, n, _ in bounded.events() if what == "in_child") == [0, 1]


# --- a grading process that dies ---------------------------------------------------------------


def test_a_grading_process_that_dies_costs_only_what_it_had_not_reported(mini, examples, tmp_path):
    # The first submission handed out kills the grading process that took it, before that
    # process has reported anything; the other one grades the rest.
    plan = {"k": "killer", "a": "good", "b": "partial", "c": "good"}
    subs = submissions(tmp_path, examples, plan)
    launcher, progress = ForkingLauncher(tmp_path / "events.log", CUES), []
    out = tmp_path / "out"

    results = batch(subs, mini, launcher, out, jobs=2, progress=progress.append)

    assert [(r.submission, r.status, r.score) for r in results] == [
        ("k", "grader_error", 0),
        ("a", "graded", 5),
        ("b", "graded", 2),
        ("c", "graded", 5),
    ]
    killed = results[0]
    assert killed.errors == (GRADER_ERROR_MESSAGE,)
    assert DIED in killed.staff_details
    assert {sub: row["status"] for sub, row in grades(out).items()} == {
        "k": "grader_error",
        "a": "graded",
        "b": "graded",
        "c": "graded",
    }
    # The parent wrote the dead process's row: the student reads that grading failed.
    assert json.loads((out / "k" / "result.json").read_text())["status"] == "grader_error"
    assert DIED not in (out / "k" / "feedback.md").read_text()  # staff only
    assert sorted(p.result.submission for p in progress) == sorted(plan)
    spawned_by: dict[int, int] = {}
    for what, _, pid in launcher.events():
        spawned_by[pid] = spawned_by.get(pid, 0) + (what == "spawn")
    assert sorted(spawned_by.values()) == [1, 3]  # the dead one ran the killer only


# --- files that cannot be written --------------------------------------------------------------


def test_an_executed_notebook_that_cannot_be_written_costs_only_that_file(mini, examples, tmp_path):
    out = tmp_path / "out"
    (out / "a" / "executed.ipynb").mkdir(parents=True)  # a folder where the file goes
    subs = submissions(tmp_path, examples, {"a": "good", "b": "good"})

    results = batch(subs, mini, InProcessLauncher(), out)

    a, b = results
    assert (a.status, a.score) == ("graded", 5)
    assert "executed.ipynb was not written" in a.staff_details
    assert "IsADirectoryError" in a.staff_details
    assert json.loads((out / "a" / "result.json").read_text())["staff_details"] == a.staff_details
    assert "Score: 5 / 5" in (out / "a" / "feedback.md").read_text()
    assert (out / "a" / "executed.ipynb").is_dir()
    assert (b.score, b.staff_details) == (5, "")
    assert (out / "b" / "executed.ipynb").is_file()
    assert grades(out)["a"]["score"] == "5"


def test_a_submission_whose_files_cannot_be_written_is_a_grader_error_row(mini, examples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("in the way\n")  # a file where the submission's folder goes
    subs = submissions(tmp_path, examples, {"a": "good", "b": "partial"})

    results = batch(subs, mini, InProcessLauncher(), out)

    a, b = results
    assert (a.submission, a.status, a.score) == ("a", "grader_error", 0)
    assert "executed.ipynb was not written" not in a.staff_details  # the last failure only
    assert "Error" in a.staff_details and str(out / "a") in a.staff_details
    assert (out / "a").read_text() == "in the way\n"
    assert (b.status, b.score) == ("graded", 2)
    rows = grades(out)
    assert (rows["a"]["status"], rows["a"]["score"]) == ("grader_error", "0")
    assert rows["b"]["score"] == "2"


class PickyFormat(SubmissionRenderer):
    """An output format that cannot render submission b's graded result."""

    file_name = "picky.txt"

    def render(self, item: SubmissionInput) -> str:
        if item.result.submission == "b" and item.result.status != "grader_error":
            raise ValueError("picky cannot render this result")
        return f"{item.result.submission}: {item.result.status}\n"


@pytest.fixture
def picky():
    register(PickyFormat)
    yield
    unregister(PickyFormat)


def test_a_format_that_fails_for_one_result_makes_it_a_written_grader_error(
    mini, examples, tmp_path, picky
):
    out = tmp_path / "out"
    subs = submissions(tmp_path, examples, {"a": "good", "b": "good"})

    results = batch(subs, mini, InProcessLauncher(), out)

    a, b = results
    assert (a.status, a.score) == ("graded", 5)
    assert (out / "a" / "picky.txt").read_text() == "a: graded\n"
    assert (b.status, b.score) == ("grader_error", 0)
    assert "picky cannot render this result" in b.staff_details
    assert (out / "b" / "picky.txt").read_text() == "b: grader_error\n"
    assert json.loads((out / "b" / "result.json").read_text())["status"] == "grader_error"
    assert not (out / "b" / "executed.ipynb").exists()  # the failed attempt's: not left behind
    feedback = (out / "b" / "feedback.md").read_text()
    assert GRADER_ERROR_MESSAGE in feedback and "picky" not in feedback


# --- recording a result ------------------------------------------------------------------------


def test_a_result_that_cannot_be_fingerprinted_is_a_grader_error_row(mini_assignment, tmp_path):
    # The fingerprint reads every check file; one that vanishes after the checks were
    # collected (here a link to nowhere, which pytest does not collect) cannot be read.
    root = tmp_path / "assignment"
    shutil.copytree(mini_assignment, root)
    asg = assignment_mod.load(root)
    mini = (asg, collect_checks(asg))
    (root / "checks" / "public" / "helpers.py").symlink_to(tmp_path / "gone.py")
    subs = submissions(tmp_path, root / "examples", {"a": "good"})

    (a,) = batch(subs, mini, InProcessLauncher(), tmp_path / "out")

    assert (a.status, a.score) == ("grader_error", 0)
    assert "FileNotFoundError" in a.staff_details and "helpers.py" in a.staff_details
    assert grades(tmp_path / "out")["a"]["status"] == "grader_error"


def test_without_an_out_folder_nothing_is_reused_or_written(mini, examples, tmp_path):
    subs = submissions(tmp_path, examples, {"a": "good"})
    before = sorted(tmp_path.rglob("*"))
    progress: list[Progress] = []

    (a,) = batch(subs, mini, InProcessLauncher(), None, progress=progress.append, reuse=True)

    assert (a.status, a.score, a.staff_details) == ("graded", 5, "")
    assert a.fingerprint
    assert sorted(tmp_path.rglob("*")) == before
    assert [(p.done, p.total, p.reused) for p in progress] == [(1, 1, False)]


def _honest_shard(conn, payload: dict, after) -> None:
    """A grading process that asks for work until there is none, answering each with a result
    (once ``after`` is set: the dying one holds its submission by then)."""
    after.wait(20)
    while True:
        conn.send(("next", None))
        if conn.recv() is None:
            break
        conn.send(("result", payload))
    conn.send(("done", None))
    os._exit(0)


def _shard_dying_mid_message(conn, holding) -> None:
    """A grading process killed while writing: a frame header promising 1000 bytes, then 10."""
    conn.send(("next", None))
    conn.recv()
    holding.set()
    os.write(conn.fileno(), (1000).to_bytes(4, "big") + b"0123456789")
    os._exit(9)


def test_a_grading_process_dying_mid_message_stalls_no_other(tmp_path, mini):
    # Each grading process has a pipe of its own: a death half-way through a message costs
    # the submission it held, never the others' results or the batch's end.
    import multiprocessing

    from grader.engine.batch import _Dispatcher
    from grader.engine.grading import grader_error

    asg, checks = mini
    todo = [Submission(f"s{i}", f"s{i}.ipynb", tmp_path / f"s{i}.ipynb") for i in range(4)]
    payload = grader_error(todo[0], asg, checks, "", "stand-in").to_dict()
    emitted: list[SubmissionResult] = []
    mp = multiprocessing.get_context("fork")
    holding = mp.Event()
    shards = {}
    for i, target in enumerate((_shard_dying_mid_message, _honest_shard)):
        mine, theirs = mp.Pipe()
        dying = target is _shard_dying_mid_message
        args = (theirs, holding) if dying else (theirs, payload, holding)
        proc = mp.Process(target=target, args=args, daemon=True)
        proc.start()
        theirs.close()
        shards[i] = (mine, proc)

    with deadline(30):
        seen = _Dispatcher(todo, emitted.append).serve(shards)

    assert seen == {"s0"}  # the honest process's results (all stand-ins named s0) came back
    assert len(emitted) == 3  # it graded every submission but the one the dead process held
    assert all(not proc.is_alive() for _, proc in shards.values())
