"""The shape of the grader package: layers on disk, small modules, no chapter inside.

These are the rules a newcomer relies on when reading the code (docs/architecture.md): each
folder is one layer, the untrusted worker never imports the trusted side, and nothing in the
engine knows which assignment it grades.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

GRADER = Path(__file__).resolve().parent.parent / "grader"
LAYERS = {"commands", "authoring", "engine", "sandbox", "outputs", "cluster", "worker"}
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "api.py", "checks.py", "errors.py"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in GRADER.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    return str(path.relative_to(GRADER.parent))


def test_every_module_sits_in_a_layer_folder():
    stray = [p.name for p in GRADER.glob("*.py") if p.name not in TOP_LEVEL_MODULES]
    folders = {p.name for p in GRADER.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert stray == []
    assert folders == LAYERS
    assert all((GRADER / layer / "__init__.py").is_file() for layer in LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_modules_and_functions_stay_small(path):
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines"


@pytest.mark.parametrize("path", sorted((GRADER / "worker").glob("*.py")), ids=_name)
def test_the_worker_imports_nothing_of_the_trusted_side(path):
    # Inside the sandbox the worker package is mounted alone, as ``cgworker``: an absolute
    # import of ``grader`` would fail there, and would mean untrusted code reaching for
    # trusted modules.
    tree = ast.parse(path.read_text(encoding="utf-8"))
    absolute = [
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.ImportFrom) and node.level > 0)
        for alias in (node.names if isinstance(node, ast.Import) else [node])
    ]
    assert [m for m in absolute if m and m.split(".")[0] == "grader"] == []


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_commands_import_the_commands():
    # Commands sit on top: they parse, print and pick exit codes. A layer below that
    # imported them would make grading depend on the command line.
    below = [p for p in _modules() if p.parent.name != "commands" and p.name != "__main__.py"]
    offenders = {
        _name(p): sorted(m for m in _imported(p) if m.startswith("grader.commands")) for p in below
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_engine_holds_no_word_of_the_chapter():
    # Everything particular to an assignment lives in its folder (docs/assignment-format.md).
    pattern = re.compile(r"convolution|corr2d|conv2d", re.IGNORECASE)
    files = [p for p in GRADER.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    hits = [
        f"{_name(path)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
