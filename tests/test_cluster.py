"""``convgrade grade --cluster``: real Dask workers (LocalCluster, processes), real sandboxes.

The cluster is started here, outside convgrade, as a user would start one; convgrade only
gets its address.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

from grader.commands.cli import run

distributed = pytest.importorskip("distributed", reason="needs pip install convgrade[cluster]")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assignments" / "convolutions" / "examples"
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


def _grade_cli(paths, out: Path, *extra: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "grade", *map(str, paths), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


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
    subs.mkdir()
    # The five realistic examples and two mistake fixtures (all in the assignment's examples).
    for name in (
        "full_marks",
        "flipped_kernel",
        "no_bias_and_uphill",
        "errors_halfway",
        "untouched_template",
        "mistake_01_flipped_kernel",
        "mistake_05_conv2d_without_bias",
    ):
        shutil.copy(EXAMPLES / f"{name}.ipynb", subs / f"{name}.ipynb")
    (subs / "not_json.ipynb").write_text("this is not json {")

    # As a user runs them: in this (pytest) process, pytest's assertion rewriting would
    # also rewrite the check modules and add its explanations to the local run's messages.
    local = _grade_cli([subs], tmp_path / "local", "--jobs", "2")
    remote = _grade_cli([subs], tmp_path / "remote", "--cluster", lc.scheduler_address)

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
    for folder in (tmp_path / "local").iterdir():
        if not folder.is_dir():
            continue
        ours = json.loads((tmp_path / "remote" / folder.name / "result.json").read_text())
        theirs = json.loads((folder / "result.json").read_text())
        # Every check's outcome and message: hidden inputs drawn with the same secret.
        for key in ("tests", "errors", "questions", "answers", "status", "fingerprint"):
            assert ours[key] == theirs[key], (folder.name, key)
        assert ours["execution"]["isolation"] == theirs["execution"]["isolation"]
    assert (tmp_path / "remote" / "full_marks" / "executed.ipynb").is_file()

    again = _grade([subs], tmp_path / "remote", "--cluster", lc.scheduler_address)
    assert again[0] == 1
    assert again[2].count("(unchanged, reused)") == 8
    assert (tmp_path / "remote" / "grades.csv").read_bytes() == local_csv


def test_a_worker_killed_mid_batch_still_gives_every_row(cluster, tmp_path, mini_assignment):
    lc, client = cluster
    # Notebooks that sleep 1.5 s keep both Dask workers busy: the kill hits a running task.
    subs = _slow_batch(tmp_path / "subs", mini_assignment, 8)
    for i in range(4):
        shutil.copy(mini_assignment / "examples" / "partial.ipynb", subs / f"partial{i}.ipynb")
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
    # Its copy of the assignment (hidden checks, secret) went with its replacement's setup.
    assert not list(Path(tempfile.gettempdir()).glob(f"convgrade-cluster-{victim}-*"))
    rows = _rows(out)
    assert sorted(r["submission"] for r in rows) == sorted(p.stem for p in subs.iterdir())
    for row in rows:
        expected = "5" if row["submission"].startswith("slow") else "2"
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


def test_resources_no_worker_has_are_exit_2_not_a_wait_forever(
    cluster, tmp_path, mini_assignment, monkeypatch
):
    import grader.cluster.dask_client

    monkeypatch.setattr(grader.cluster.dask_client, "CONNECT_TIMEOUT_S", 2)
    lc, _ = cluster
    assignment = tmp_path / "mini"
    shutil.copytree(mini_assignment, assignment)
    toml = assignment / "assignment.toml"
    toml.write_text(toml.read_text() + "resources = {TPU = 1}\n")  # under [worker], last
    sub = tmp_path / "good.ipynb"
    shutil.copy(mini_assignment / "examples" / "good.ipynb", sub)
    code, _, err = _grade(
        [sub], tmp_path / "out", "-a", str(assignment), "--cluster", lc.scheduler_address
    )
    assert code == 2
    assert "has no worker with {'TPU': 1.0}" in err
    assert "--resources TPU=1" in err


@pytest.mark.parametrize("kept", ["in the folder", "in the config folder"])
def test_the_assignment_travels_with_its_secret_and_without_its_solution(
    tmp_path, mini_assignment, monkeypatch, kept
):
    import tarfile

    from grader.authoring.assignment import load
    from grader.cluster.dask_client import pack_assignment
    from grader.cluster.dask_worker import _extract
    from grader.engine import seeding

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root = tmp_path / "mini"
    shutil.copytree(mini_assignment, root, ignore=shutil.ignore_patterns("secret"))
    if kept == "in the config folder":  # where a read-only assignment folder keeps it
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        fallback = seeding._fallback_dir() / f"{root.name}-{tag}"
        fallback.parent.mkdir(parents=True)
        fallback.write_text("c" * 64 + "\n")
    secret = seeding.assignment_secret(root)
    data = pack_assignment(load(root))
    assert (root / "secret").is_file() == (kept == "in the folder")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        _extract(tar, unpacked)  # as a Dask worker unpacks it
    assert seeding.assignment_secret(unpacked) == secret
    assert (unpacked / "checks" / "hidden").is_dir()
    assert not (unpacked / "source.ipynb").exists()
    assert not (unpacked / "examples").exists()


def test_a_worker_that_cannot_set_up_grading_is_exit_2_with_its_reason(
    cluster, tmp_path, mini_assignment
):
    """Setup fails the same way for a missing sandbox; here, another convgrade version."""
    from grader.authoring.assignment import load
    from grader.cluster.dask_client import _register, pack_assignment
    from grader.cluster.dask_worker import GradingWorkerPlugin
    from grader.engine.grading import GradeOptions
    from grader.errors import StaffError

    lc, client = cluster
    asg = load(mini_assignment)
    plugin = GradingWorkerPlugin(
        "convgrade-test-version", asg.root.name, pack_assignment(asg), [], GradeOptions(),
        512, "require", version="0.0.0-elsewhere",
    )  # fmt: skip
    try:
        with pytest.raises(StaffError, match=r"could not set up grading: .*the client 0\.0\.0"):
            _register(client, plugin, "convgrade-test-version", lc.scheduler_address, {})
    finally:
        client.unregister_worker_plugin("convgrade-test-version")
    names = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert all("convgrade-test-version" not in n for n in names.values())


def test_a_bad_resources_table_is_a_staff_error(tmp_path, mini_assignment):
    from grader.authoring.assignment import load
    from grader.cluster.dask_client import worker_resources
    from grader.errors import StaffError

    assignment = tmp_path / "mini"
    shutil.copytree(mini_assignment, assignment)
    toml = assignment / "assignment.toml"
    toml.write_text(toml.read_text() + 'resources = {GPU = "one"}\n')
    with pytest.raises(StaffError, match=r"resources .* must be a table of positive numbers"):
        worker_resources(load(assignment))


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_no_scheduler_at_the_address_is_exit_2_with_the_fix(
    tmp_path, mini_assignment, monkeypatch, how
):
    import grader.cluster.dask_client

    monkeypatch.setattr(grader.cluster.dask_client, "CONNECT_TIMEOUT_S", 2)
    sub = tmp_path / "good.ipynb"
    shutil.copy(mini_assignment / "examples" / "good.ipynb", sub)
    extra = ["--cluster", "tcp://127.0.0.1:9"]
    if how == "environment":  # no flag: $DASK_SCHEDULER_ADDRESS says where
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", extra.pop())
        extra.pop()
    code, _, err = _grade([sub], tmp_path / "out", "-a", str(mini_assignment), *extra)
    assert code == 2
    assert "no Dask scheduler answered at tcp://127.0.0.1:9" in err
    assert not (tmp_path / "out").exists()


def _listener():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    return sock


class ExternalCluster:
    """A scheduler and Dask workers started with Dask's own commands, as on real machines."""

    def __init__(self, folder: Path, workers: int, env: dict | None = None) -> None:
        self.file = folder / "scheduler.json"
        self.file.unlink(missing_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.scheduler = self._start(
            "scheduler", "--scheduler-file", str(self.file), "--port", "0", "--no-dashboard"
        )
        deadline = time.monotonic() + 60
        while not self.file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = self._start(
            "worker",
            self.address,
            *("--nworkers", str(workers), "--nthreads", "1", "--no-dashboard"),
        )
        from distributed import Client

        with Client(self.address, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)

    def _start(self, command: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.dask_{command}", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: ended below, with its children
        )

    def close(self) -> None:
        for proc in (self.workers, self.scheduler):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.workers, self.scheduler):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _slow_batch(folder: Path, mini: Path, n: int) -> Path:
    """``n`` copies of the mini assignment's full-marks notebook that also sleep 1.5 s."""
    folder.mkdir()
    nb = nbformat.read(mini / "examples" / "good.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import time\ntime.sleep(1.5)"))
    for i in range(n):
        nbformat.write(nb, folder / f"slow{i:02d}.ipynb")
    return folder


