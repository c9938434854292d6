"""End-to-end: the real CLI grades real notebooks in real sandboxed workers.

One batch (the fixture notebooks plus broken files made here) is graded once per session;
the tests below read its output files, as a user would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader.commands.cli import run

pytestmark = pytest.mark.slow

SECRET = "HIDDEN-CHECK-SOURCE-7f3a"


class Listener:
    """A TCP listener on 127.0.0.1 that records whether anybody connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connected = False
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connected = True
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def _write_nb(path: Path, *sources: str) -> None:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture(scope="session")
def batch(tmp_path_factory, engine_notebooks, mini_assignment):
    subs = tmp_path_factory.mktemp("subs")
    for nb in engine_notebooks.glob("*.ipynb"):
        shutil.copy(nb, subs / nb.name)
    good = (engine_notebooks / "good.ipynb").read_text()
    listener = Listener()
    _write_nb(
        subs / "network.ipynb",
        good
        and "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {listener.port}), timeout=3)\n"
        "print('CONNECTED')",
    )
    (subs / "not_json.ipynb").write_text("this is not json {")
    (subs / "json_not_notebook.ipynb").write_text(json.dumps({"hello": "world"}))
    (subs / "no_cells.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    r_nb = json.loads(good)
    r_nb["metadata"]["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    (subs / "r_kernel.ipynb").write_text(json.dumps(r_nb))
    (subs / "binary.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage")
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {},
        "worksheets": [
            {
                "cells": [
                    {"cell_type": "code", "language": "python", "input": "x = 1", "outputs": []}
                ]
            }
        ],
    }
    (subs / "old_v3.ipynb").write_text(json.dumps(v3))
    huge = json.loads(good)
    huge["cells"][1]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "x" * (100 * 2**20)}
    ]
    (subs / "huge_output.ipynb").write_text(json.dumps(huge))
    outside = tmp_path_factory.mktemp("outside") / "secret.ipynb"
    outside.write_text(good)
    (subs / "linked.ipynb").symlink_to(outside)
    (subs / "zdup").mkdir()
    shutil.copy(engine_notebooks / "partial.ipynb", subs / "zdup" / "good.ipynb")
    archive = tmp_path_factory.mktemp("zips") / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("alice/hw.ipynb", good)
        zf.writestr("../escape.ipynb", good)
    out = tmp_path_factory.mktemp("out")
    stdout, stderr = io.StringIO(), io.StringIO()
    env_before = os.environ.get("CONVGRADE_TEST_SECRET")
    os.environ["CONVGRADE_TEST_SECRET"] = "s3cr3t-value"
    try:
        code = run(
            [
                "grade",
                str(subs),
                str(archive),
                "-a",
                str(mini_assignment),
                "--out",
                str(out),
                "--jobs",
                "2",
            ],
            stdout,
            stderr,
        )
    finally:
        listener.close()
        if env_before is None:
            os.environ.pop("CONVGRADE_TEST_SECRET", None)
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    return {
        "code": code,
        "out": out,
        "rows": rows,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "listener": listener,
        "subs": subs,
        "archive": archive,
    }


def result(batch, sub_id: str) -> dict:
    return json.loads((batch["out"] / sub_id / "result.json").read_text())


def outputs_text(path: Path) -> str:
    """Everything the executed notebook's cells printed or displayed (not their source)."""
    nb = nbformat.read(path, as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def score(batch, sub_id: str) -> float:
    return float(batch["rows"][sub_id]["score"])


def test_batch_finishes_with_exit_1_because_some_files_are_not_notebooks(batch):
    assert batch["code"] == 1
    assert "not graded" in batch["stdout"]
    assert "mean score" in batch["stdout"] and "median score" in batch["stdout"]


def test_grades_csv_has_one_sorted_row_per_submission(batch):
    text = (batch["out"] / "grades.csv").read_text().splitlines()
    assert text[0] == "submission,score,max_score,status,corr2d,layer"
    ids = [line.split(",")[0] for line in text[1:]]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))


def test_correct_notebook_gets_full_marks(batch):
    assert batch["rows"]["good"]["score"] == "5"
    assert batch["rows"]["good"]["status"] == "graded"
    r = result(batch, "good")
    assert {t["status"] for t in r["tests"]} == {"passed"}
    assert set(r) >= {"submission", "score", "max_score", "status", "tests", "errors", "execution"}


