"""Gradescope: build an autograder zip (:func:`build_autograder`) and grade inside it (:func:`run`).

Gradescope unzips the autograder into ``/autograder/source``, runs ``setup.sh`` once when it
builds the image, then runs ``run_autograder`` once per submission. The zip holds::

    setup.sh          apt-get installs python3, pip and bubblewrap; pip installs convgrade/
    run_autograder    python3 -m grader.commands.gradescope run "$ROOT" (default /autograder)
    convgrade/        the project: pyproject.toml, README.md, grader/, reference/
    assignment/       assignment.toml and checks/ (public and hidden)

At grading time, with ``ROOT`` = ``/autograder`` (or ``$CONVGRADE_AUTOGRADER_ROOT``)::

    ROOT/source/assignment/     the assignment that grades (ASSIGNMENT_SUBDIR)
    ROOT/submission/            the student's upload: exactly one .ipynb is expected
    ROOT/results/results.json   written by :func:`run`, whatever happens

Left out of the zip: the solution notebook (``source.ipynb``), the student notebook, the
bundled examples, the project's tests, caches and VCS data. Grading needs only
assignment.toml, the checks and the probes file, and anything else in the image is readable
by whoever can read the image. ``run_autograder`` puts the bundled ``convgrade/`` first on
``PYTHONPATH``, so the grader that runs is the one in the zip even if another convgrade is
installed;
``setup.sh``'s pip install provides the dependencies.

Student code runs in the bubblewrap sandbox (as root, or through user namespaces). Where
bubblewrap cannot start (some Docker setups), the notebook is not run at all: the student
gets a zero with a message that the problem is on the staff's side, the staff log (stdout,
hidden from students) says why and how to fix it, and the runner exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__
from grader.authoring import assignment as assignment_mod
from grader.authoring.assignment import Assignment
from grader.engine import seeding
from grader.errors import StaffError
from grader.outputs import writers
from grader.outputs.results import SubmissionResult
from grader.sandbox import bubblewrap as sandboxing

if TYPE_CHECKING:
    from grader.sandbox.launcher import SandboxPolicy

ASSIGNMENT_SUBDIR = "assignment"
PROJECT_SUBDIR = "convgrade"
PROJECT_PARTS = ("pyproject.toml", "README.md", "grader", "reference")
_SKIP_NAMES = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# fixed timestamps make the zip byte-identical for identical inputs
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# PEP 668 images refuse system-wide pip installs without this; older pips ignore it.
export PIP_BREAK_SYSTEM_PACKAGES=1
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-pip bubblewrap
python3 -m pip install --no-cache-dir ./convgrade
# Fail the image build now rather than at the first submission.
python3 -c "import grader.commands.gradescope, tensorflow, nbformat, pytest"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this once per submission. Every outcome, including a crash of the grader,
# is written to results/results.json; a non-zero exit means even that was impossible.
set -uo pipefail
ROOT="${CONVGRADE_AUTOGRADER_ROOT:-/autograder}"
export PYTHONPATH="$ROOT/source/convgrade${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m grader.commands.gradescope run "$ROOT"
"""

UPLOAD_HINT = (
    "Upload exactly one Jupyter notebook (.ipynb file): the assignment notebook with your "
    "answers, saved."
)
SANDBOX_MESSAGE = (
    "The autograder did not run your notebook: it could not be isolated safely on this "
    "grading machine. This is a problem on our side, not in your notebook; course staff can "
    "see the details. Please let them know."
)
CRASH_MESSAGE = (
    "The autograder could not grade this submission because of a problem on our side, not in "
    "your notebook. Course staff can see the details; please let them know."
)


# ---------------------------------------------------------------- building the zip


