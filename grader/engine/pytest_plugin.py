"""The pytest side of grading: markers, the ``student`` and ``rng`` fixtures, and results.

pytest runs in the trusted grader process. :class:`GradingPlugin` collects the checks and
records their outcomes; :class:`grader.engine.loop.GradingLoop` adds the run loop that
grades submissions. It never imports student code, and student code never sees it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from grader.authoring.assignment import Assignment
from grader.engine import seeding
from grader.engine.check_messages import check_message, mask_addresses
from grader.engine.proxy import Student
from grader.engine.pytest_run import check_dirs, run_pytest
from grader.engine.session import NotebookSession
from grader.errors import StaffError, WorkerFailure
from grader.outputs.results import CheckResult
from grader.worker import protocol


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


class GradingPlugin:
    """Collects (and, with a session, runs) an assignment's checks."""

    def __init__(self, assignment: Assignment, session: NotebookSession | None = None) -> None:
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
            self.session.request(protocol.request("seed", seed=seeding.worker_seed(seed)))
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
                msg = check_message(call.excinfo, visibility)
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
                    message=mask_addresses(msg),
                    visibility=info.visibility,
                    nodeid=nodeid,
                )
            )
            if longrepr:
                details.append(f"--- {nodeid}\n{mask_addresses(longrepr)}")
        return out, "\n".join(details)


def collect_checks(assignment: Assignment, include_hidden: bool = True) -> list[CheckInfo]:
    """Collect the checks once, validating them against assignment.toml.

    Raises:
        StaffError: a check file does not import, a check lacks points or a question, or the
            points of a question do not add up to what assignment.toml says.
    """
    plugin = GradingPlugin(assignment)
    dirs = check_dirs(assignment, include_hidden)
    run = run_pytest(plugin, assignment, dirs, collect_only=True)
    if plugin.collect_errors or run.code not in (0, 5):
        detail = "\n".join(plugin.collect_errors) or run.output[-3000:]
        raise StaffError(f"the checks of {assignment.root} could not be collected:\n{detail}")
    infos = [plugin.infos[n] for n in plugin.order]
    if not infos:
        raise StaffError(f"no checks found in {', '.join(map(str, dirs))}")
    if include_hidden and any(i.visibility == "hidden" for i in infos):
        seeding.assignment_secret(assignment.root)  # fail now, not in the middle of a batch
    if include_hidden and (problems := _points_problems(assignment, infos)):
        raise StaffError("points do not add up:\n  " + "\n  ".join(problems))
    return infos


def _points_problems(assignment: Assignment, infos: list[CheckInfo]) -> list[str]:
    """Each question whose checks' points do not add up to what assignment.toml says."""
    totals: dict[str, float] = {}
    for info in infos:
        totals[info.question] = totals.get(info.question, 0.0) + info.points
    problems = []
    for q in assignment.questions:
        got = totals.get(q.id, 0.0)
        if abs(got - q.points) > 1e-9:
            problems.append(
                f"question {q.id!r}: checks add up to {got:g}, assignment.toml says {q.points:g}"
            )
    return problems
