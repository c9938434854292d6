"""The core runtime in one process: real session, client, proxy, serve loop and executor.

Fast: each worker is the real request loop (:class:`grader.worker.serve.Server`) with the real
IPython executor, run in a thread on a socketpair (``real_worker`` in tests/fakeworker.py).
Cells cued ``DIE`` or ``HANG`` do what a crashing or endless cell would. No sandbox starts and
TensorFlow is hidden throughout: any import of it fails the test.
"""

from __future__ import annotations

import sys
import time

import nbformat
import numpy as np
import pytest
from fakeworker import InProcessLauncher, TensorFlowHidden, cells, real_worker, sources_run

from grader.engine import grading
from grader.engine.batch import grade_batch
from grader.engine.grading import GradeOptions, GradingContext
from grader.engine.loop import Graded, GradingLoop, Job
from grader.engine.proxy import (
    CheckFailure,
    MissingName,
    NotPlainData,
    Remote,
    Student,
    StudentCodeRaised,
    WorkerGone,
)
from grader.engine.session import NotebookSession, Timeouts
from grader.engine.submissions import Submission
from grader.worker import executor, imports, protocol, serve

pytestmark = pytest.mark.usefixtures("short_grace")

CUES = {"DIE": "die", "HANG": "hang"}
FAST = Timeouts(cell=5, notebook=30, call=5)


@pytest.fixture(autouse=True)
def no_tensorflow():
    with TensorFlowHidden() as hidden:
        yield hidden
    # A setup request configured the import policy in this process: back to "anything".
    imports.configure(None)
    assert hidden.attempts == [], "the runtime imported TensorFlow"


@pytest.fixture
def run(launchers):
    """Runs ``sources`` as a notebook in real in-process workers; returns the live session."""
    opened: list[NotebookSession] = []

    def start(*sources: str, timeouts: Timeouts = FAST, packages=None) -> NotebookSession:
        launcher = launchers(real_worker(CUES))
        session = NotebookSession(launcher, cells(*sources), timeouts, packages=packages)
        session.run_notebook()
        opened.append(session)
        return session

    yield start
    for session in opened:
        session.close()


def statuses(session: NotebookSession) -> list[str]:
    return [r.status for r in session.records]


# --- running cells -----------------------------------------------------------------------------


def test_each_cell_is_recorded_with_its_outputs_error_and_shell_commands(run, no_tensorflow):
    session = run("x = 41", "print('hello')\nx + 1", "1 / 0", "!ls /", "y = x + 1")

    assert statuses(session) == ["ok", "ok", "error", "ok", "ok"]
    error = session.records[2]
    assert (error.ename, error.evalue) == ("ZeroDivisionError", "division by zero")
    assert session.outputs[1] == [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {
            "output_type": "execute_result",
            "data": {"text/plain": "42"},
            "metadata": {},
            "execution_count": 2,
        },
    ]
    assert session.outputs[2][-1]["output_type"] == "error"
    assert session.shell_commands == ["ls /"]
    assert "shell command not run under grading: !ls /" in session.outputs[3][0]["text"]
    assert Student(session).value(Student(session).y) == 42
    assert "tensorflow" not in sys.modules
    assert no_tensorflow.attempts == []


def test_a_cell_that_replaces_a_builtin_gets_it_back_with_a_note(run):
    session = run("import builtins\nbuiltins.len = lambda v: 0", "n = len([1, 2, 3])")

    assert statuses(session) == ["ok", "ok"]
    assert "builtins were put back after this cell: len" in session.outputs[0][0]["text"]
    assert Student(session).value(Student(session).n) == 3


def test_the_same_notebook_draws_the_same_random_numbers(run):
    first = run("import random\nr = random.random()")
    again = run("import random\nr = random.random()")
    other = run("import random\nr = random.random()\n# another notebook")

    r1, r2 = (Student(s).value(Student(s).r) for s in (first, again))
    assert r1 == r2
    assert Student(other).value(Student(other).r) != r1


