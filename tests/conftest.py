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
