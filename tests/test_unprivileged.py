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
FILES = ["tests/test_engine_e2e.py", "tests/test_sandboxing.py", "tests/test_warmup.py"]


@pytest.mark.slow
@pytest.mark.skipif(unprivileged.available() is not None, reason=str(unprivileged.available()))
def test_isolation_tests_pass_as_an_ordinary_user():
    place = Path(tempfile.mkdtemp(prefix="convgrade-as-user-"))
    try:
        os.chmod(place, 0o755)
        checkout = place / "convgrade"
        shutil.copytree(
            ROOT,
            checkout,
            ignore=shutil.ignore_patterns(
                ".git", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"
            ),
        )
        unprivileged.give(place)
        proc = unprivileged.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES],
            checkout,
            timeout=1200,
        )
    finally:
        shutil.rmtree(place, ignore_errors=True)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 40, tail
    assert " skipped" not in proc.stdout.splitlines()[-1], tail  # nothing skipped as non-root