def test_an_undeclared_package_is_refused_and_named_where_it_is_used(run):
    session = run(
        "import json", "import IPython\nafter = 1", "IPython.get_ipython()", packages=("numpy",)
    )

    assert statuses(session) == ["ok", "ok", "error"]
    assert (
        "`import IPython` failed (PackageUnavailable: IPython is not available in the grading "
        "environment); the rest of this cell still ran"
    ) in session.outputs[1][0]["text"]
    assert Student(session).value(Student(session).after) == 1
    assert session.records[2].ename == "PackageUnavailable"
    assert session.records[2].evalue.startswith("IPython is not available")


# --- answering the checks ----------------------------------------------------------------------

DEFINITIONS = """
import numpy as np

def double(a):
    return np.asarray(a) * 2

class Acc:
    def __init__(self, start):
        self.total = start

    def add(self, v):
        self.total += v
        return self.total

def total_of(acc):
    return acc.total

def total_of_all(accs, more, by):
    return sum(a.total for a in [*accs, *more]) + by["extra"].total

def not_yet():
    raise NotImplementedError("write me")

def leave():
    raise SystemExit(3)

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")

def unprintable():
    raise Unprintable()

def clobber():
    import builtins
    builtins.len = lambda v: 0
    return 1

def length(v):
    return len(v)

def big():
    return "x" * 20_000

data = {"a": (1, 2.5), "b": [np.float32(1.5)], "c": np.arange(3)}
weird = object()
grid = np.eye(2)
"""


@pytest.fixture
def student(run):
    session = run(DEFINITIONS)
    assert statuses(session) == ["ok"]
    return Student(session)


def test_values_and_calls_come_back_as_plain_data(student):
    doubled = student.double(np.arange(3))
    value = student.value(student.data)

    assert isinstance(doubled, np.ndarray)
    np.testing.assert_array_equal(doubled, [0, 2, 4])
    np.testing.assert_array_equal(np.asarray(student.grid), np.eye(2))
    assert value["a"] == (1, 2.5) and value["b"] == [1.5]
    np.testing.assert_array_equal(value["c"], [0, 1, 2])
    assert student.has("double") and not student.has("nothing")


def test_an_object_stays_in_the_worker_and_is_used_through_its_handle(student):
    acc = student.Acc(10)

    assert isinstance(acc, Remote)
    assert repr(acc) == "<student object Acc(...) -> Acc>"
    assert acc.add(5) == 15
    assert acc.add(1) == 16  # the state is the worker's
    assert student.type_name(acc) == "Acc"
    assert student.total_of(acc) == 16  # a handle passed back as an argument
    assert student.value(acc.total) == 16
    with pytest.raises(AttributeError, match="cannot be modified from a check"):
        acc.total = 0


def test_a_released_handle_no_longer_reaches_its_object(student):
    acc = student.Acc(1)
    assert acc.add(1) == 2

    reply = student._session.request({"op": "release", "ids": [acc._base.id]})

    assert reply == {"ok": True}
    with pytest.raises(StudentCodeRaised, match="KeyError"):
        acc.add(1)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.nothing(), MissingName, r"your notebook does not define `nothing`$"),
        (
            lambda s: s.not_yet(),
            StudentCodeRaised,
            r"^your code raised an error when the check called `not_yet\(\.\.\.\)`: "
            r"NotImplementedError: write me \(this part is not written yet\)$",
        ),
        (lambda s: s.leave(), StudentCodeRaised, r"`leave\(\.\.\.\)`: SystemExit: 3$"),
        (
            lambda s: s.unprintable(),
            StudentCodeRaised,
            r"Exception: \(an exception that could not be printed\)$",
        ),
        (lambda s: s.value(s.weird), NotPlainData, r"^`weird` is not an array or number"),
        (lambda s: s.probe.nope(), CheckFailure, r"`probe nope\(\.\.\.\)` failed: no probe"),
    ],
    ids=["missing", "not-written", "system-exit", "unprintable", "not-plain", "no-probe"],
)
def test_what_the_student_code_did_wrong_is_said_plainly(student, call, error, message):
    with pytest.raises(error, match=message):
        call(student)
    # The worker survives all of these and answers the next call.
    np.testing.assert_array_equal(student.double(1), 2)