def build_autograder(assignment_dir: Path | str, out_zip: Path) -> Path:
    """Write a Gradescope autograder zip for an assignment and return its path.

    Args:
        assignment_dir: an assignment folder (or the name of a bundled assignment).
        out_zip: the zip to write (atomically; parent folders are created).

    Raises:
        StaffError: the assignment is invalid, or convgrade is not running from a source
            checkout (the zip bundles the project's source, pyproject.toml included).
    """
    asg = assignment_mod.load(assignment_dir)
    project = Path(__file__).resolve().parents[2]
    if not (project / "pyproject.toml").is_file():
        raise StaffError(
            f"cannot bundle convgrade: no pyproject.toml next to {project / 'grader'}. Build "
            "the autograder from a convgrade source checkout (pip install -e .)."
        )
    members: list[tuple[str, bytes, bool]] = [
        ("setup.sh", SETUP_SH.encode(), True),
        ("run_autograder", RUN_AUTOGRADER.encode(), True),
    ]
    for part in PROJECT_PARTS:
        members += _tree(project / part, f"{PROJECT_SUBDIR}/{part}")
    if not (project / "README.md").is_file():
        # pyproject.toml names README.md as the readme; pip refuses to build without it
        members.append((f"{PROJECT_SUBDIR}/README.md", b"# convgrade\n", False))
    members += _tree(asg.root / "assignment.toml", f"{ASSIGNMENT_SUBDIR}/assignment.toml")
    members += _tree(asg.root / "checks", f"{ASSIGNMENT_SUBDIR}/checks")
    if asg.probes is not None:  # the worker-side helpers its checks call
        rel = asg.probes.relative_to(asg.root).as_posix()
        members += _tree(asg.probes, f"{ASSIGNMENT_SUBDIR}/{rel}")
    # The hidden checks' key (grader/engine/seeding.py): without it each container would make its
    # own, and a re-run on Gradescope would draw other hidden inputs.
    secret = seeding.assignment_secret(asg.root).decode() + "\n"
    members.append((f"{ASSIGNMENT_SUBDIR}/{seeding.SECRET_FILE}", secret.encode(), False))
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_zip.name}.", dir=out_zip.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data, executable in sorted(members):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.replace(tmp, out_zip)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_zip


def _tree(path: Path, arcname: str) -> list[tuple[str, bytes, bool]]:
    """A file, or a folder's files, as zip members (caches and dotfiles left out)."""
    if path.is_file():
        return [(arcname, path.read_bytes(), False)]
    if not path.is_dir():
        return []
    out = []
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        skip = any(p in _SKIP_NAMES or p.startswith(".") for p in rel.parts)
        if skip or not f.is_file() or f.name.endswith(_SKIP_SUFFIXES):
            continue
        out.append((f"{arcname}/{rel.as_posix()}", f.read_bytes(), False))
    return out


# ---------------------------------------------------------------- grading on Gradescope


def find_notebooks(submission_dir: Path) -> list[Path]:
    """The notebooks a student uploaded (checkpoints, macOS metadata and links ignored)."""
    if not submission_dir.is_dir():
        return []
    found = []
    for p in sorted(submission_dir.rglob("*.ipynb")):
        rel = p.relative_to(submission_dir).parts
        if any(part in {".ipynb_checkpoints", "__MACOSX"} or part.startswith(".") for part in rel):
            continue
        if p.is_file() and not p.is_symlink():
            found.append(p)
    return found