def test_partially_wrong_notebook_loses_only_its_question(batch):
    row = batch["rows"]["partial"]
    assert (row["corr2d"], row["layer"]) == ("0", "2")
    failing = [t for t in result(batch, "partial")["tests"] if t["status"] == "failed"]
    assert all("corr2d(X, K) is wrong at index" in t["message"] for t in failing)


@pytest.mark.parametrize("sub_id", ["raising_middle", "syntax_error"])
def test_a_failing_cell_does_not_stop_the_rest(batch, sub_id):
    assert score(batch, sub_id) == 5
    errors = " ".join(result(batch, sub_id)["errors"])
    assert "cell 3 raised" in errors


@pytest.mark.parametrize("sub_id", ["infinite_loop", "ignores_sigint"])
def test_endless_loops_time_out_and_later_cells_still_count(batch, sub_id):
    r = result(batch, sub_id)
    assert r["status"] == "timeout"
    assert score(batch, sub_id) == 5
    assert any("was stopped" in e for e in r["errors"])


def test_sigint_ignoring_loop_is_killed_and_the_notebook_replayed(batch):
    assert result(batch, "ignores_sigint")["execution"]["restarts"] >= 1


def test_memory_hog_hits_the_limit_with_a_clear_reason(batch):
    r = result(batch, "memory_hog")
    assert r["status"] == "memory"
    assert any("MemoryError" in e for e in r["errors"])
    assert score(batch, "memory_hog") == 5


def test_os_exit_after_definitions_still_scores(batch):
    r = result(batch, "exits_early")
    assert score(batch, "exits_early") == 5
    assert r["execution"]["restarts"] >= 1


def test_monkeypatching_comparisons_does_not_raise_the_score(batch):
    assert score(batch, "monkeypatch") == score(batch, "partial") == 2


def test_object_with_lying_eq_and_array_does_not_pass(batch):
    assert batch["rows"]["liar"]["corr2d"] == "0"


def test_worker_cannot_import_reference_or_read_hidden_checks(batch):
    executed = outputs_text(batch["out"] / "snoop" / "executed.ipynb")
    assert "No module named 'reference'" in executed
    assert "IMPORTED REFERENCE" not in executed
    for name in ("executed.ipynb", "feedback.md", "result.json", "results.json"):
        assert SECRET not in (batch["out"] / "snoop" / name).read_text()
    assert "test_corr2d_hidden" not in executed


def test_no_network_from_the_worker(batch):
    assert not batch["listener"].connected
    executed = outputs_text(batch["out"] / "network" / "executed.ipynb")
    nb = nbformat.read(batch["out"] / "network" / "executed.ipynb", as_version=4)
    printed = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])]
    assert not any("CONNECTED" in text for text in printed)
    assert "unreachable" in executed or "refused" in executed


