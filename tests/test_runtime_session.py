"""Replays, restart limits, the memo of timed-out requests and what each failure becomes.

Fast: the workers are scripted fakes (tests/fakeworker.py) that answer, die or hang on cue;
the session, the client, the reply checks, the ``student`` proxy and the grading of one
submission are the real ones.
"""

from __future__ import annotations

import re
import select
import socket
import time

import numpy as np
import pytest
from fakeworker import FakeWorker, cell_reply, cells, serve_forever, sources_run

from grader.engine import grading, worker_process
from grader.engine import session as session_mod
from grader.engine.grading import GRADER_ERROR_MESSAGE, GradeOptions, GradingContext
from grader.engine.outcome import GraderCrash, NotGradable, Ran
from grader.engine.proxy import (
    CheckFailure,
    MissingName,
    NotPlainData,
    Student,
    StudentCodeRaised,
    WorkerGone,
)
from grader.engine.session import NotebookSession, Timeouts
from grader.engine.submissions import Submission
from grader.engine.worker_process import WorkerProcess
from grader.errors import SubmissionProblem, WorkerFailure
from grader.outputs.results import CheckResult

pytestmark = pytest.mark.usefixtures("short_grace")

DEFAULTS = Timeouts()


@pytest.fixture
def long_grace(monkeypatch):
    """Room for a worker that answers after its deadline, within the grace period."""
    monkeypatch.setattr(worker_process, "GRACE_SECONDS", 1.5)


def die(fake: FakeWorker) -> None:
    """The worker's process is gone: its end of the channel closes."""
    fake.sock.close()


def hang(fake: FakeWorker) -> None:
    """An endless loop that ignores SIGINT: nothing until the grader closes the channel."""
    select.select([fake.sock], [], [], 30)


def worker(cells_: dict | None = None, calls: dict | None = None):
    """A script: cells and calls answered by name; a callable answer may die or hang.

    An answer is a reply dict, or a function of the fake that returns one (None: no reply).
    Cells not named answer ``cell_reply()``; calls not named answer the plain value 1.
    """
    cells_, calls = cells_ or {}, calls or {}

    def answer(fake: FakeWorker, request: dict):
        op = request["op"]
        if op == "run_cell":
            found = cells_.get(request["source"], cell_reply())
        elif op in ("call", "value", "has", "probe"):
            name = request.get("name") or request["target"]["path"][0]
            found = calls.get(name, {"ok": True, "plain": True, "value": 1})
        else:
            found = {"ok": True}
        return found(fake) if callable(found) else found

    return serve_forever(answer)


def started(launcher, *sources: str, timeouts: Timeouts = DEFAULTS, **kwargs):
    session = NotebookSession(launcher, cells(*sources), timeouts, **kwargs)
    session.run_notebook()
    return session


def statuses(session: NotebookSession) -> list[str]:
    return [r.status for r in session.records]


# --- starting a worker -------------------------------------------------------------------------


def test_each_worker_is_set_up_with_the_notebooks_seed_and_packages_before_any_cell(launchers):
    one = started(launchers(worker()), "a = 1", "b = 2", packages=("numpy",))
    same = started(launchers(worker()), "a = 1", "b = 2")
    other = started(launchers(worker()), "a = 1", "b = 3")

    setup, *rest = one.launcher.spawned[0].requests
    assert setup["op"] == "setup" and setup["packages"] == ["numpy"]
    assert [r["source"] for r in rest] == ["a = 1", "b = 2"]
    seeds = [s.launcher.spawned[0].requests[0]["seed"] for s in (one, same, other)]
    assert seeds[0] == seeds[1] != seeds[2]
    assert same.launcher.spawned[0].requests[0]["packages"] is None
    for session in (one, same, other):
        session.close()


def test_a_workers_notes_are_kept_once_however_often_it_restarts(launchers):
    launcher = launchers(worker({"crash": die}), notes=("no cgroup could be made",))
    session = started(launcher, "crash", "crash", "x = 1")
    session.close()

    assert session.restarts == 2
    assert session.notes == ["no cgroup could be made"]


