"""The pytest side of grading: markers, the ``student`` and ``rng`` fixtures, and results.

pytest runs in the trusted grader process. This plugin is handed to ``pytest.main`` for each
submission; it never imports student code, and student code never sees it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from grader.authoring.assignment import Assignment
from grader.engine import seeding
from grader.engine.proxy import CheckFailure, Student, StudentCodeRaised
from grader.errors import StaffError, WorkerFailure
from grader.outputs.results import CheckResult

_HIDDEN_LINE_PREFIXES = (" x:", " y:", "x:", "y:", "ACTUAL", "DESIRED", " ACTUAL", " DESIRED")


@dataclass(frozen=True)
class CheckInfo:
    nodeid: str
    name: str
    question: str
    points: float
    visibility: str


def _question_from_file(stem: str, ids: tuple[str, ...]) -> str | None:
    stem = stem.removeprefix("test_")
    fits = [q for q in ids if stem == q or stem.startswith(q + "_")]
    return max(fits, key=len) if fits else None


def _info(item, assignment: Assignment) -> CheckInfo:
    path = Path(str(item.path))
    visibility = "hidden" if assignment.hidden_dir in path.parents else "visible"
    where = f"check {item.nodeid}"
    mark = item.get_closest_marker("points")
    if mark is None or len(mark.args) != 1:
        raise StaffError(f"{where} has no @pytest.mark.points(N); every check needs its points.")
    points = mark.args[0]
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points < 0:
        raise StaffError(f"{where}: points must be a number >= 0. Received: {points!r}")
    qmark = item.get_closest_marker("question")
    question = qmark.args[0] if qmark and qmark.args else None
    if question is None:
        question = _question_from_file(path.stem, assignment.question_ids())
    if question not in assignment.question_ids():
        raise StaffError(
            f"{where} belongs to no question of assignment.toml (got {question!r}); add "
            f"@pytest.mark.question(...) with one of {list(assignment.question_ids())}."
        )
    doc = (
        (getattr(item, "function", None).__doc__ or "").strip() if hasattr(item, "function") else ""
    )
    name = doc.splitlines()[0].strip() if doc else item.name
    return CheckInfo(item.nodeid, name, question, float(points), visibility)


def _message(excinfo, visibility: str) -> str:
    exc = excinfo.value
    if visibility == "hidden":
        return _hidden_message(exc)
    if isinstance(exc, CheckFailure):
        return str(exc)
    if isinstance(exc, AssertionError):
        return str(exc).strip() or "the result did not meet this check's condition"
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def _hidden_message(exc: BaseException) -> str:
    """What a hidden check may tell the student.

    Text the student's own code produced (exception messages, wherever a check quotes them)
    is cut to a short, sanitised first line: it must not carry what the hidden check fed the
    code back out to the student. Lines with the expected and actual arrays are dropped.
    """
    if isinstance(exc, AssertionError):
        text = str(exc).strip()
    else:
        text = f"{type(exc).__name__}: {str(exc)}"
    text = redact_student_text(text, _student_texts(exc))
    # Student text can also arrive without an exception to trace it to (a class name the
    # worker reports, say); a check's own words are never this long.
    text = _LONG_TOKEN.sub(lambda m: m.group(0)[:40] + " [...]", text)
    lines = [ln for ln in text.splitlines() if not ln.startswith(_HIDDEN_LINE_PREFIXES)]
    text = "\n".join(lines).strip()[:400]
    return text or "the result did not meet this check's condition"


# Object addresses ("<function f at 0x7f3a...>") differ from run to run; a re-grade must not.
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_LONG_TOKEN = re.compile(r"\S{41,}")
MAX_STUDENT_LINE = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;'\"()\[\]=/+*-]")
_MIN_QUOTE = 12  # shorter common substrings are ordinary words, not quoted student text


def student_line(text: str) -> str:
    """The first line of student-produced text, sanitised and at most 80 characters."""
    lines = str(text).strip().splitlines()
    first = _UNSAFE.sub("?", lines[0].strip() if lines else "")
    if len(first) > MAX_STUDENT_LINE or len(lines) > 1:
        return first[:MAX_STUDENT_LINE] + " [...]"
    return first


def _student_texts(exc: BaseException) -> list[str]:
    """Exception messages and type names the student's code produced, along the chain."""
    found, seen = [], set()
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        if isinstance(exc, StudentCodeRaised):
            found += [exc.evalue, exc.ename]
        exc = exc.__cause__ or exc.__context__
    return [t for t in found if t]


