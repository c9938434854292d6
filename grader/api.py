"""Grading from Python (tests, notebooks, other tools)."""

from __future__ import annotations

from pathlib import Path

from grader.authoring import assignment as assignment_mod
from grader.engine.grading import GradeOptions, GradingContext
from grader.engine.loop import Graded, GradingLoop, RunAhead
from grader.engine.pytest_plugin import collect_checks
from grader.engine.submissions import Submission
from grader.errors import StaffError
from grader.outputs.results import SubmissionResult
from grader.sandbox.launcher import Launcher, SandboxPolicy, launcher_for
from grader.sandbox.limits import resolve_limits


def grade_notebook(
    notebook_path: str | Path,
    assignment: str | Path | None = None,
    *,
    include_hidden: bool = True,
    launcher: Launcher | None = None,
    cell_timeout: float | None = None,
    notebook_timeout: float | None = None,
    call_timeout: float | None = None,
    memory_mib: int | None = None,
    return_executed: bool = False,
    sandbox: SandboxPolicy = "require",
):
    """Grade one notebook and return its :class:`SubmissionResult`.

    Args:
        notebook_path: the .ipynb file.
        assignment: a bundled assignment's name or an assignment folder; None: the one
            bundled assignment.
        include_hidden: False runs the public checks only (what students can run).
        launcher: reuse a started :class:`Launcher` (fast for many calls); one is made
            and closed otherwise. It must serve the assignment's probes file.
        return_executed: also return the executed notebook, as ``(result, notebook)``.
        sandbox: where no sandbox can be made, ``"require"`` refuses
            (:class:`~grader.sandbox.bubblewrap.SandboxUnavailable`), ``"prefer"`` runs the notebook
            unconfined (a student's own notebook on their own machine), ``"off"`` never
            sandboxes. Ignored when ``launcher`` is given.
    """
    asg = assignment_mod.load(assignment)
    limits = resolve_limits(
        asg.limits,
        cell_timeout=cell_timeout,
        notebook_timeout=notebook_timeout,
        call_timeout=call_timeout,
        memory_mib=memory_mib,
    )
    checks = collect_checks(asg, include_hidden)
    opts = GradeOptions(
        timeouts=limits.timeouts, include_hidden=include_hidden, packages=asg.packages
    )
    own = launcher is None
    _check_probes(launcher, asg)
    if launcher is None:
        launcher = launcher_for(asg, limits, warm=False, sandbox=sandbox)
    path = Path(notebook_path)
    source = iter([Submission(path.stem, str(path), path)])
    graded: list[Graded] = []
    try:
        ctx = GradingContext(asg, tuple(checks), launcher, opts, launcher.isolation.describe())
        feed = RunAhead(ctx, lambda: next(source, None), graded.append)
        GradingLoop(ctx, feed).run()
        feed.join()
    finally:
        if own:
            launcher.close()
    result: SubmissionResult = graded[0].result
    return (result, graded[0].executed) if return_executed else result


def _check_probes(launcher: Launcher | None, asg: assignment_mod.Assignment) -> None:
    """A launcher made elsewhere must serve this assignment's probes (they load at its start)."""
    if launcher is not None and launcher.probes != asg.probes:
        raise StaffError(
            f"the launcher serves the probes {launcher.probes}, but {asg.root} declares "
            f"{asg.probes}: make it with launcher_for(assignment, limits)"
        )