def test_a_worker_that_breaks_its_setup_is_replaced_before_the_first_cell(launchers):
    setups = []

    def answer(fake, request):
        if request["op"] == "setup":
            setups.append(fake)
            return {"ok": "yes"} if len(setups) == 1 else {"ok": True}  # forged the first time
        return cell_reply()

    launcher = launchers(serve_forever(answer))
    session = started(launcher, "x = 1")
    session.close()

    assert statuses(session) == ["ok"]
    assert len(launcher.spawned) == 2 and session.restarts == 1
    assert launcher.spawned[0].killed()  # a forged reply: the worker is not trusted again
    assert sources_run(launcher.spawned[0]) == []


# --- replays and restart limits ----------------------------------------------------------------


def test_a_cell_that_dies_on_its_replay_costs_one_more_restart(launchers):
    runs = {"flaky": 0}

    def flaky(fake):
        runs["flaky"] += 1
        return die(fake) if runs["flaky"] == 2 else cell_reply()

    launcher = launchers(worker({"flaky": flaky, "crash": die}))
    session = started(launcher, "flaky", "crash", "after")
    session.close()

    assert statuses(session) == ["ok", "killed", "ok"]
    assert session.restarts == 2 and runs["flaky"] == 3
    assert [sources_run(f) for f in launcher.spawned] == [
        ["flaky", "crash"],
        ["flaky"],  # died replaying it
        ["flaky", "after"],
    ]


def test_a_notebook_that_keeps_dying_is_given_up_after_the_restart_limit(launchers):
    limit = session_mod.MAX_RESTARTS
    launcher = launchers(worker({"crash": die}))
    session = started(launcher, *["crash"] * (limit + 2), "x = 1")
    student = Student(session)

    assert statuses(session) == ["killed"] * (limit + 1) + ["skipped"] * 2
    skipped = session.records[-1]
    assert (skipped.ename, skipped.evalue) == (
        "WorkerDied",
        f"the notebook's process died {limit + 1} times",
    )
    assert session.gave_up == skipped.evalue
    assert len(launcher.spawned) == limit + 1
    assert grading._status(session) == "crashed"
    assert (
        f"cell {limit + 3} was not run: the notebook's process died"
        in grading._cell_errors(session)[-1]
    )
    with pytest.raises(
        WorkerGone,
        match=rf"^`x\(\.\.\.\)` could not be run: the notebook's process died {limit + 1} times$",
    ):
        student.x()
    assert len(launcher.spawned) == limit + 1  # no worker is started for the checks either
    session.close()


def test_a_crash_during_the_checks_replays_the_notebook_for_the_next_check(launchers):
    launcher = launchers(
        worker(
            {"bad = 1": cell_reply(error={"ename": "E", "evalue": "", "traceback": ""})},
            calls={"boom": die},
        )
    )
    session = started(launcher, "a = 1", "bad = 1", "b = 2")
    student = Student(session)

    with pytest.raises(
        WorkerGone,
        match=r"^`boom\(\.\.\.\)` could not be run: the notebook's process exited or crashed$",
    ):
        student.boom()
    assert student.f() == 1

    second = launcher.spawned[1]
    # Cells that ran are replayed, one that raised included: its other lines may define names.
    assert sources_run(second) == ["a = 1", "bad = 1", "b = 2"]
    assert second.requests[-1]["op"] == "call" and second.requests[-1]["target"]["path"] == ["f"]
    assert session.restarts == 1
    session.close()


def test_a_replay_that_uses_up_the_notebooks_time_skips_the_cell(launchers):
    def slow(fake):
        time.sleep(0.5)
        return cell_reply()

    launcher = launchers(worker({"slow": slow, "crash": die}))
    session = started(launcher, "slow", "crash", "x = 1", timeouts=Timeouts(cell=5, notebook=0.8))
    session.close()

    assert statuses(session) == ["ok", "killed", "skipped"]
    assert session.records[2].ename == "NotebookTimeout"
    assert (
        session.records[2].evalue == "the notebook used up its 0.8 s (replaying it after a crash)"
    )


