"""What travels from the client to the Dask workers: the packed assignment, one task per
submission, and the resources a worker must have to grade.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from grader.authoring.assignment import Assignment
from grader.engine import seeding
from grader.engine.submissions import Submission
from grader.errors import StaffError, SubmissionProblem

if TYPE_CHECKING:  # Dask is imported only once the client knows it is installed
    from grader.cluster.dask_worker import Task

MAX_ASSIGNMENT_MIB = 64
# Folders and files of an assignment that grading does not need: they stay home.
_LEFT_HOME = ("examples", "__pycache__", ".git", ".pytest_cache")


def worker_resources(assignment: Assignment) -> dict[str, float]:
    """``[worker] resources`` of assignment.toml: what a Dask worker must have to grade.

    Raises:
        StaffError: it is not a table of positive numbers.
    """
    from grader.authoring.assignment import tomllib

    path = assignment.root / "assignment.toml"
    worker = tomllib.loads(path.read_text(encoding="utf-8")).get("worker", {})
    raw = worker.get("resources", {}) if isinstance(worker, dict) else {}
    ok = isinstance(raw, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in raw.values()
    )
    if not ok:
        raise StaffError(
            f"[worker] resources in {path} must be a table of positive numbers, for example "
            f"resources = {{GPU = 1}}. Received: {raw!r}"
        )
    return {str(k): float(v) for k, v in raw.items()}


def pack_assignment(assignment: Assignment) -> bytes:
    """The assignment folder as tar bytes (with its secret), without its examples and its
    solution notebook."""
    root = assignment.root

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in _LEFT_HOME for p in parts) or info.name.endswith(".pyc"):
            return None
        if (root / info.name).resolve() == assignment.source.resolve():
            return None
        return info

    # The hidden checks' key (grader/engine/seeding.py) goes with them, wherever it is kept here:
    # a worker that made its own would draw other hidden inputs than local grading.
    secret = (seeding.assignment_secret(root).decode() + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(root.iterdir()):
            if child.name != seeding.SECRET_FILE:
                tar.add(child, arcname=child.name, filter=keep)
        info = tarfile.TarInfo(seeding.SECRET_FILE)
        info.size, info.mode = len(secret), 0o600
        tar.addfile(info, io.BytesIO(secret))
    data = buf.getvalue()
    if len(data) > MAX_ASSIGNMENT_MIB * 2**20:
        raise StaffError(
            f"{root} packs to {len(data) / 2**20:.0f} MiB; at most {MAX_ASSIGNMENT_MIB} MiB "
            "travels to the Dask workers. Move large data out of the assignment folder."
        )
    return data


def make_task(sub: Submission, max_mib: int) -> Task:
    """The plain-data task for ``sub``: its notebook's bytes, or the problem found here."""
    from grader.cluster.dask_worker import Task
    from grader.engine.notebook import load_submission

    problem, data = sub.problem, None
    if problem is None and sub.path is not None:
        try:
            if sub.path.stat().st_size <= max_mib * 2**20:
                data = sub.path.read_bytes()
        except OSError:
            pass
        if data is None:  # too large or unreadable: the same problem, in the same words
            try:
                load_submission(sub.path, max_mib)
                data = sub.path.read_bytes()  # it became readable in the meantime
            except SubmissionProblem as exc:
                problem = exc
    as_tuple = (problem.status, problem.message) if problem is not None else None
    filename = sub.path.name if sub.path is not None else f"{sub.id}.ipynb"
    return Task(sub.id, sub.origin, filename, data, as_tuple)