def redact_student_text(text: str, student_texts: list[str]) -> str:
    """Replace every long run of ``text`` quoted from ``student_texts`` by its student_line."""
    for quoted in sorted(set(student_texts), key=len, reverse=True):
        if len(quoted) < _MIN_QUOTE:  # a type name: keep it, but only its safe characters
            safe = re.sub(r"[^A-Za-z0-9_.]", "?", quoted)[:60]
            text = text.replace(quoted, safe)
            continue
        out, i = [], 0
        while i < len(text):
            j = i + _MIN_QUOTE
            if j <= len(text) and text[i:j] in quoted:
                while j < len(text) and text[i : j + 1] in quoted:
                    j += 1
                out.append(student_line(text[i:j]))
                i = j
            else:
                out.append(text[i])
                i += 1
        text = "".join(out)
    return text


class GradingPlugin:
    """Collects (and, with a session, runs) an assignment's checks."""

    def __init__(self, assignment: Assignment, session=None) -> None:
        self.assignment = assignment
        self.session = session
        self.infos: dict[str, CheckInfo] = {}
        self.order: list[str] = []
        self.outcomes: dict[str, tuple[bool, str, str]] = {}
        self.collect_errors: list[str] = []
        self._secret: bytes | None = None

    def pytest_configure(self, config) -> None:
        config.addinivalue_line("markers", "points(n): points the check is worth")
        config.addinivalue_line("markers", "question(id): the question of assignment.toml")

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}: {report.longreprtext[-3000:]}")

    def pytest_collection_modifyitems(self, session, config, items) -> None:
        for item in items:
            try:
                info = _info(item, self.assignment)
            except StaffError as exc:  # pytest would swallow it as an internal error
                self.collect_errors.append(str(exc))
                continue
            self.infos[item.nodeid] = info
            self.order.append(item.nodeid)

    # Module scope: a check file may share one expensive call among its checks through a
    # module-scoped fixture. Every fixture is torn down after each submission's last check
    # (run_items passes nextitem=None there), so nothing crosses to the next submission.
    @pytest.fixture(scope="module")
    def student(self, request):
        if self.session is None:
            pytest.skip("no notebook")
        # Module-scoped fixtures that call the notebook run before any check's own seed.
        self._seed_worker(self._seed(request.node))
        return Student(self.session)

    @pytest.fixture
    def rng(self, request) -> np.random.Generator:
        return np.random.default_rng(self._seed(request.node))

    @pytest.fixture(autouse=True)
    def _seed_everything(self, request):
        seed = self._seed(request.node)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._seed_worker(seed)
        yield

    def _seed(self, node) -> int:
        """The seed of a check (or check module): see grader/engine/seeding.py."""
        key = getattr(self.session, "content_key", b"")
        hidden = self.assignment.hidden_dir in Path(str(node.path)).parents
        if not hidden:
            return seeding.check_seed(key, node.nodeid)
        if self._secret is None:
            self._secret = seeding.assignment_secret(self.assignment.root)
        return seeding.check_seed(key, node.nodeid, self._secret)

    def _seed_worker(self, seed: int) -> None:
        if self.session is None:
            return
        try:
            self.session.request({"op": "seed", "seed": seeding.worker_seed(seed)})
        except WorkerFailure:
            pass  # the check's own calls report what happened to the worker

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or report.failed:
            previous = self.outcomes.get(item.nodeid)
            if previous and not previous[0]:
                return
            if report.failed and call.excinfo is not None:
                info = self.infos.get(item.nodeid)
                visibility = info.visibility if info else "hidden"
                msg = _message(call.excinfo, visibility)
                self.outcomes[item.nodeid] = (False, msg, report.longreprtext[-4000:])
            elif report.passed and report.when == "call":
                self.outcomes[item.nodeid] = (True, "", "")
            elif report.skipped:
                self.outcomes[item.nodeid] = (False, "skipped", "")

    def results(self) -> tuple[list[CheckResult], str]:
        out, details = [], []
        for nodeid in self.order:
            info = self.infos[nodeid]
            passed, msg, longrepr = self.outcomes.get(nodeid, (False, "the check did not run", ""))
            out.append(
                CheckResult(
                    name=info.name,
                    question=info.question,
                    score=info.points if passed else 0.0,
                    max_score=info.points,
                    status="passed" if passed else "failed",
                    message=_ADDRESS.sub("0x...", msg),
                    visibility=info.visibility,
                    nodeid=nodeid,
                )
            )
            if longrepr:
                details.append(f"--- {nodeid}\n{_ADDRESS.sub('0x...', longrepr)}")
        return out, "\n".join(details)