# --- the memo of requests that ran out of time -------------------------------------------------


@pytest.mark.parametrize(
    ("ask", "name", "again"),
    [
        (lambda s: s.slow(), "slow", r"`slow\(\.\.\.\)` was not called again"),
        (lambda s: s.value(s.slow), "slow", r"`slow` was not asked for again"),
        (lambda s: s.has("slow"), "slow", r"`slow` was not asked for again"),
        (lambda s: s.probe.slow(3), "slow", r"`probe slow\(\.\.\.\)` was not called again"),
    ],
    ids=["call", "value", "has", "probe"],
)
def test_a_request_that_ran_out_of_time_is_not_asked_again(launchers, ask, name, again):
    launcher = launchers(worker(calls={name: hang}))
    session = started(launcher, "x = 1", timeouts=Timeouts(call=0.3))
    student = Student(session)

    with pytest.raises(
        WorkerGone,
        match=r"did not finish within 0.3 s and ignored the interrupt: is there an endless loop",
    ):
        ask(student)
    assert student.other() == 1  # the next check gets a new worker, the notebook replayed
    when = time.monotonic()
    with pytest.raises(
        WorkerGone, match=rf"^{again}: an earlier request did not finish within 0.3 s"
    ):
        ask(student)

    assert time.monotonic() - when < 0.1
    asked = [
        r for f in launcher.spawned for r in f.requests if r["op"] not in ("setup", "run_cell")
    ]
    assert len(asked) == 2  # the one that timed out, and other(); not the repeat
    assert len(launcher.spawned) == 2
    session.close()


def test_a_call_interrupted_in_time_keeps_its_worker_and_is_not_asked_again(launchers, long_grace):
    def late(fake):
        time.sleep(0.5)  # past the 0.2 s call, well within the grace period
        return {"ok": False, "kind": "interrupted", "message": "interrupted"}

    launcher = launchers(worker(calls={"late": late}))
    session = started(launcher, "x = 1", timeouts=Timeouts(call=0.2))
    student = Student(session)

    with pytest.raises(
        WorkerGone, match=r"^`late\(\.\.\.\)` did not finish within 0.2 s: is there"
    ):
        student.late()
    with pytest.raises(WorkerGone, match=r"^`late\(\.\.\.\)` was not called again"):
        student.late()
    assert student.other() == 1
    assert len(launcher.spawned) == 1 and session.restarts == 0
    session.close()


# --- what each failure becomes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (
            {"ok": False, "kind": "missing", "name": "f"},
            MissingName,
            r"^your notebook does not define `f`$",
        ),
        (
            {
                "ok": False,
                "kind": "raised",
                "ename": "ValueError",
                "evalue": "bad shape\n  deep internals",
            },
            StudentCodeRaised,
            r"^your code raised an error when the check called `f\(\.\.\.\)`: "
            r"ValueError: bad shape$",
        ),
        (
            {"ok": False, "kind": "raised", "ename": "KeyError", "evalue": ""},
            StudentCodeRaised,
            r"`f\(\.\.\.\)`: KeyError$",
        ),
        (
            {"ok": False, "kind": "not_plain", "message": "Thing"},
            NotPlainData,
            r"^`f\(\.\.\.\)` is not an array or number \(it is Thing\)$",
        ),
        (
            {"ok": False, "kind": "too_large", "message": "message too large"},
            CheckFailure,
            r"^`f\(\.\.\.\)` failed: message too large$",
        ),
        ({"ok": False, "kind": "mystery"}, CheckFailure, r"^`f\(\.\.\.\)` failed: mystery$"),
        (
            {"ok": "yes"},
            WorkerGone,
            r"^`f\(\.\.\.\)` could not be run: the worker's reply to 'call' broke the "
            r"protocol \('ok' must be true or false\)",
        ),
        (
            {"ok": True, "plain": False, "value": 3},
            WorkerGone,
            r"broke the protocol \(a value that stays in the worker must come as a handle\)",
        ),
    ],
    ids=[
        "missing",
        "raised",
        "raised-no-text",
        "not-plain",
        "too-large",
        "unknown-kind",
        "forged",
        "forged-handle",
    ],
)
def test_a_workers_answer_becomes_a_check_failure_the_student_reads(
    launchers, reply, error, message
):
    session = started(launchers(worker(calls={"f": reply})), "x = 1")

    with pytest.raises(error, match=message) as raised:
        Student(session).f()

    # All of them fail the check (an AssertionError to pytest), none is the grader's crash.
    assert isinstance(raised.value, AssertionError)
    if isinstance(raised.value, StudentCodeRaised):
        assert (raised.value.ename, raised.value.evalue) == (reply["ename"], reply["evalue"])
    session.close()


