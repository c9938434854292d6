"""Loading an assignment folder and its ``assignment.toml``; every mistake is a staff error."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.errors import StaffError
from grader.sandbox.limits import LIMIT_KEYS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUNDLED_PACKAGE = "convgrade_assignments"  # the wheel's name for the repo's assignments/
# Libraries the worker zygote imports once, before forking workers (see launcher.py).
DEFAULT_PRELOAD = ("numpy", "tensorflow", "IPython.core.interactiveshell", "matplotlib")


@dataclass(frozen=True)
class Question:
    id: str
    title: str
    points: float


@dataclass(frozen=True)
class Hint:
    """``[[hints]]`` in assignment.toml: when a cell raises ``error`` (an exception name, or
    any when empty) with text that matches the regular expression ``matches``, feedback puts
    the sentence ``says`` before the raw error."""

    matches: str
    says: str
    error: str = ""

    def applies(self, ename: str, evalue: str) -> bool:
        if self.error and ename != self.error:
            return False
        return re.search(self.matches, evalue) is not None


@dataclass(frozen=True)
class Assignment:
    name: str
    root: Path
    title: str
    questions: tuple[Question, ...]
    limits: dict
    source: Path
    preload: tuple[str, ...]
    student: Path
    # [environment] packages: the top-level packages notebooks may import besides the
    # standard library; None (not declared): whatever the grading environment has.
    packages: tuple[str, ...] | None = None
    # [[hints]]: a plain sentence for a cell error staff know well (see :class:`Hint`).
    hints: tuple[Hint, ...] = ()
    # [worker] probes: the file of worker-side helpers checks call as student.probe.NAME.
    probes: Path | None = None

    @property
    def public_dir(self) -> Path:
        return self.root / "checks" / "public"

    @property
    def hidden_dir(self) -> Path:
        return self.root / "checks" / "hidden"

    @property
    def examples_dir(self) -> Path:
        return self.root / "examples"

    @property
    def max_score(self) -> float:
        return sum(q.points for q in self.questions)

    def question_ids(self) -> tuple[str, ...]:
        return tuple(q.id for q in self.questions)


def bundled_dir() -> Path:
    """Where the bundled assignments are: the ``assignments/`` folder of the source checkout
    this code runs from (its code and its assignments belong together), else the package
    data of an install (a wheel)."""
    checkout = Path(__file__).resolve().parents[2] / "assignments"
    if checkout.is_dir():
        return checkout
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location).resolve()
    return checkout


def bundled_names() -> list[str]:
    folder = bundled_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "assignment.toml").is_file())


def default_name() -> str:
    """The bundled assignment used when none is named: there must be exactly one.

    Raises:
        StaffError: none or several are bundled, listing them.
    """
    names = bundled_names()
    if len(names) == 1:
        return names[0]
    listed = ", ".join(names) if names else "none"
    raise StaffError(
        f"no assignment given and no single bundled one to default to (bundled: {listed}). "
        "Pass --assignment with a bundled name or a folder that holds assignment.toml."
    )


def resolve(name_or_dir: str | Path | None) -> Path:
    """Find an assignment folder: a path, the name of a bundled assignment, or (None) the one
    bundled assignment."""
    if name_or_dir is None:
        name_or_dir = default_name()
    path = Path(name_or_dir)
    if path.is_dir():
        return path.resolve()
    if path.name == "assignment.toml" and path.is_file():
        return path.parent.resolve()
    bundled = bundled_dir() / str(name_or_dir)
    if bundled.is_dir():
        return bundled.resolve()
    names = ", ".join(bundled_names()) or "none"
    raise StaffError(
        f"no assignment {str(name_or_dir)!r}: not a folder, and not a bundled assignment "
        f"(bundled: {names}). Pass --assignment with a folder that holds assignment.toml."
    )


def load(name_or_dir: str | Path | None = None) -> Assignment:
    """Read and validate an assignment.

    Raises:
        StaffError: the folder or its assignment.toml is missing or malformed.
    """
    root = resolve(name_or_dir)
    toml_path = root / "assignment.toml"
    if not toml_path.is_file():
        raise StaffError(f"{root} has no assignment.toml; every assignment needs one.")
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StaffError(f"{toml_path} is not valid TOML: {exc}") from None
    where = f"in {toml_path}"
    meta = data.get("assignment", {})
    if not isinstance(meta, dict):
        raise StaffError(f"[assignment] must be a table {where}")
    questions = _questions(data.get("questions"), where)
    limits = _limits(data.get("limits", {}), where)
    preload, probes = _worker(root, data.get("worker", {}), where)
    packages = _packages(data.get("environment", {}), where)
    public = root / "checks" / "public"
    hidden = root / "checks" / "hidden"
    if not public.is_dir() and not hidden.is_dir():
        raise StaffError(f"{root} has neither checks/public nor checks/hidden.")
    return Assignment(
        name=root.name,
        root=root,
        title=str(meta.get("title", root.name)),
        questions=questions,
        limits=limits,
        source=root / str(meta.get("source", "source.ipynb")),
        student=root / str(meta.get("student", "student.ipynb")),
        preload=tuple(preload),
        packages=packages,
        hints=_hints(data.get("hints", []), where),
        probes=probes,
    )


def _questions(raw: object, where: str) -> tuple[Question, ...]:
    """``[questions.<id>]``: each with a positive number of points."""
    if not isinstance(raw, dict) or not raw:
        raise StaffError(f"no [questions.<id>] tables {where}; each question needs points.")
    questions = []
    for qid, q in raw.items():
        if not isinstance(q, dict):
            raise StaffError(f"[questions.{qid}] must be a table {where}")
        points = q.get("points")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
            raise StaffError(
                f"[questions.{qid}] needs a positive number of points {where}. "
                f"Received: points={points!r}"
            )
        questions.append(Question(str(qid), str(q.get("title", qid)), float(points)))
    return tuple(questions)


def _limits(limits: object, where: str) -> dict:
    """``[limits]``: known keys only, each a positive number."""
    if not isinstance(limits, dict):
        raise StaffError(f"[limits] must be a table {where}")
    unknown = set(limits) - set(LIMIT_KEYS)
    if unknown:
        raise StaffError(
            f"unknown key(s) {sorted(unknown)} in [limits] {where}; known: {sorted(LIMIT_KEYS)}"
        )
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise StaffError(
                f"[limits] {key} must be a positive number {where}. Received: {value!r}"
            )
    return dict(limits)


def _worker(root: Path, worker, where: str) -> tuple[list[str], Path | None]:
    """``[worker]``: the modules the zygote preloads, and the probes file."""
    preload = worker.get("preload", list(DEFAULT_PRELOAD)) if isinstance(worker, dict) else None
    if not isinstance(preload, list) or not all(isinstance(m, str) for m in preload):
        raise StaffError(
            f"[worker] preload must be a list of module names {where}. Received: {preload!r}"
        )
    return preload, _probes(root, worker.get("probes"), where)


def _probes(root: Path, raw, where: str) -> Path | None:
    """``[worker] probes``: a Python file of the assignment, outside its hidden checks (the
    sandbox shows it to student code)."""
    if raw is None:
        return None
    path = (root / str(raw)).resolve() if isinstance(raw, str) else None
    if path is None or path.suffix != ".py" or not path.is_file() or root not in path.parents:
        raise StaffError(
            f"[worker] probes must name a .py file inside the assignment folder {where}. "
            f"Received: {raw!r}"
        )
    if (root / "checks" / "hidden") in path.parents:
        raise StaffError(
            f"[worker] probes {where} lies in checks/hidden, but student code can read the "
            "probes file: keep it outside checks/hidden (e.g. probes.py beside assignment.toml)"
        )
    try:  # the zygote imports it; a syntax error is the staff's, and found here before grading
        compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as exc:
        raise StaffError(f"[worker] probes {where}: {path} is not valid Python ({exc})") from None
    return path


def _hints(raw, where: str) -> tuple[Hint, ...]:
    if not isinstance(raw, list):
        raise StaffError(f"[[hints]] must be an array of tables {where}")
    hints = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict) or set(item) - {"error", "matches", "says"}:
            raise StaffError(
                f"hint {n} {where} must be a table with keys matches, says and optionally "
                f"error. Received: {item!r}"
            )
        matches, says = item.get("matches"), item.get("says")
        if not isinstance(matches, str) or not isinstance(says, str) or not says.strip():
            raise StaffError(f"hint {n} {where} needs text in both matches and says")
        try:
            re.compile(matches)
        except re.error as exc:
            raise StaffError(
                f"hint {n} {where}: matches is not a regular expression ({exc})"
            ) from None
        hints.append(Hint(matches, says.strip(), str(item.get("error", ""))))
    return tuple(hints)


def _packages(environment, where: str) -> tuple[str, ...] | None:
    """``[environment] packages``: top-level import names (``sklearn``, not ``scikit-learn``)."""
    if not isinstance(environment, dict):
        raise StaffError(f"[environment] must be a table {where}")
    unknown = set(environment) - {"packages"}
    if unknown:
        raise StaffError(
            f"unknown key(s) {sorted(unknown)} in [environment] {where}; known: packages"
        )
    if "packages" not in environment:
        return None
    packages = environment["packages"]
    if not isinstance(packages, list) or not all(
        isinstance(p, str) and p.isidentifier() for p in packages
    ):
        raise StaffError(
            f"[environment] packages must be a list of top-level import names such as "
            f'["numpy", "tensorflow"] {where}. Received: {packages!r}'
        )
    return tuple(packages)