def run(root: Path, sandbox: SandboxPolicy = "require") -> int:
    """Grade the one notebook in ``root/submission`` and write ``root/results/results.json``.

    Student-visible text never contains a traceback: grader failures give score 0 and a
    generic message, and the details go to stdout (hidden from students by
    ``stdout_visibility``).

    Returns:
        0 once results.json is written (whatever the score or failure); 2 when the image
        cannot sandbox student code, which is then not run at all (fail closed).
    """
    started = time.monotonic()
    code = 0
    root = Path(root)
    print(f"convgrade {__version__} from {Path(__file__).resolve().parents[1]}")
    max_score = 0.0
    try:
        asg = assignment_mod.load(root / "source" / ASSIGNMENT_SUBDIR)
        max_score = asg.max_score
        notebooks = find_notebooks(root / "submission")
        if len(notebooks) == 1:
            result = _grade(notebooks[0], asg, root, sandbox)
            _staff_log(result)
            payload = writers.gradescope_json(result)
        else:
            names = [str(p.relative_to(root / "submission")) for p in notebooks]
            what = f"{len(names)} notebooks ({', '.join(names)})" if names else "no notebook"
            print(f"convgrade: refused: the submission has {what}")
            payload = _zero(f"Your submission has {what}. {UPLOAD_HINT}", max_score, "Submission")
    except sandboxing.SandboxUnavailable as exc:
        print(f"convgrade: {exc}")
        payload = _zero(SANDBOX_MESSAGE, max_score, "Autograder")
        code = 2
    except Exception:
        print("convgrade: grading failed (students see a generic message):")
        traceback.print_exc(file=sys.stdout)
        payload = _zero(CRASH_MESSAGE, max_score, "Autograder")
    payload["execution_time"] = round(time.monotonic() - started, 3)
    writers.atomic_write(root / "results" / "results.json", _dumps(payload))
    return code


def _dumps(payload: dict) -> str:
    return json.dumps(payload, indent=2) + "\n"


def _zero(message: str, max_score: float, name: str) -> dict:
    """A results.json payload that gives 0 points and tells the student why."""
    return {
        "score": 0.0,
        "execution_time": 0.0,
        "output": message,
        "stdout_visibility": "hidden",
        "tests": [
            {
                "name": name,
                "score": 0.0,
                "max_score": max_score,
                "status": "failed",
                "output": message,
                "visibility": "visible",
            }
        ],
    }


def _grade(notebook: Path, asg: Assignment, root: Path, sandbox: SandboxPolicy) -> SubmissionResult:
    from grader.api import grade_notebook
    from grader.sandbox.launcher import launcher_for
    from grader.sandbox.limits import resolve_limits

    hidden = (root / "source", root / "results")
    # one submission per container, so a warm zygote would save nothing
    launcher = launcher_for(
        asg, resolve_limits(asg.limits), warm=False, hidden=hidden, sandbox=sandbox
    )
    try:
        if launcher.mode is not None:
            ok, why = sandbox_works(launcher.mode, hidden)
            if not ok:
                raise sandboxing.refusal(
                    f"bubblewrap cannot start the full sandbox in this image ({why})."
                )
        return grade_notebook(notebook, asg.root, launcher=launcher)
    finally:
        launcher.close()


def sandbox_works(mode: sandboxing.Mode, hidden: tuple[Path, ...] = ()) -> tuple[bool, str]:
    """Whether the worker sandbox starts here, found by starting it once.

    The launcher's probe starts a minimal sandbox; this one starts the real command line
    (every bind and mask), which is what each worker will need.

    Returns:
        ``(True, "")``, or ``(False, why)`` with bubblewrap's own complaint.
    """
    try:
        cmd = [*sandboxing.bwrap_command(mode, hidden), sys.executable, "-I", "-c", "pass"]
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if proc.returncode != 0:
        return False, proc.stderr.decode(errors="replace").strip()[-500:]
    return True, ""


def _staff_log(result: SubmissionResult) -> None:
    print(f"convgrade: {result.submission}: {result.score:g}/{result.max_score:g} {result.status}")
    print(f"convgrade: isolation: {result.execution.isolation}")
    for err in result.errors:
        print(f"convgrade: problem: {err}")
    if result.staff_details:
        print("convgrade: details for staff:\n" + result.staff_details)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader.commands.gradescope",
        description="Grade a Gradescope submission (what run_autograder calls).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="grade ROOT/submission, write ROOT/results/results.json")
    r.add_argument("root", nargs="?", default="/autograder", help="default: /autograder")
    r.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the notebook unconfined: for trusted notebooks only (a staff test)",
    )
    args = parser.parse_args(argv)
    return run(Path(args.root), "off" if args.no_sandbox else "require")


if __name__ == "__main__":
    sys.exit(main())