def test_a_missing_name_is_said_plainly_whatever_is_asked_of_it(student):
    with pytest.raises(MissingName, match=r"^your notebook does not define `nothing`$"):
        student.value(student.nothing)
    with pytest.raises(MissingName, match=r"^your notebook does not define `nothing`$"):
        student.type_name(student.nothing)


def test_a_check_that_keeps_too_many_objects_alive_is_stopped(student, monkeypatch):
    monkeypatch.setattr(serve, "MAX_HANDLES", 2)
    kept = [student.Acc(1), student.Acc(2)]
    assert [k.add(0) for k in kept] == [1, 2]

    with pytest.raises(StudentCodeRaised, match=r"RuntimeError: too many live objects$"):
        student.Acc(3)


def test_a_call_stopped_by_an_interrupt_is_a_failed_check(run):
    session = run("def stop():\n    raise KeyboardInterrupt")

    with pytest.raises(CheckFailure, match=r"^`stop\(\.\.\.\)` failed: interrupted$"):
        Student(session).stop()


def test_a_request_without_a_target_is_refused_by_the_worker(student):
    reply = student._session.request({"op": "value", "target": {"base": None, "path": []}})

    assert (reply["ok"], reply["kind"], reply["ename"], reply["evalue"]) == (
        False,
        "raised",
        "ValueError",
        "empty target",
    )


def test_a_shell_prepared_in_the_zygote_serves_one_worker_only():
    executor.prepare_runner()
    prepared = executor._prepared

    assert executor.take_runner() is prepared
    assert executor.take_runner() is not prepared  # the next worker builds its own


def test_a_check_that_replaces_a_builtin_does_not_break_the_worker(student):
    assert student.clobber() == 1
    assert student.length([1, 2, 3]) == 3


def test_a_reply_too_large_for_the_wire_is_refused_in_the_worker(student, monkeypatch):
    monkeypatch.setattr(protocol, "MAX_JSON_BYTES", 10_000)

    with pytest.raises(CheckFailure, match=r"`big\(\.\.\.\)` failed: message too large"):
        student.big()


def test_an_unknown_operation_is_a_usage_reply(student):
    reply = student._session.request({"op": "nonsense"})
    assert reply == {"ok": False, "kind": "usage", "message": "unknown op 'nonsense'"}
    assert student._session.request({"op": "ping"}) == {"ok": True, "value": "pong"}


def test_a_checks_seed_makes_its_draws_repeatable(run):
    session = run("import random\ndef draw():\n    return random.random()")
    student = Student(session)

    session.request({"op": "seed", "seed": 5})
    first = student.draw()
    session.request({"op": "seed", "seed": 5})
    assert student.draw() == first
    session.request({"op": "seed", "seed": 6})
    assert student.draw() != first


# --- crashes, hangs and replays ----------------------------------------------------------------


def test_after_a_crash_the_completed_cells_are_replayed_in_a_fresh_worker(run):
    session = run("x = 41", "DIE", "y = x + 1")

    assert statuses(session) == ["ok", "killed", "ok"]
    assert session.records[1].ename == "WorkerDied"
    assert session.records[1].evalue == "the notebook's process exited or crashed"
    assert session.restarts == 1 and session.generation == 2
    first, second = session.launcher.spawned
    assert sources_run(first) == ["x = 41", "DIE"]
    assert sources_run(second) == ["x = 41", "y = x + 1"]  # the replay, then the next cell
    assert Student(session).value(Student(session).y) == 42