def test_a_request_to_a_dead_worker_fails_without_touching_the_wire(launchers):
    fake = FakeWorker(worker())
    fake.client.kill()

    with pytest.raises(
        WorkerFailure, match="the notebook's process is no longer running"
    ) as raised:
        fake.client.request({"op": "ping"}, 1.0)
    assert raised.value.kind == "died"
    assert fake.requests == []
    fake.close()


def test_a_worker_that_does_not_read_its_request_is_stopped_at_the_deadline():
    fake = FakeWorker(hang)  # never reads: a large request fills the socket's buffers

    failure = None
    try:
        fake.client.request({"op": "call", "args": [np.zeros(4_000_000)]}, 0.3)
    except WorkerFailure as exc:
        failure = exc
    assert failure is not None and failure.kind == "timeout"
    assert failure.message == "did not take the grader's request in time and was stopped"
    assert fake.killed()
    fake.close()


def test_a_worker_that_starts_without_its_pidfd_is_refused():
    grader_end, worker_end = socket.socketpair()
    worker_end.sendall(b"P")  # the byte, but no pidfd with it

    with pytest.raises(WorkerFailure, match=r"^the worker did not start") as raised:
        WorkerProcess(grader_end)
    assert raised.value.kind == "died"
    worker_end.close()


# --- grading one submission --------------------------------------------------------------------


def context(mini, launcher) -> GradingContext:
    asg, checks = mini
    return GradingContext(asg, tuple(checks), launcher, GradeOptions(), "none")


def prepared(launchers, mini, mini_assignment) -> tuple[GradingContext, Ran]:
    ctx = context(mini, launchers(worker()))
    sub = Submission("s1", "s1.ipynb", mini_assignment / "examples" / "good.ipynb")
    ran = grading.run_submission(sub, ctx)
    assert isinstance(ran, Ran)
    return ctx, ran


def not_called(session):
    raise AssertionError("no checks run for a submission whose notebook did not run")


def test_a_submission_that_cannot_be_graded_is_a_student_facing_row(launchers, mini, tmp_path):
    asg, checks = mini
    bad = tmp_path / "s1.ipynb"
    bad.write_text("not a notebook")
    ctx = context(mini, launchers(worker()))
    outcome = grading.run_submission(Submission("s1", "s1.ipynb", bad), ctx)

    result = grading.score(outcome, ctx, not_called)

    assert isinstance(outcome, NotGradable) and isinstance(outcome.problem, SubmissionProblem)
    assert result.status == outcome.problem.status != "grader_error"
    assert result.errors == (outcome.problem.message,)
    assert result.score == 0 and result.max_score == asg.max_score
    assert {t.message for t in result.tests} == {f"not graded: {outcome.problem.message}"}


