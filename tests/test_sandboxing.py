"""Choosing the sandbox: the diagnosis of a machine that cannot make one, the refusal to grade
there, and the paths that stay hidden whatever the install layout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from grader.sandbox import bubblewrap as sandboxing
from grader.sandbox.bubblewrap import HostFacts, SandboxUnavailable, Support
from grader.sandbox.launcher import PRIVATE_MOUNTS, Launcher

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assignments" / "convolutions" / "examples"


def facts(**changes) -> HostFacts:
    base = dict(
        euid=1000,
        bwrap="/usr/bin/bwrap",
        userns_clone=None,
        max_user_namespaces="15000",
        apparmor_restrict=None,
        container=None,
    )
    base.update(changes)
    return HostFacts(**base)


@pytest.mark.parametrize(
    "changes, cause, fix",
    [
        ({"bwrap": None}, r"bubblewrap \(bwrap\) is not installed", r"apt-get install bubblewrap"),
        (
            {"userns_clone": "0"},
            r"kernel\.unprivileged_userns_clone=0",
            r"sysctl -w kernel\.unprivileged_userns_clone=1",
        ),
        (
            {"max_user_namespaces": "0"},
            r"user\.max_user_namespaces=0",
            r"sysctl -w user\.max_user_namespaces=15000",
        ),
        (
            {"apparmor_restrict": "1"},
            r"AppArmor restricts unprivileged user namespaces",
            r"apparmor_restrict_unprivileged_userns=0",
        ),
        ({"container": "docker"}, r"unprivileged docker container", r"--security-opt"),
        ({}, r"could not start a sandbox", r"unshare --user true"),
    ],
    ids=["no-bwrap", "debian-sysctl", "max-userns", "ubuntu-apparmor", "container", "other"],
)
def test_each_cause_is_named_with_its_fix(changes, cause, fix):
    text = sandboxing.explain(facts(**changes), "setting up uid map: Permission denied")
    assert re.search(cause, text), text
    assert re.search(fix, text), text
    if changes.get("bwrap", "x") is not None:
        assert "bubblewrap said: setting up uid map: Permission denied" in text


def test_root_in_a_container_is_told_about_the_container_not_user_namespaces():
    text = sandboxing.explain(facts(euid=0, container="docker", userns_clone="0"), "")
    assert "docker container" in text
    assert "unprivileged_userns_clone" not in text


def test_grading_refuses_where_no_sandbox_can_be_made(monkeypatch):
    monkeypatch.setattr(sandboxing, "detect", lambda: Support(None, "bwrap is broken here."))
    with pytest.raises(SandboxUnavailable, match=r"refusing to run student notebooks") as info:
        Launcher(preload=())
    assert info.value.exit_code == 2
    assert "bwrap is broken here." in str(info.value)
    assert "--no-sandbox runs them unconfined" in str(info.value)


def test_a_students_own_check_runs_without_a_sandbox_and_says_so(monkeypatch):
    monkeypatch.setattr(sandboxing, "detect", lambda: Support(None, "bwrap is broken here."))
    launcher = Launcher(preload=(), sandbox="prefer")
    try:
        assert launcher.mode is None
        assert launcher.isolation.describe().startswith("NOT sandboxed; bwrap is broken here.")
    finally:
        launcher.close()


def test_no_sandbox_is_recorded_as_the_users_choice():
    launcher = Launcher(preload=(), sandbox="off")
    try:
        assert launcher.mode is None
        assert "--no-sandbox: the user chose" in launcher.isolation.describe()
    finally:
        launcher.close()


def test_every_copy_on_sys_path_is_hidden(tmp_path, monkeypatch):
    """The Gradescope image: one copy on PYTHONPATH, another in the system site-packages."""
    system_site, pythonpath = tmp_path / "site-packages", tmp_path / "convgrade"
    for base in (system_site, pythonpath):
        for name in ("grader", "reference", "convgrade_assignments"):
            (base / name).mkdir(parents=True)
    (system_site / "numpy").mkdir()
    monkeypatch.setattr(sys, "path", [str(pythonpath), str(system_site), *sys.path])
    hidden = set(sandboxing.our_copies())
    for base in (system_site, pythonpath):
        for name in ("grader", "reference", "convgrade_assignments"):
            assert (base / name).resolve() in hidden
    assert (system_site / "numpy").resolve() not in hidden


def test_python_under_a_private_mount_is_laid_back(monkeypatch):
    monkeypatch.setattr(
        sandboxing, "python_dirs", lambda: [Path("/tmp/v"), Path("/usr/lib"), Path("/work/x/.venv")]
    )
    assert sandboxing.kept_under_private_mounts(PRIVATE_MOUNTS) == ["/tmp/v", "/work/x/.venv"]


def test_bwrap_binds_python_after_the_private_tmp(monkeypatch):
    monkeypatch.setattr(sandboxing, "python_dirs", lambda: [Path("/tmp")])
    cmd = sandboxing.bwrap_command("userns")
    tmpfs = cmd.index("--tmpfs")
    assert cmd[tmpfs + 1] == "/tmp"
    assert cmd.index("--ro-bind", tmpfs) < len(cmd)
    assert ["--unshare-user", "--uid", "0", "--gid", "0"] == cmd[3:8]


def _grade(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", "grade", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_without_bubblewrap_grade_exits_2_and_says_how_to_install_it(tmp_path):
    """A real run, on a PATH where bwrap cannot be found."""
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = _grade([str(EXAMPLES / "full_marks.ipynb"), "--out", str(tmp_path / "g")], env, ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to run student notebooks without a sandbox" in proc.stderr
    assert "apt-get install bubblewrap" in proc.stderr
    assert not (tmp_path / "g" / "grades.csv").exists()


@pytest.mark.slow
def test_no_sandbox_grades_and_every_result_records_it(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap: --no-sandbox is the only way
    out = tmp_path / "g"
    proc = _grade(
        [str(EXAMPLES / "full_marks.ipynb"), "--out", str(out), "--no-sandbox"], env, ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "WITHOUT a sandbox (--no-sandbox)" in proc.stderr
    result = json.loads((out / "full_marks" / "result.json").read_text())
    assert result["score"] == 40
    assert "--no-sandbox: the user chose" in result["execution"]["isolation"]


@pytest.mark.slow
def test_what_a_worker_writes_natively_never_reaches_the_grader():
    """A flood on the worker's fd 1 and 2 (not Python's captured streams) goes nowhere."""
    launcher = Launcher(preload=("numpy",))
    try:
        worker = launcher.spawn(0)
        reply = worker.request(
            {
                "op": "run_cell",
                "source": "import os\nfor _ in range(20):\n"
                "    os.write(2, b'x' * 5_000_000)\n    os.write(1, b'y' * 5_000_000)\n"
                "print('done')",
            },
            60,
        )
        worker.close()
        assert reply["outputs"][0]["text"].strip() == "done"
        assert b"xxxx" not in launcher._zygote._stderr_tail
    finally:
        launcher.close()


def test_the_zygotes_stderr_is_kept_as_a_bounded_tail():
    from grader.sandbox.launcher import STDERR_TAIL, Zygote

    read_end, write_end = os.pipe()

    class Proc:
        stderr = os.fdopen(read_end, "rb")

    def flood() -> None:
        for _ in range(50):
            os.write(write_end, b"z" * 1_000_000)
        os.close(write_end)

    zygote = Zygote.__new__(Zygote)  # only its stderr reader, on a real pipe
    zygote.proc, zygote._stderr_tail = Proc(), b""
    writer = threading.Thread(target=flood)
    writer.start()
    zygote._drain()  # returns at end of file
    writer.join()
    assert zygote._stderr_tail == b"z" * STDERR_TAIL


def test_a_used_up_namespace_limit_is_named_before_the_container_guess():
    said = "Creating new namespace failed: nesting depth or max_*_namespaces exceeded (ENOSPC)"
    text = sandboxing.explain(facts(container="docker"), said)
    assert text.startswith("no more user namespaces may be made here")
    assert "docker" not in text.split("(bubblewrap said")[0]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root without CAP_SYS_ADMIN")
def test_root_without_cap_sys_admin_falls_back_to_user_namespaces(tmp_path):
    """As in a container that runs as root but withholds CAP_SYS_ADMIN."""
    out = tmp_path / "g"
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
        + [sys.executable, "-m", "grader", "grade", str(EXAMPLES / "full_marks.ipynb")]
        + ["--out", str(out), "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "full_marks" / "result.json").read_text())
    assert result["execution"]["isolation"].startswith("sandboxed (bubblewrap, user namespaces)")
    assert result["score"] == 40