def test_all_child_processes_are_gone_after_grading(batch):
    executed = outputs_text(batch["out"] / "spawns_children" / "executed.ipynb")
    assert "50 children started" in executed
    left = subprocess.run(["pgrep", "-f", "sleep 4242"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_magics_work_and_shell_lines_are_reported(batch):
    r = result(batch, "magics")
    assert score(batch, "magics") == 5
    assert r["execution"]["shell_commands"] == ["ls /"]
    executed = nbformat.read(batch["out"] / "magics" / "executed.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # %matplotlib inline
    assert any("Wall time" in o.get("text", "") for o in outputs)  # %%time


def test_template_scores_zero_without_engine_errors(batch):
    assert batch["rows"]["template"]["score"] == "0"
    assert result(batch, "template")["status"] == "graded"
    messages = " ".join(t["message"] for t in result(batch, "template")["tests"])
    assert "NotImplementedError" in messages


@pytest.mark.parametrize(
    "sub_id, status, words",
    [
        ("not_json", "not_notebook", "not valid JSON"),
        ("json_not_notebook", "not_notebook", "not a Jupyter notebook"),
        ("no_cells", "empty", "no cells"),
        ("r_kernel", "wrong_kernel", "Python 3 kernel"),
        ("binary", "not_notebook", "not UTF-8"),
        ("huge_output", "too_large", "Clear all outputs"),
        ("linked", "unsafe_path", "outside the submission folder"),
        ("escape", "unsafe_path", "outside the archive"),
    ],
)
def test_bad_inputs_get_a_row_with_a_clear_reason(batch, sub_id, status, words):
    row = batch["rows"][sub_id]
    assert row["status"] == status
    assert row["score"] == "0"
    assert words in (batch["out"] / sub_id / "feedback.md").read_text()


def test_nbformat3_is_converted_and_graded(batch):
    r = result(batch, "old_v3")
    assert r["status"] == "graded"
    assert "converted from nbformat 3" in " ".join(r["execution"]["notes"])


def test_zip_members_and_duplicate_stems_get_deterministic_ids(batch):
    assert batch["rows"]["alice_hw"]["score"] == "5"  # path inside the zip, "/" replaced
    assert {"good", "good-2"} <= set(batch["rows"])
    mapping = (batch["out"] / "submissions.csv").read_text()
    assert "good-2," in mapping and "zdup" in mapping
    assert not list(Path("/tmp").glob("**/escape.ipynb"))


def test_worker_environment_is_scrubbed(tmp_path, mini_assignment):
    nb = tmp_path / "env.ipynb"
    _write_nb(nb, "import os\nprint(sorted(os.environ))\nprint(os.getuid())")
    os.environ["CONVGRADE_TEST_SECRET"] = "s3cr3t-value"
    try:
        code = run(
            ["grade", str(nb), "-a", str(mini_assignment), "--out", str(tmp_path / "o"), "-q"],
            io.StringIO(),
            io.StringIO(),
        )
    finally:
        os.environ.pop("CONVGRADE_TEST_SECRET")
    assert code == 0
    executed = outputs_text(tmp_path / "o" / "env" / "executed.ipynb")
    assert "CONVGRADE_TEST_SECRET" not in executed
    # root: an unprivileged uid of its own; an ordinary user: a user namespace of its own
    # in which the worker is that uid
    assert "600" in executed


def test_the_graders_own_files_are_out_of_reach(tmp_path, mini_assignment):
    """Whoever grades (root or an ordinary user): their private files, the output folder and
    the submissions' folder are not in the worker's view, and nothing there can be changed."""
    secret = Path.home() / f".convgrade-e2e-secret-{os.getpid()}"
    secret.write_text("instructor-only-token-51c2")
    os.chmod(secret, 0o600)
    out = tmp_path / "o"
    nb = tmp_path / "subs" / "snoop.ipynb"
    nb.parent.mkdir()
    probe = (
        "import os\n"
        f"for p in [{str(secret)!r}, {str(out)!r}, {str(nb)!r}, {str(Path.home())!r}]:\n"
        "    try:\n"
        "        print(p, 'READ', open(p).read()[:40] if os.path.isfile(p) else os.listdir(p))\n"
        "    except Exception as exc:\n"
        "        print(p, 'DENIED', type(exc).__name__)\n"
        f"os.makedirs({str(out / 'snoop')!r}, exist_ok=True)\n"
        f"open({str(out / 'grades.csv')!r}, 'w').write('snoop,40,40,graded')\n"
    )
    _write_nb(nb, probe)
    try:
        code = run(
            ["grade", str(nb.parent), "-a", str(mini_assignment), "--out", str(out), "-q"],
            io.StringIO(),
            io.StringIO(),
        )
    finally:
        secret.unlink()
    assert code == 0
    executed = outputs_text(out / "snoop" / "executed.ipynb")
    assert "instructor-only-token" not in executed
    for path in (secret, out, nb):
        assert f"{path} DENIED" in executed, executed
    assert secret.name not in executed.replace(str(secret), ""), executed
    assert "snoop,40,40" not in (out / "grades.csv").read_text()


def test_regrading_gives_the_same_scores_and_reuses_unchanged(batch, mini_assignment):
    before = (batch["out"] / "grades.csv").read_text()
    stderr = io.StringIO()
    code = run(
        [
            "grade",
            str(batch["subs"]),
            str(batch["archive"]),
            "-a",
            str(mini_assignment),
            "--out",
            str(batch["out"]),
        ],
        io.StringIO(),
        stderr,
    )
    assert code == 1
    assert (batch["out"] / "grades.csv").read_text() == before
    assert "unchanged, reused" in stderr.getvalue()


def test_python_dash_m_grader_is_the_same_program():
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "grade", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "--cell-timeout" in proc.stdout and "example" in proc.stdout


def test_each_submission_starts_from_the_same_clean_state(
    tmp_path, engine_notebooks, mini_assignment
):
    """A pre-warmed zygote must not carry one submission's state into the next."""
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("state_1_writer", "state_2_reader"):
        shutil.copy(engine_notebooks / f"{name}.ipynb", subs)
    out = tmp_path / "out"
    # One job: the reader runs after the writer, in a worker forked from the same zygote.
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(
        ["grade", str(subs), "-a", str(mini_assignment), "--out", str(out), "-q", "--jobs", "1"],
        stdout,
        stderr,
    )
    assert code == 0, stdout.getvalue() + stderr.getvalue()
    printed = outputs_text(out / "state_2_reader" / "executed.ipynb")
    for line in (
        "numpy attr: False",
        "module: False",
        "tmp file: False",
        "work file: False",
        "shm file: False",
        "cwd empty: True",
    ):
        assert line in printed


def test_a_function_that_times_out_is_not_called_again(batch):
    """Two corr2d checks, one timeout: the second check fails at once, with the reason."""
    r = result(batch, "slow_corr2d")
    corr = [t for t in r["tests"] if t["question"] == "corr2d"]
    assert len(corr) == 2
    assert any("did not finish within 5 s" in t["message"] for t in corr)
    assert any("was not called again" in t["message"] for t in corr)
    assert batch["rows"]["slow_corr2d"]["layer"] == "2"
    assert r["execution"]["checks_duration"] < 2 * 5 + 5


def test_hidden_paths_inside_the_python_installation_are_masked():
    """A non-editable install puts `reference` and checks inside site-packages: mask them."""
    import numpy

    from grader.sandbox.launcher import Launcher

    hidden_dir = Path(numpy.__file__).parent / "tests"
    hidden_file = Path(numpy.__file__).parent / "conftest.py"
    launcher = Launcher(preload=("numpy",), hidden=(hidden_dir, hidden_file))
    try:
        worker = launcher.spawn(0)
        reply = worker.request(
            {
                "op": "run_cell",
                "source": f"import os\nprint(os.listdir({str(hidden_dir)!r}), "
                f"os.path.getsize({str(hidden_file)!r}))",
            },
            30,
        )
        worker.close()
    finally:
        launcher.close()
    assert reply["outputs"][0]["text"].strip() == "[] 0"


def test_a_grading_process_that_dies_loses_no_row(
    tmp_path, engine_notebooks, mini_assignment, monkeypatch
):
    """With --jobs 2 the checks run in two forked grading processes; one dies mid-batch.

    It dies holding a submission it took: that one gets a grader_error row, and the other
    process grades everything else (the processes share one queue).
    """
    import grader.engine.batch

    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(4):
        shutil.copy(engine_notebooks / "good.ipynb", subs / f"s{i}.ipynb")
    original = grader.engine.batch._grade_here

    def dying(ctx, next_sub, emit):
        if ctx.first_slot == 4:  # the second grading process (forked: patch inherited)
            if next_sub() is not None:
                os._exit(9)
        else:
            time.sleep(1.0)  # let the other process take its submission first
        return original(ctx, next_sub, emit)

    monkeypatch.setattr(grader.engine.batch, "_grade_here", dying)
    out = tmp_path / "out"
    code = run(
        ["grade", str(subs), "-a", str(mini_assignment), "--out", str(out), "-q", "--jobs", "2"],
        io.StringIO(),
        io.StringIO(),
    )
    assert code == 1
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["s0", "s1", "s2", "s3"]
    statuses = sorted(r["status"] for r in rows.values())
    assert statuses == ["graded", "graded", "graded", "grader_error"]
    for sub_id, row in rows.items():
        if row["status"] == "grader_error":
            feedback = (out / sub_id / "feedback.md").read_text()
            assert "the autograder failed on this submission" in feedback
            assert "died" not in feedback  # the reason is for staff only
            assert "died" in json.loads((out / sub_id / "result.json").read_text())["staff_details"]


def test_a_worker_nobody_can_reach_is_refused_and_the_zygote_carries_on():
    """The grader's end of a new worker's channel is gone before the zygote hands over the
    worker: that one start fails with a reason, the next one works."""
    from grader.sandbox.launcher import Launcher

    launcher = Launcher(preload=("numpy",))
    try:
        launcher.start()
        zygote = launcher._zygote
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.close()
        request = {"op": "spawn", "namespaces": launcher.sandbox, "limits": {}, "env": {}}
        socket.send_fds(zygote.controls[0], [json.dumps(request).encode()], [theirs.fileno()])
        theirs.close()
        reply = json.loads(zygote.controls[0].recv(65536))
        assert reply["ok"] is False
        assert "could not start a worker" in reply["message"]
        worker = launcher.spawn(0)
        assert worker.request({"op": "ping"}, 10)["value"] == "pong"
        worker.close()
    finally:
        launcher.close()
