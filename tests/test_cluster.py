"""``convgrade grade --cluster``: real Dask workers (LocalCluster, processes), real sandboxes.

The cluster is started here, outside convgrade, as a user would start one; convgrade only
gets its address.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from grader.cli import run

distributed = pytest.importorskip("distributed", reason="needs pip install convgrade[cluster]")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assignments" / "convolutions" / "examples"
MISTAKES = ROOT / "tests" / "fixtures" / "mistakes"
SECRET = "HIDDEN-CHECK-SOURCE-7f3a"


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as lc:
        with Client(lc, set_as_default=False) as client:
            yield lc, client


def _grade(paths, out: Path, *extra: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(["grade", *map(str, paths), "--out", str(out), *extra], stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def _rows(out: Path) -> list[dict]:
    with open(out / "grades.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _without_wall_time(summary: str) -> list[str]:
    return [line for line in summary.splitlines() if not line.startswith(("wall time", "results"))]


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def test_the_same_grades_as_local_grading_and_a_rerun_reuses(cluster, tmp_path):
    lc, _ = cluster
    subs = tmp_path / "subs"
    shutil.copytree(EXAMPLES, subs, ignore=shutil.ignore_patterns("*.toml"))
    for name in ("mistake_01_flipped_kernel", "mistake_05_conv2d_without_bias"):
        shutil.copy(MISTAKES / f"{name}.ipynb", subs / f"{name}.ipynb")
    (subs / "not_json.ipynb").write_text("this is not json {")

    local = _grade([subs], tmp_path / "local", "--jobs", "2")
    remote = _grade([subs], tmp_path / "remote", "--cluster", lc.scheduler_address)

    assert remote[0] == local[0] == 1  # not_json cannot be graded: exit 1 in both
    local_csv = (tmp_path / "local" / "grades.csv").read_bytes()
    assert (tmp_path / "remote" / "grades.csv").read_bytes() == local_csv
    assert len(_rows(tmp_path / "remote")) == 8
    assert _without_wall_time(remote[1]) == _without_wall_time(local[1])
    # The same progress lines (in the order results arrived), counting 1..8.
    lines = remote[2].splitlines()[-8:]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/8" for i in range(1, 9)]
    assert sorted(x.split("] ")[1] for x in lines) == sorted(
        x.split("] ")[1] for x in local[2].splitlines()[-8:]
    )
    for sub in ("full_marks", "not_json"):
        ours = json.loads((tmp_path / "remote" / sub / "result.json").read_text())
        theirs = json.loads((tmp_path / "local" / sub / "result.json").read_text())
        assert ours["fingerprint"] == theirs["fingerprint"]
        assert ours["execution"]["isolation"] == theirs["execution"]["isolation"]
    assert (tmp_path / "remote" / "full_marks" / "executed.ipynb").is_file()

    again = _grade([subs], tmp_path / "remote", "--cluster", lc.scheduler_address)
    assert again[0] == 1
    assert again[2].count("(unchanged, reused)") == 8
    assert (tmp_path / "remote" / "grades.csv").read_bytes() == local_csv


def test_a_worker_killed_mid_batch_still_gives_every_row(cluster, tmp_path, mini_assignment):
    lc, client = cluster
    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(16):
        name = "good" if i % 2 == 0 else "partial"
        shutil.copy(mini_assignment / "examples" / f"{name}.ipynb", subs / f"s{i:02d}_{name}.ipynb")
    out = tmp_path / "out"
    done: dict = {}
    args = ("-a", str(mini_assignment), "--cluster", lc.scheduler_address)
    thread = threading.Thread(target=lambda: done.update(result=_grade([subs], out, *args)))
    thread.start()
    deadline = time.monotonic() + 90
    while not list(out.glob("*/result.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(out.glob("*/result.json")), "no result arrived in 90 s"
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the batch did not finish after a worker was killed"
    code, stdout, _ = done["result"]
    assert code == 0, stdout
    assert victim not in client.run(os.getpid).values()  # it really died (and was replaced)
    rows = _rows(out)
    assert sorted(r["submission"] for r in rows) == sorted(p.stem for p in subs.iterdir())
    for row in rows:
        expected = "5" if row["submission"].endswith("good") else "2"
        assert (row["score"], row["status"]) == (expected, "graded"), row


def test_a_hostile_notebook_stays_confined_on_a_dask_worker(cluster, tmp_path, engine_notebooks):
    lc, _ = cluster
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(engine_notebooks / "snoop.ipynb", subs)
    listener = _listener()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import socket\n"
                f"s = socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), "
                "timeout=3)\nprint('CONNECTED')"
            )
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, subs / "network.ipynb")
    out = tmp_path / "out"
    try:
        code, stdout, _ = _grade(
            [subs],
            out,
            "-a",
            str(ROOT / "tests" / "fixtures" / "mini"),
            "--cluster",
            lc.scheduler_address,
        )
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert code == 0, stdout
    snoop = _outputs(out / "snoop" / "executed.ipynb")
    assert "No module named 'reference'" in snoop
    assert "IMPORTED REFERENCE" not in snoop
    assert "test_corr2d_hidden" not in snoop
    for name in ("executed.ipynb", "feedback.md", "result.json", "results.json"):
        assert SECRET not in (out / "snoop" / name).read_text()
    network = _outputs(out / "network" / "executed.ipynb")
    assert "CONNECTED" not in network.replace("create_connection", "")
    assert "unreachable" in network or "refused" in network
    assert json.loads((out / "snoop" / "result.json").read_text())["execution"][
        "isolation"
    ].startswith("sandboxed")


def test_tasks_go_only_to_workers_with_the_resources_asked_for(cluster, tmp_path, mini_assignment):
    lc, client = cluster
    assignment = tmp_path / "mini"
    shutil.copytree(mini_assignment, assignment)
    toml = assignment / "assignment.toml"
    toml.write_text(toml.read_text() + "resources = {GPU = 1}\n")  # under [worker], last
    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(4):
        shutil.copy(mini_assignment / "examples" / "good.ipynb", subs / f"g{i}.ipynb")
    gpu = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", lc.scheduler_address]
        + ["--nthreads", "1", "--resources", "GPU=1", "--no-dashboard", "--name", "gpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client.wait_for_workers(3, timeout=60)

        def executed(dask_worker) -> int:
            return dask_worker.state.executed_count

        before = client.run(executed)
        code, stdout, _ = _grade(
            [subs], tmp_path / "out", "-a", str(assignment), "--cluster", lc.scheduler_address
        )
        after = client.run(executed)
        workers = client.scheduler_info()["workers"]
        names = {w.get("name", w.get("id")): addr for addr, w in workers.items()}
    finally:
        gpu.terminate()
        gpu.wait(timeout=30)
    assert code == 0, stdout
    assert [r["score"] for r in _rows(tmp_path / "out")] == ["5"] * 4
    ran = {addr: after[addr] - before.get(addr, 0) for addr in after}
    assert "gpu" in names, names
    assert ran.pop(names["gpu"]) == 4
    assert set(ran.values()) == {0}, ran


def test_a_bad_resources_table_is_a_staff_error(tmp_path, mini_assignment):
    from grader.assignment import load
    from grader.cluster import worker_resources
    from grader.errors import StaffError

    assignment = tmp_path / "mini"
    shutil.copytree(mini_assignment, assignment)
    toml = assignment / "assignment.toml"
    toml.write_text(toml.read_text() + 'resources = {GPU = "one"}\n')
    with pytest.raises(StaffError, match=r"resources .* must be a table of positive numbers"):
        worker_resources(load(assignment))


def test_no_scheduler_at_the_address_is_exit_2_with_the_fix(tmp_path, mini_assignment, monkeypatch):
    import grader.cluster

    monkeypatch.setattr(grader.cluster, "CONNECT_TIMEOUT_S", 2)
    sub = tmp_path / "good.ipynb"
    shutil.copy(mini_assignment / "examples" / "good.ipynb", sub)
    code, _, err = _grade(
        [sub], tmp_path / "out", "-a", str(mini_assignment), "--cluster", "tcp://127.0.0.1:9"
    )
    assert code == 2
    assert "no Dask scheduler answered at tcp://127.0.0.1:9" in err


def _listener():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    return sock