def _wait_for_results(out: Path, count: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while len(list(out.glob("*/result.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(out.glob("*/result.json"))) >= count, f"fewer than {count} results"


def test_a_lost_scheduler_is_exit_1_and_a_rerun_reuses_what_was_graded(tmp_path, mini_assignment):
    subs = _slow_batch(tmp_path / "subs", mini_assignment, 10)
    out = tmp_path / "out"
    args = ("-a", str(mini_assignment))
    first = ExternalCluster(tmp_path, workers=1)
    done: dict = {}
    try:
        cmd = (*args, "--cluster", first.address)
        thread = threading.Thread(target=lambda: done.update(r=_grade([subs], out, *cmd)))
        thread.start()
        _wait_for_results(out, 1)
        os.killpg(first.scheduler.pid, signal.SIGKILL)
        thread.join(timeout=90)
    finally:
        first.close()
    assert not thread.is_alive(), "the command did not end after the scheduler was lost"
    code, _, err = done["r"]
    assert code == 1
    assert "lost the Dask scheduler" in err and "re-run the same command" in err
    graded = sorted(p.parent.name for p in out.glob("*/result.json"))
    assert 1 <= len(graded) < 10
    assert not (out / "grades.csv").exists()  # a partial grades.csv is never written

    second = ExternalCluster(tmp_path, workers=1)
    try:
        code, _, err = _grade([subs], out, *args, "--cluster", second.address)
    finally:
        second.close()
    assert code == 0
    reused = sorted(
        line.split("] ")[1].split(":")[0] for line in err.splitlines() if "reused" in line
    )
    assert reused == graded
    assert [r["score"] for r in _rows(out)] == ["5"] * 10


def test_a_submission_that_keeps_killing_workers_is_a_grader_error(tmp_path, mini_assignment):
    subs = _slow_batch(tmp_path / "subs", mini_assignment, 4)
    out = tmp_path / "out"
    # No second chance: the first worker lost while grading a submission ends it.
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    cluster = ExternalCluster(tmp_path, workers=1, env=env)
    done: dict = {}
    try:
        from distributed import Client

        cmd = ("-a", str(mini_assignment), "--cluster", cluster.address)
        thread = threading.Thread(target=lambda: done.update(r=_grade([subs], out, *cmd)))
        thread.start()
        _wait_for_results(out, 1)
        with Client(cluster.address, set_as_default=False) as client:
            (pid,) = client.run(os.getpid).values()
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=120)
    finally:
        cluster.close()
    assert not thread.is_alive()
    code, stdout, _ = done["r"]
    assert code == 1  # grader_error is "not graded"
    rows = {r["submission"]: r for r in _rows(out)}
    assert sorted(rows) == [f"slow{i:02d}" for i in range(4)]
    killed = [r for r in rows.values() if r["status"] == "grader_error"]
    assert killed, rows
    assert all(
        r["status"] == "graded" and r["score"] == "5" for r in rows.values() if r not in killed
    )
    for row in killed:
        record = json.loads((out / row["submission"] / "result.json").read_text())
        assert "killed a Dask worker every time" in record["staff_details"]
        assert "course staff can see why" in record["errors"][0]


def test_the_assignment_tar_is_unpacked_without_extraction_filters(tmp_path):
    """Python before 3.11.4 has no tarfile filters: members are checked by hand."""
    import tarfile as tarfile_mod

    from grader.cluster.dask_worker import _extract

    def tar_with(name: str, data: bytes = b"x") -> tarfile_mod.TarFile:
        buf = io.BytesIO()
        with tarfile_mod.open(fileobj=buf, mode="w") as tar:
            info = tarfile_mod.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return tarfile_mod.open(fileobj=buf)

    _extract(tar_with("asg/checks/public/test_a.py", b"ok"), tmp_path / "a")
    assert (tmp_path / "a" / "asg/checks/public/test_a.py").read_bytes() == b"ok"
    with pytest.raises(ValueError, match=r"refused assignment member '\.\./escape'"):
        _extract(tar_with("../escape"), tmp_path / "b")
    assert not (tmp_path / "escape").exists()