def test_a_cell_that_hangs_is_stopped_and_never_replayed(run):
    started = time.monotonic()
    session = run("a = 1", "HANG", "b = a + 1", timeouts=Timeouts(cell=0.5, notebook=30))
    took = time.monotonic() - started

    assert statuses(session) == ["ok", "timeout", "ok"]
    assert session.records[1].ename == "Timeout"
    assert session.records[1].evalue == "did not finish within 0.5 s and ignored the interrupt"
    assert sources_run(session.launcher.spawned[1]) == ["a = 1", "b = a + 1"]
    assert Student(session).value(Student(session).b) == 2
    assert took < 0.5 + 0.3 + 2.0  # the cell's limit, one grace period, slack for IPython


def test_an_object_from_before_a_restart_is_refused_by_name(run):
    session = run("class Box:\n    def get(self):\n        return 7\nbox = Box()")
    student = Student(session)
    old = student.Box()
    assert old.get() == 7

    session.worker.kill()  # the worker dies between two checks
    assert student.box.get() == 7  # a notebook-level name is found again after the replay
    with pytest.raises(WorkerGone, match=r"`Box\(\.\.\.\) -> Box.get` no longer exists"):
        old.get()


# --- grading one submission --------------------------------------------------------------------


def graded(launchers, mini, path):
    asg, checks = mini
    options = GradeOptions(timeouts=FAST)
    launcher = launchers(real_worker(CUES))
    ctx = GradingContext(asg, tuple(checks), launcher, options, "in-process test worker")
    outcome = grading.run_submission(Submission(path.stem, path.name, path), ctx)
    results: list[Graded] = []
    jobs = iter([Job(outcome, results.append)])
    GradingLoop(ctx, lambda: next(jobs, None)).run()  # the checks, as a batch runs them
    return results[0].result


@pytest.mark.parametrize(("example", "score"), [("good", 5), ("partial", 2)])
def test_a_submission_is_graded_by_the_assignments_checks(
    launchers, mini, mini_assignment, example, score
):
    result = graded(launchers, mini, mini_assignment / "examples" / f"{example}.ipynb")

    assert (result.status, result.score, result.max_score) == ("graded", score, 5)
    assert result.execution.isolation == "in-process test worker"
    assert {t.status for t in result.tests} == ({"passed"} if score == 5 else {"passed", "failed"})


def test_a_crash_in_the_middle_costs_no_points_the_replay_can_save(
    launchers, mini, mini_assignment, tmp_path
):
    nb = nbformat.read(mini_assignment / "examples" / "good.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("DIE"))
    path = tmp_path / "crashes.ipynb"
    nbformat.write(nb, path)

    result = graded(launchers, mini, path)

    assert (result.status, result.score) == ("crashed", 5)
    assert result.execution.restarts == 1
    assert "cell 3: the notebook's process exited or crashed" in result.errors


# --- what crosses back: real data only ---------------------------------------------------------

CLAIMS = """
import numpy as np

class LyingInt(int):
    def __eq__(self, other):
        return True

class LyingStr(str):
    def __str__(self):
        return "forged"

class Tensorish:
    def numpy(self):
        return np.ones(2)

class Broken:
    def numpy(self):
        raise ValueError("no")

class TensorShape:
    def __init__(self, dims):
        self.dims = dims

    def as_list(self):
        if self.dims is None:
            raise ValueError("unknown rank")
        return self.dims

nested = []
for _ in range(40):
    nested = [nested]

lying_int = LyingInt(3)
lying_float = type("LyingFloat", (float,), {"__float__": lambda self: 0.0})(2.5)
lying_str = LyingStr("real")
tensor = Tensorish()
broken = Broken()
shape = TensorShape([2, None])
no_rank = TensorShape(None)
objects = np.array([object()])
int_keys = {1: "a"}
long_text = "z" * 1_000_001
"""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lying_int", 3),
        ("lying_float", 2.5),
        ("lying_str", "real"),
        ("tensor", [1.0, 1.0]),
        ("shape", (2, None)),
    ],
)
def test_an_object_that_claims_to_be_data_is_sent_as_what_it_really_holds(run, name, expected):
    student = Student(run(CLAIMS))

    value = student.value(getattr(student, name))

    assert type(value) is type(np.asarray(expected) if name == "tensor" else expected)
    np.testing.assert_equal(value, np.asarray(expected) if name == "tensor" else expected)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("broken", r"\.numpy\(\) raised ValueError"),
        ("no_rank", "shape of unknown rank"),
        ("objects", "array of dtype object"),
        ("int_keys", "dict with non-str keys"),
        ("nested", "nested too deeply"),
        ("long_text", "string too long"),
    ],
)
def test_what_is_not_plain_data_stays_in_the_worker(run, name, why):
    student = Student(run(CLAIMS))

    with pytest.raises(NotPlainData, match=rf"^`{name}` is not an array or number \(it is {why}\)"):
        student.value(getattr(student, name))
    assert student.type_name(getattr(student, name)) != ""  # still there, as a handle would be


