"""Running pytest on an assignment's checks, in the grader process.

Third-party pytest plugins and the core plugins grading does not need are off; what pytest
and C libraries print is captured and returned, not shown; check modules are forgotten
afterwards, so another assignment's same-named files are imported anew.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.authoring.assignment import Assignment


@dataclass(frozen=True)
class PytestRun:
    """How one ``pytest.main`` ended: its exit code and everything it printed."""

    code: int
    output: str


# Core plugins that cost time on every check and add nothing to grading: end-of-session
# garbage collection passes, per-test output and log capture (we capture output
# ourselves), fault handlers, caches.
_DISABLED_PLUGINS = (
    "cacheprovider",
    "stepwise",
    "randomly",
    "unraisableexception",
    "threadexception",
    "faulthandler",
    "logging",
    "doctest",
    "pastebin",
    "junitxml",
)


def _pytest_args(assignment: Assignment, dirs: list[Path], collect_only: bool) -> list[str]:
    args = [str(d) for d in dirs]
    for name in _DISABLED_PLUGINS:
        args += ["-p", f"no:{name}"]
    args += [
        "-q",
        "--no-header",
        "--capture=no",
        # Native tracebacks for staff_details: pytest's own style re-parses check sources
        # for every failure, which dominated the grader's CPU time.
        "--tb=native",
        "--assert=plain",
        "--import-mode=importlib",
        "--strict-markers",
        "--rootdir",
        str(assignment.root),
        "-c",
        str(_empty_ini()),
        "-W",
        "ignore::DeprecationWarning",
    ]
    if collect_only:
        args.append("--collect-only")
    return args


_INI: Path | None = None


def _empty_ini() -> Path:
    global _INI
    if _INI is None or not _INI.exists():
        fd, name = tempfile.mkstemp(prefix="convgrade-", suffix=".ini")
        with open(fd, "w") as fh:
            fh.write("[pytest]\n")
        _INI = Path(name)
    return _INI


def check_dirs(assignment: Assignment, include_hidden: bool) -> list[Path]:
    dirs = [assignment.public_dir]
    if include_hidden:
        dirs.append(assignment.hidden_dir)
    return [d for d in dirs if d.is_dir()]


@contextlib.contextmanager
def _native_stderr_to(buf: io.StringIO):
    """Catch what C libraries write to fd 2 while checks are imported and run.

    TensorFlow logs several lines from C++ when the checks first import it; they belong
    with pytest's captured output, not on the grader's terminal.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.write(tmp.read().decode(errors="replace")[-20000:])


def run_pytest(
    plugin: object, assignment: Assignment, dirs: list[Path], collect_only: bool = False
) -> PytestRun:
    """Run pytest on ``assignment``'s check folders ``dirs`` with ``plugin`` registered."""
    buf = io.StringIO()
    # Third-party plugins installed next to convgrade must not change how checks run.
    saved = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        with _native_stderr_to(buf), contextlib.redirect_stdout(buf):
            with contextlib.redirect_stderr(buf):
                code = pytest.main(_pytest_args(assignment, dirs, collect_only), plugins=[plugin])
    finally:
        _forget_check_modules(assignment.root)
        if saved is None:
            os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = saved
    return PytestRun(int(code), buf.getvalue())


def _forget_check_modules(root: Path) -> None:
    """Unload check modules, so another assignment's same-named files are imported anew."""
    # String prefixes, not Path.resolve() per module: with TensorFlow loaded there are
    # thousands of modules, and resolving each one cost over half a second per call.
    prefixes = tuple({os.path.join(os.path.abspath(root), ""), os.path.join(root.resolve(), "")})
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.abspath(file).startswith(prefixes):
            del sys.modules[name]