class BatchPlugin(GradingPlugin):
    """Runs the collected checks once per submission inside ONE pytest session.

    Starting pytest (plugins, configuration, importing every check module) costs seconds;
    paying it once per batch instead of once per submission is most of the trusted side's
    speed. Between submissions only the per-check outcomes are reset; check modules are
    imported once, so checks must not keep state in module globals.
    """

    def __init__(self, assignment: Assignment, serve) -> None:
        super().__init__(assignment)
        self.serve = serve  # called with run_items; returns when the batch is done

    def run_items(self, session) -> tuple[list[CheckResult], str]:
        self.session = session
        self.outcomes = {}
        items = self._items
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        self.session = None
        return self.results()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        self._items = [i for i in session.items if i.nodeid in self.infos]
        self.serve(self.run_items)
        return True


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


def run_pytest(plugin: GradingPlugin, dirs: list[Path], collect_only: bool = False) -> int:
    buf = io.StringIO()
    # Third-party plugins installed next to convgrade must not change how checks run.
    saved = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        with _native_stderr_to(buf), contextlib.redirect_stdout(buf):
            with contextlib.redirect_stderr(buf):
                code = pytest.main(
                    _pytest_args(plugin.assignment, dirs, collect_only), plugins=[plugin]
                )
    finally:
        _forget_check_modules(plugin.assignment.root)
        if saved is None:
            os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = saved
    plugin.output = buf.getvalue()
    return int(code)


def _forget_check_modules(root: Path) -> None:
    """Unload check modules, so another assignment's same-named files are imported anew."""
    # String prefixes, not Path.resolve() per module: with TensorFlow loaded there are
    # thousands of modules, and resolving each one cost over half a second per call.
    prefixes = tuple({os.path.join(os.path.abspath(root), ""), os.path.join(root.resolve(), "")})
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.abspath(file).startswith(prefixes):
            del sys.modules[name]


def collect_checks(assignment: Assignment, include_hidden: bool = True) -> list[CheckInfo]:
    """Collect the checks once, validating them against assignment.toml.

    Raises:
        StaffError: a check file does not import, a check lacks points or a question, or the
            points of a question do not add up to what assignment.toml says.
    """
    plugin = GradingPlugin(assignment)
    dirs = check_dirs(assignment, include_hidden)
    code = run_pytest(plugin, dirs, collect_only=True)
    if plugin.collect_errors or code not in (0, 5):
        detail = "\n".join(plugin.collect_errors) or getattr(plugin, "output", "")[-3000:]
        raise StaffError(f"the checks of {assignment.root} could not be collected:\n{detail}")
    infos = [plugin.infos[n] for n in plugin.order]
    if not infos:
        raise StaffError(f"no checks found in {', '.join(map(str, dirs))}")
    if include_hidden and any(i.visibility == "hidden" for i in infos):
        seeding.assignment_secret(assignment.root)  # fail now, not in the middle of a batch
    if include_hidden:
        totals: dict[str, float] = {}
        for info in infos:
            totals[info.question] = totals.get(info.question, 0.0) + info.points
        problems = []
        for q in assignment.questions:
            got = totals.get(q.id, 0.0)
            if abs(got - q.points) > 1e-9:
                problems.append(
                    f"question {q.id!r}: checks add up to {got:g}, "
                    f"assignment.toml says {q.points:g}"
                )
        if problems:
            raise StaffError("points do not add up:\n  " + "\n  ".join(problems))
    return infos