def test_a_launcher_that_fails_is_a_grader_error_row_not_the_students_fault(mini, mini_assignment):
    class Broken:
        def spawn(self, slot: int = 0):
            raise OSError("the zygote is gone")

    sub = Submission("s1", "s1.ipynb", mini_assignment / "examples" / "good.ipynb")
    ctx = context(mini, Broken())
    outcome = grading.run_submission(sub, ctx)

    result = grading.score(outcome, ctx, not_called)

    assert isinstance(outcome, GraderCrash)
    assert "OSError: the zygote is gone" in outcome.detail
    assert (result.status, result.errors) == ("grader_error", (GRADER_ERROR_MESSAGE,))
    assert "OSError: the zygote is gone" in result.staff_details


def boom(session):
    raise RuntimeError("the plugin broke")


@pytest.mark.parametrize(
    ("run_checks", "detail"),
    [
        (boom, r"RuntimeError: the plugin broke"),
        (lambda session: ([], "collected nothing"), r"^no check results: collected nothing$"),
    ],
    ids=["raised", "no-results"],
)
def test_our_own_failure_is_a_grader_error_row_with_the_reason_for_staff(
    launchers, mini, mini_assignment, run_checks, detail
):
    asg, checks = mini
    ctx, ran = prepared(launchers, mini, mini_assignment)

    result = grading.score(ran, ctx, run_checks)

    assert result.status == "grader_error" and result.score == 0
    assert result.errors == (GRADER_ERROR_MESSAGE,)
    assert {t.message for t in result.tests} == {GRADER_ERROR_MESSAGE}
    assert len(result.tests) == len(checks)
    assert re.search(detail, result.staff_details)
    assert ran.session.worker is None  # the worker is closed whatever happened


def test_checks_run_against_the_prepared_session_make_the_row(launchers, mini, mini_assignment):
    asg, checks = mini
    ctx, ran = prepared(launchers, mini, mini_assignment)

    def run_checks(session):
        assert Student(session).corr2d() == 1  # the scripted worker's answer
        check = checks[0]
        passed = CheckResult(
            check.name,
            check.question,
            check.points,
            check.points,
            "passed",
            "",
            check.visibility,
            check.nodeid,
        )
        return [passed], "details for staff"

    result = grading.score(ran, ctx, run_checks)

    assert result.status == "graded" and result.score == checks[0].points
    assert result.staff_details == "details for staff"
    assert [c.status for c in result.execution.cells] == ["ok", "ok"]
    assert dict((q, s) for q, s, _ in result.questions)[checks[0].question] == checks[0].points


def test_a_cell_that_stops_when_interrupted_keeps_its_worker(launchers, long_grace):
    def late(fake):
        time.sleep(0.5)  # past the 0.3 s cell, well within the grace period
        return cell_reply(error={"ename": "KeyboardInterrupt", "evalue": "", "traceback": ""})

    launcher = launchers(worker({"late": late}))
    session = started(launcher, "a = 1", "late", "b = 2", timeouts=Timeouts(cell=0.3))
    session.close()

    assert statuses(session) == ["ok", "timeout", "ok"]
    assert session.records[1].evalue == "did not finish within 0.3 s"
    assert session.outputs[1] == [
        {
            "output_type": "error",
            "ename": "TimeoutError",
            "evalue": "did not finish within 0.3 s",
            "traceback": [],
        }
    ]
    assert len(launcher.spawned) == 1 and session.restarts == 0
    assert grading._status(session) == "timeout"


def test_once_the_checks_budget_is_spent_no_request_reaches_the_worker(launchers):
    def slow(fake):
        time.sleep(0.35)
        return {"ok": True, "plain": True, "value": 1}

    launcher = launchers(worker(calls={"slow": slow}))
    session = started(launcher, "x = 1", timeouts=Timeouts(call=5, checks=0.3))
    student = Student(session)

    with pytest.raises(WorkerGone, match=r"was stopped when the checks used up their 0.3 s"):
        student.slow()
    asked = len(launcher.spawned[0].requests)
    with pytest.raises(WorkerGone, match=r"^`f\(\.\.\.\)` could not be run: the checks used up"):
        student.f()
    assert len(launcher.spawned[0].requests) == asked
    session.close()