def test_objects_inside_lists_tuples_and_dicts_are_passed_as_handles(student):
    one, two, three = student.Acc(1), student.Acc(2), student.Acc(4)

    assert student.total_of_all([one, two], (three,), by={"extra": three}) == 11
    assert student.code_cells() == (DEFINITIONS,)
    with pytest.raises(AttributeError):
        student._private  # noqa: B018


# --- what a cell shows -------------------------------------------------------------------------


def test_a_cells_outputs_are_bounded_and_cleared_as_ipython_does(run):
    session = run(
        "print('p' * 100_000)",
        "from IPython.display import HTML, clear_output, display\n"
        "display('gone')\nclear_output()\ndisplay('kept')",
        "for _ in range(6):\n    display(HTML('h' * 60_000))",
        "class Long:\n    def __repr__(self):\n        return 'y' * 70_000\nLong()",
    )
    printed, cleared, many, long = (session.outputs[i] for i in range(4))

    cut = 100_001 - executor.MAX_STREAM_CHARS  # print adds a newline
    assert printed[0]["text"].endswith(f"[convgrade: {cut} more characters of output were cut]\n")
    assert [o["data"]["text/plain"] for o in cleared] == ["'kept'"]
    assert len(many) == executor.MAX_CELL_OUTPUT_CHARS // 60_000  # the rest was dropped
    text = long[0]["data"]["text/plain"]
    assert text == "y" * executor.MAX_STREAM_CHARS + " [cut]"


def test_a_batch_grades_each_submission_once_and_reuses_unchanged_results(
    mini, mini_assignment, tmp_path
):
    asg, checks = mini
    examples = mini_assignment / "examples"
    subs = [Submission(n, f"{n}.ipynb", examples / f"{n}.ipynb") for n in ("good", "partial")]
    options = GradeOptions(timeouts=FAST)
    runs = []
    for _ in range(2):
        launcher, progress = InProcessLauncher(CUES), []
        try:
            results = grade_batch(
                subs, asg, checks, launcher, options, tmp_path, on_progress=progress.append
            )
        finally:
            launcher.close()
        runs.append((results, progress, len(launcher.spawned)))

    (first, seen_first, spawned_first), (second, seen_second, spawned_second) = runs
    assert [(r.submission, r.score, r.status) for r in first] == [
        ("good", 5, "graded"),
        ("partial", 2, "graded"),
    ]
    assert spawned_first == 2 and not any(p.reused for p in seen_first)
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]
    assert spawned_second == 0 and all(p.reused for p in seen_second)
    assert [p.done for p in seen_second] == [1, 2]
    assert (tmp_path / "grades.csv").read_text().count("\n") == 3
