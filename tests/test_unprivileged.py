"""The end-to-end isolation tests again, as an ordinary user (most instructors are one).

CI runs as root, so this test runs the same test files, hostile notebooks and all, in a copy
of the checkout, as the user ``unprivileged.USER`` (see ``unprivileged.py``). Run as an
ordinary user already, the suite itself covers this and the test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import unprivileged

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "tests/test_engine_e2e.py",
    "tests/test_hostile_e2e.py",
    "tests/test_memlimit_e2e.py",
    "tests/test_sandboxing.py",
    "tests/test_warmup.py",
]


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unprivileged.available() is not None, reason=str(unprivileged.available())),
]


@pytest.fixture(scope="module")
def checkout():
    """A copy of the checkout that the ordinary user can read (CI's clone may sit where
    only root can enter)."""
    place = Path(tempfile.mkdtemp(prefix="convgrade-as-user-"))
    os.chmod(place, 0o755)
    shutil.copytree(
        ROOT,
        place / "convgrade",
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"
        ),
    )
    unprivileged.give(place)
    yield place / "convgrade"
    shutil.rmtree(place, ignore_errors=True)


def test_isolation_tests_pass_as_an_ordinary_user(checkout):
    proc = unprivileged.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *FILES],
        checkout,
        timeout=1200,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 40, tail
    # As an ordinary user only the cgroup cases and the root-only case may skip.
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("cgroup" in line or "needs root" in line for line in skipped), skipped


def test_without_user_namespaces_grade_refuses_and_check_runs_and_says_so(checkout):
    """An ordinary user on a machine where no user namespace can be made (here: inside a
    bubblewrap that forbids them): grading stops before any student code runs."""
    place = checkout.parent
    notebook = checkout / "assignments/convolutions/examples/full_marks.ipynb"
    no_userns = ["bwrap", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/", "--"]
    grader = [sys.executable, "-m", "grader"]
    graded = unprivileged.run(
        no_userns + grader + ["grade", str(notebook), "--out", str(place / "g")], checkout
    )
    checked = unprivileged.run(
        no_userns + grader + ["check", str(notebook), "-a", "convolutions"], checkout
    )
    assert graded.returncode == 2, graded.stdout + graded.stderr
    assert "refusing to run student notebooks without a sandbox" in graded.stderr
    assert "no more user namespaces may be made here" in graded.stderr
    assert "--no-sandbox" in graded.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "note: no sandbox on this machine, so your notebook ran with your rights" in (
        checked.stdout
    )
