"""Building the student release of an assignment, and grading its two reference notebooks.

The release is what students get: the generated student notebook and the public checks,
with ``assignment.toml`` so ``convgrade check`` works from the unpacked zip alone. It never
contains the source notebook, hidden checks or any line of a solution region.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.authoring.assignment import Assignment
from grader.authoring.stubs import BEGIN_RE, END_RE, SolutionMarkerError, make_student_notebook
from grader.engine.batch import grade_batch
from grader.engine.grading import GradeOptions
from grader.engine.pytest_plugin import CheckInfo
from grader.engine.seeding import SECRET_FILE
from grader.engine.submissions import Submission
from grader.errors import StaffError
from grader.outputs.results import SubmissionResult
from grader.outputs.writers import atomic_write
from grader.sandbox.launcher import launcher_for
from grader.sandbox.limits import resolve_limits

MIN_SECRET_LINE = 16  # shorter solution lines (``return Y``) are too generic to search for


def student_notebook(asg: Assignment) -> nbformat.NotebookNode:
    """The student notebook generated from the assignment's source notebook.

    Raises:
        StaffError: the source notebook is missing, unreadable, or its markers do not pair.
    """
    if not asg.source.is_file():
        raise StaffError(f"{asg.source} does not exist; `assign` builds from the source notebook.")
    try:
        source = nbformat.read(asg.source, as_version=4)
        return make_student_notebook(source)
    except SolutionMarkerError as exc:
        raise StaffError(f"{asg.source}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise StaffError(f"{asg.source} could not be read as a notebook: {exc}") from None


def notebook_signature(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What matters when comparing two generated notebooks: cell types and sources."""
    return [(c.cell_type, c.source.rstrip()) for c in nb.cells]


def solution_lines(asg: Assignment) -> set[str]:
    """Distinctive lines of the solution regions (to prove they are not released)."""
    nb = nbformat.read(asg.source, as_version=4)
    inside: set[str] = set()
    outside: set[str] = set()
    for cell in nb.cells:
        in_region = False
        for line in cell.source.splitlines():
            if BEGIN_RE.match(line):
                in_region = True
                continue
            if END_RE.match(line):
                in_region = False
                continue
            text = line.strip()
            if len(text) < MIN_SECRET_LINE or text.startswith("#"):
                continue
            (inside if in_region else outside).add(text)
    return inside - outside


def release_members(asg: Assignment, student_nb: nbformat.NotebookNode) -> dict[str, bytes]:
    """Archive path -> content for the student zip."""
    prefix = asg.name
    members = {
        f"{prefix}/student.ipynb": nbformat.writes(student_nb).encode(),
        f"{prefix}/assignment.toml": (asg.root / "assignment.toml").read_bytes(),
    }
    if asg.public_dir.is_dir():
        for path in sorted(asg.public_dir.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(asg.root).as_posix()
            members[f"{prefix}/{rel}"] = path.read_bytes()
    if asg.probes is not None:  # public checks may call probes; student code sees them anyway
        members[f"{prefix}/{asg.probes.relative_to(asg.root).as_posix()}"] = asg.probes.read_bytes()
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    tmp.replace(path)


def leaks(asg: Assignment, members: dict[str, bytes]) -> list[str]:
    """Hidden material found in a release: paths or solution lines."""
    found = []
    for name in members:
        if "/checks/hidden/" in name or name.endswith(("source.ipynb", f"/{SECRET_FILE}")):
            found.append(f"{name} must not be in the student release")
    secret_path = asg.root / SECRET_FILE  # the key of the hidden checks' seeds
    secret = secret_path.read_text(encoding="utf-8").strip() if secret_path.is_file() else ""
    secrets = solution_lines(asg)
    for name, data in members.items():
        text = data.decode("utf-8", errors="replace")
        for line in secrets:
            if line in text:
                found.append(f"{name} contains solution text: {line[:60]!r}")
        if secret and secret in text:
            found.append(f"{name} contains the assignment's secret")
    return found


@dataclass(frozen=True)
class ReferenceScores:
    solution: SubmissionResult
    template: SubmissionResult


def grade_reference_notebooks(
    asg: Assignment,
    checks: list[CheckInfo],
    student_nb: nbformat.NotebookNode,
    jobs: int = 2,
    extra: tuple[Submission, ...] = (),
) -> tuple[ReferenceScores, list[SubmissionResult]]:
    """Grade the source notebook, the generated student notebook and ``extra`` ones.

    One batch, so the worker zygote and the checks' imports are paid for once.
    """
    limits = resolve_limits(asg.limits)
    options = GradeOptions(timeouts=limits.timeouts, packages=asg.packages)
    launcher = launcher_for(
        asg,
        limits,
        channels=jobs,
        # The staff's own notebooks (solution, template, examples): run them even where no
        # sandbox can be made, such as a CI runner without user namespaces.
        sandbox="prefer",
    )
    with tempfile.TemporaryDirectory(prefix="convgrade-assign-") as tmp:
        template = Path(tmp) / "student.ipynb"
        nbformat.write(student_nb, template)
        subs = [
            Submission("solution", str(asg.source), asg.source),
            Submission("template", "generated student notebook", template),
            *extra,
        ]
        try:
            results = grade_batch(subs, asg, checks, launcher, options, None, jobs=jobs)
        finally:
            launcher.close()
    return ReferenceScores(solution=results[0], template=results[1]), results[2:]


def reference_problems(asg: Assignment, scores: ReferenceScores) -> list[str]:
    problems = []
    sol, tpl = scores.solution, scores.template
    if sol.score != asg.max_score or sol.status != "graded":
        failed = [f"{t.nodeid}: {t.message}" for t in sol.tests if t.status != "passed"]
        problems.append(
            f"the solution scores {sol.score:g}/{asg.max_score:g} (status {sol.status}); "
            "it must score the maximum. Failing checks:\n    "
            + "\n    ".join(failed[:20])
            + ("\n    " + "\n    ".join(sol.errors) if sol.errors else "")
        )
    if tpl.score != 0:
        passed = [t.nodeid for t in tpl.tests if t.status == "passed"]
        problems.append(
            f"the student notebook scores {tpl.score:g} before any work; it must score 0. "
            "Checks that pass on it:\n    " + "\n    ".join(passed[:20])
        )
    if tpl.status == "grader_error" or not tpl.graded:
        problems.append(f"the student notebook could not be graded: {'; '.join(tpl.errors)}")
    return problems


def build_release(asg: Assignment, out: Path, checks: list[CheckInfo]) -> tuple[Path, Path]:
    """Write ``student.ipynb`` and ``<name>-student.zip`` into ``out``.

    Raises:
        StaffError: the solution does not score the maximum, the template scores above 0,
            or the release would contain hidden material.
    """
    student_nb = student_notebook(asg)
    members = release_members(asg, student_nb)
    problems = leaks(asg, members)
    scores, _ = grade_reference_notebooks(asg, checks, student_nb)
    problems += reference_problems(asg, scores)
    if problems:
        raise StaffError("refusing to build the student release:\n  - " + "\n  - ".join(problems))
    nb_path = out / "student.ipynb"
    atomic_write(nb_path, nbformat.writes(student_nb))
    zip_path = out / f"{asg.name}-student.zip"
    write_zip(zip_path, members)
    return nb_path, zip_path
