import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def mini_assignment() -> Path:
    return FIXTURES / "mini"


@pytest.fixture(scope="session")
def engine_notebooks() -> Path:
    return FIXTURES / "notebooks"


@pytest.fixture
def short_grace(monkeypatch):
    """A worker that ignores SIGINT is killed after 0.3 s, not 2 s: fast tests stay fast."""
    from grader.engine import worker_process

    monkeypatch.setattr(worker_process, "GRACE_SECONDS", 0.3)


@pytest.fixture
def launchers():
    """Makes fake launchers (tests/fakeworker.py) and closes every worker they spawned."""
    from fakeworker import FakeLauncher

    made: list[FakeLauncher] = []

    def make(script, notes: tuple[str, ...] = ()) -> FakeLauncher:
        launcher = FakeLauncher(script, notes)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.close()


@pytest.fixture(scope="session")
def mini(mini_assignment):
    """The mini assignment, loaded, and its checks as collected for grading."""
    from grader.authoring import assignment
    from grader.engine.pytest_plugin import collect_checks

    loaded = assignment.load(mini_assignment)
    return loaded, collect_checks(loaded)
