"""A hostile worker against one submission's session: time budgets, output caps, blacklist.

Fast: every worker is a scripted fake (tests/fakeworker.py); the session, the wire client,
the reply checks and the ``student`` proxy are the real ones.
"""

from __future__ import annotations

import time

import nbformat
import pytest
from fakeworker import FakeLauncher, cell_reply, serve_forever

from grader.engine import session as session_mod
from grader.engine import worker_process as client
from grader.engine.grading import executed_notebook
from grader.engine.notebook import Cell, LoadedNotebook
from grader.engine.outcome import Ran
from grader.engine.proxy import Student, WorkerGone
from grader.engine.session import NotebookSession, Timeouts
from grader.engine.submissions import Submission


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(client, "GRACE_SECONDS", 0.3)


@pytest.fixture
def launchers():
    made: list[FakeLauncher] = []

    def make(script) -> FakeLauncher:
        launcher = FakeLauncher(script)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.close()


def cells(*sources: str) -> tuple[Cell, ...]:
    return tuple(Cell(i, s) for i, s in enumerate(sources))


# --- 5. one time budget per submission ---------------------------------------------------------


def slow_then_crash(fake, request):
    """ "slow" takes 1 s each time it runs (first run and every replay); "crash" kills."""
    source = request.get("source", "")
    if source == "slow":
        time.sleep(1.0)
    if source == "crash":
        fake.sock.close()  # the worker process is gone
        return None
    return cell_reply()


def test_replays_after_crashes_share_the_notebook_budget(launchers):
    # Before: each replay after a crash got a fresh notebook budget (87 s against 20 s).
    launcher = launchers(serve_forever(slow_then_crash))
    session = NotebookSession(
        launcher,
        cells("slow", "slow", "crash", "crash", "crash", "x = 1"),
        Timeouts(cell=5, notebook=2.5),
    )

    started = time.monotonic()
    session.run_notebook()
    took = time.monotonic() - started
    session.close()

    # The budget, one grace period, slack. Before, the replay after the second crash got a
    # fresh budget and ran both slow cells again: 4 s.
    assert took < 2.5 + 0.3 + 0.6
    assert [r.status for r in session.records][-1] == "skipped"
    assert "used up its 2.5 s" in session.records[-1].evalue
    assert session.records[-1].ename == "NotebookTimeout"


def test_the_checks_share_one_budget(launchers):
    def answer(fake, request):
        if request["op"] == "call":
            time.sleep(0.6)
            return {"ok": True, "plain": True, "value": 1}
        return cell_reply()

    launcher = launchers(serve_forever(answer))
    session = NotebookSession(launcher, cells("x = 1"), Timeouts(call=5, notebook=60, checks=1.5))
    session.run_notebook()
    student = Student(session)

    assert student.f() == 1
    assert student.g() == 1
    with pytest.raises(WorkerGone, match=r"the checks used up their 1.5 s for this notebook"):
        for _ in range(3):
            student.h()
    session.close()


def test_a_value_fetch_that_timed_out_is_not_asked_for_again(launchers):
    # Before: only calls were blacklisted; a value whose .numpy() sleeps cost a timeout per
    # check.
    def answer(fake, request):
        if request["op"] == "value":
            time.sleep(2.0)
            return {"ok": True, "plain": True, "value": 1}
        return cell_reply()

    launcher = launchers(serve_forever(answer))
    session = NotebookSession(launcher, cells("x = 1"), Timeouts(call=0.5, notebook=60))
    session.run_notebook()
    student = Student(session)

    with pytest.raises(WorkerGone, match="did not finish within 0.5 s"):
        student.value(student.slow_value)
    asked = sum(len([r for r in f.requests if r["op"] == "value"]) for f in launcher.spawned)
    started = time.monotonic()
    with pytest.raises(WorkerGone, match="was not asked for again: an earlier request"):
        student.value(student.slow_value)
    assert time.monotonic() - started < 0.1
    assert sum(len([r for r in f.requests if r["op"] == "value"]) for f in launcher.spawned) == (
        asked
    )
    session.close()


# --- 3. bounded outputs per notebook -----------------------------------------------------------


def flood(fake, request):
    """Every cell answers with just under the per-reply cap of output (about 1.9 MB)."""
    return cell_reply("y" * 1_900_000)


def test_outputs_kept_per_notebook_are_capped_with_a_note(launchers, tmp_path):
    launcher = launchers(serve_forever(flood))
    sources = [f"print({i})" for i in range(40)]  # 40 x 1.9 MB = 76 MB sent
    session = NotebookSession(launcher, cells(*sources), Timeouts(cell=10, notebook=120))
    session.run_notebook()
    session.close()

    kept = sum(len(o.get("text", "")) for outs in session.outputs.values() for o in outs)
    assert kept <= session_mod.MAX_NOTEBOOK_OUTPUT_BYTES
    assert "were not kept: a notebook keeps at most 8 MiB of output" in session.output_note
    assert all(r.status == "ok" for r in session.records)  # a cap is not an error

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    loaded = LoadedNotebook(nb, cells(*sources), (), ())
    ran = Ran(Submission("flood", "flood.ipynb", None), loaded, session, 0.0)
    path = tmp_path / "executed.ipynb"
    path.write_text(nbformat.writes(executed_notebook(ran)))
    assert path.stat().st_size <= 20 * 10**6
    assert "[convgrade: outputs from cell" in path.read_text()


def test_cells_with_output_are_capped_too(launchers, monkeypatch):
    monkeypatch.setattr(session_mod, "MAX_CELLS_WITH_OUTPUT", 5)
    launcher = launchers(serve_forever(lambda fake, request: cell_reply("z")))
    session = NotebookSession(launcher, cells(*["1"] * 12), Timeouts())
    session.run_notebook()
    session.close()

    with_output = [i for i, outs in session.outputs.items() if outs]
    assert len(with_output) == 6  # five cells, then the note
    assert "from at most 5 cells" in session.outputs[5][0]["text"]


def test_a_forged_7_9_mb_reply_stops_the_worker_and_the_row_says_why(launchers):
    forged = cell_reply("x" * 7_900_000)
    launcher = launchers(
        serve_forever(lambda fake, r: forged if r.get("source") == "flood" else cell_reply())
    )
    session = NotebookSession(launcher, cells("x = 1", "flood", "y = 2"), Timeouts())
    session.run_notebook()
    session.close()

    assert [r.status for r in session.records] == ["ok", "killed", "ok"]
    assert "broke the protocol" in session.records[1].evalue
    assert session.output_bytes < 1_000_000


def test_a_notebook_of_many_failing_cells_lists_a_bounded_number(launchers):
    from grader.engine.grading import MAX_CELL_ERRORS, _cell_errors

    error = {"ename": "ValueError", "evalue": "no", "traceback": ""}
    launcher = launchers(serve_forever(lambda fake, request: cell_reply(error=error)))
    session = NotebookSession(launcher, cells(*["1"] * 300), Timeouts())
    session.run_notebook()
    session.close()

    errors = _cell_errors(session)

    assert len(errors) == MAX_CELL_ERRORS + 1
    assert errors[-1] == f"... and {300 - MAX_CELL_ERRORS} more cells like these"
