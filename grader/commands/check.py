"""``convgrade check``: students run the public checks on their own notebook.

It needs only what the student release holds (the notebook, ``assignment.toml`` and
``checks/public``) and never looks for hidden checks. From inside Jupyter::

    from grader.commands.check import check_notebook
    check_notebook()          # checks the notebook this kernel belongs to (save it first)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grader.api import grade_notebook
from grader.authoring import assignment as assignment_mod
from grader.engine.static_imports import is_environment_line
from grader.errors import StaffError
from grader.outputs.results import SubmissionResult


def find_assignment(notebook: Path, given: str | None) -> Path:
    """``given``, else the folder holding assignment.toml next to (or above) the notebook,
    else the one bundled assignment."""
    if given:
        return assignment_mod.resolve(given)
    for folder in [notebook.resolve().parent, *notebook.resolve().parents][:3]:
        if (folder / "assignment.toml").is_file():
            return folder
    return assignment_mod.resolve(None)


def table(result: SubmissionResult) -> str:
    """The table students read: one row per public check, then the total."""
    # Imports grading cannot satisfy come first: the student should read them before anything.
    top = [f"{e}\n\n" for e in result.errors if is_environment_line(e)]
    rows = [("check", "question", "points", "result")]
    for t in result.tests:
        rows.append(
            (
                t.name,
                t.question,
                f"{t.score:g}/{t.max_score:g}",
                "passed" if t.status == "passed" else "FAILED",
            )
        )
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell[:60].ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif n - 1 < len(result.tests):
            test = result.tests[n - 1]
            if test.status != "passed" and test.message:
                for msg in test.message.splitlines()[:4]:
                    lines.append(f"    -> {msg}")
    passed = sum(t.status == "passed" for t in result.tests)
    points = sum(t.score for t in result.tests)
    possible = sum(t.max_score for t in result.tests)
    lines.append("")
    lines.append(
        f"{passed} of {len(result.tests)} public checks passed ({points:g}/{possible:g} "
        "points). Hidden checks with other inputs run when your work is graded."
    )
    for err in result.errors:
        if not is_environment_line(err):
            lines.append(f"note: {err}")
    if not result.execution.isolation.startswith("sandboxed"):
        # A student's own notebook on their own machine: worth running without a sandbox.
        lines.append(
            "note: no sandbox on this machine, so your notebook ran with your rights, as in "
            "Jupyter (grading always sandboxes it)."
        )
    return "".join(top) + "\n".join(lines) + "\n"


def run_check(notebook: Path, assignment: str | None = None) -> SubmissionResult:
    if not notebook.is_file():
        raise StaffError(f"{notebook} does not exist; give the path of your .ipynb file.")
    folder = find_assignment(notebook, assignment)
    return grade_notebook(notebook, folder, include_hidden=False, sandbox="prefer")


def _current_notebook() -> Path:
    """The notebook file of the running Jupyter kernel, as far as it can be known."""
    session = os.environ.get("JPY_SESSION_NAME")  # set by jupyter-server 2 for each kernel
    if session and session.endswith(".ipynb") and Path(session).is_file():
        return Path(session)
    try:
        from IPython import get_ipython

        ip = get_ipython()
        vscode = ip.user_ns.get("__vsc_ipynb_file__") if ip else None
        if vscode and Path(vscode).is_file():
            return Path(vscode)
    except ImportError:
        pass
    candidates = sorted(Path.cwd().glob("*.ipynb"))
    if len(candidates) == 1:
        return candidates[0]
    raise StaffError(
        "could not tell which notebook this is; call check_notebook('your_file.ipynb')"
    )


def check_notebook(path: str | Path | None = None, assignment: str | None = None) -> bool:
    """Print the public checks' table for a notebook (default: this one); True if all pass.

    Save the notebook first: the checks run on the saved file, in a fresh process.
    """
    notebook = Path(path) if path else _current_notebook()
    result = run_check(notebook, assignment)
    sys.stdout.write(table(result))
    return all(t.status == "passed" for t in result.tests)
