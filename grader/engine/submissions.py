"""Turning the command line's PATHs into a sorted list of submissions with unique ids.

Zip archives are extracted with every member checked first: no absolute paths, no ``..``,
no links, bounded member count and sizes. Members that break the rules, and symlinks that
point outside the folder given, become submissions with a problem instead of files read.
"""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.errors import StaffError, SubmissionProblem
from grader.outputs import writers

MAX_ZIP_MEMBERS = 2000
MAX_ZIP_MEMBER_BYTES = 200 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
_SKIP_PARTS = {"__MACOSX", ".ipynb_checkpoints"}
# Files that writers put at the top of --out, next to one folder per submission id
# (`convgrade report` writes report.html there). No submission may take one of these names,
# in any letter case (some file systems ignore it).
# Written next to the submission folders by `convgrade report`, outside the writers' registry.
_REPORT_FILE = "report.html"


def reserved_ids() -> frozenset[str]:
    """Names no submission folder may take: the files a batch writes beside them."""
    return frozenset({_REPORT_FILE, *writers.batch_file_names()})


# (file stem, origin, path to read or None, problem or None): one notebook found, before
# collect() gives it a unique id.
_Found = tuple[str, str, Path | None, SubmissionProblem | None]


def _reserved(sub_id: str) -> bool:
    return sub_id.lower() in reserved_ids()


@dataclass(frozen=True)
class Submission:
    id: str
    origin: str  # what the user gave, e.g. "class.zip:alice/hw1.ipynb"
    path: Path | None
    problem: SubmissionProblem | None = None


def _clean_id(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return text or "submission"


def _scan_dir(root: Path) -> list[_Found]:
    found: list[_Found] = []
    real_root = root.resolve()
    for path in sorted(root.rglob("*.ipynb")):
        rel = path.relative_to(root)
        # Only below the folder given: the folder itself may sit anywhere.
        if any(part in _SKIP_PARTS for part in rel.parts):
            continue
        if path.is_dir() and not path.is_symlink():  # a folder named like a notebook
            continue
        if path.is_symlink() or any(p.is_symlink() for p in path.parents if root in p.parents):
            target = path.resolve()
            if real_root not in target.parents:
                found.append(
                    (
                        path.stem,
                        str(path),
                        None,
                        SubmissionProblem(
                            "unsafe_path",
                            f"{rel} is a link to a file outside the submission folder; "
                            "it was not read.",
                        ),
                    )
                )
                continue
        found.append((path.stem, str(path), path, None))
    return found


def _extract_zip(archive: Path, dest: Path) -> list[_Found]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        problem = SubmissionProblem("bad_archive", f"{archive.name} is not a readable zip ({exc}).")
        return [(archive.stem, str(archive), None, problem)]
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            problem = SubmissionProblem(
                "bad_archive",
                f"{archive.name} has {len(members)} entries (limit {MAX_ZIP_MEMBERS}).",
            )
            return [(archive.stem, str(archive), None, problem)]
        dest.mkdir(parents=True, exist_ok=True)
        # A fresh folder per archive: two archives with the same name must not mix members.
        target_root = Path(tempfile.mkdtemp(prefix=_clean_id(archive.stem) + "-", dir=dest))
        return _extract_members(zf, archive, target_root)


def _extract_members(zf: zipfile.ZipFile, archive: Path, target_root: Path) -> list[_Found]:
    found: list[_Found] = []
    total = 0
    for info in sorted(zf.infolist(), key=lambda m: m.filename):
        name = info.filename
        if info.is_dir() or not name.endswith(".ipynb"):
            continue
        pure = PurePosixPath(name.replace("\\", "/"))
        if any(part in _SKIP_PARTS for part in pure.parts):
            continue
        origin = f"{archive}:{name}"
        sub_id = "_".join(pure.with_suffix("").parts)
        # Only what is extracted counts toward the archive's total: a refused member
        # must not make the notebooks after it too large.
        problem = _refusal(info, pure, total)
        out = target_root.joinpath(*pure.parts)
        if problem is None:
            copied, problem = _copy_member(zf, info, out)
            if problem is None and total + copied > MAX_ZIP_TOTAL_BYTES:
                out.unlink()
                problem = _too_large(name)
            if problem is None:
                total += copied
        found.append((sub_id, origin, None, problem) if problem else (sub_id, origin, out, None))
    return found


def _too_large(name: str) -> SubmissionProblem:
    return SubmissionProblem("too_large", f"the archive entry {name!r} is too large to extract.")


def _refusal(info: zipfile.ZipInfo, pure: PurePosixPath, total: int) -> SubmissionProblem | None:
    """Why a member must not be extracted, judged from its header alone."""
    name = info.filename
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        return SubmissionProblem(
            "unsafe_path",
            f"the archive entry {name!r} points outside the archive; it was not extracted.",
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        return SubmissionProblem(
            "unsafe_path", f"the archive entry {name!r} is a link; it was not extracted."
        )
    if info.file_size > MAX_ZIP_MEMBER_BYTES or total + info.file_size > MAX_ZIP_TOTAL_BYTES:
        return _too_large(name)
    return None


def _copy_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path
) -> tuple[int, SubmissionProblem | None]:
    """Extract one member, at most MAX_ZIP_MEMBER_BYTES of it: the header may lie."""
    out.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    try:
        with zf.open(info) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_ZIP_MEMBER_BYTES:
                    break
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        # corrupt data, a bad CRC, a password or an unsupported compression method
        out.unlink(missing_ok=True)
        return copied, SubmissionProblem(
            "bad_archive", f"the archive entry {info.filename!r} could not be extracted ({exc})."
        )
    if copied > MAX_ZIP_MEMBER_BYTES:
        out.unlink()
        return copied, _too_large(info.filename)
    return copied, None


def collect_to_grade(paths: list[str], extract_to: Path) -> list[Submission]:
    """:func:`collect` for ``convgrade grade``: finding no notebook at all is a staff error.

    Raises:
        StaffError: a PATH is missing, or none of them holds a notebook.
    """
    subs = collect([Path(p) for p in paths], extract_to)
    if not subs:
        raise StaffError(f"no notebooks (*.ipynb) found in {' '.join(paths)}; nothing to grade.")
    return subs


def collect(paths: list[Path], extract_to: Path) -> list[Submission]:
    """Resolve PATHs to submissions, sorted by id; duplicate ids get ``-2``, ``-3``...

    Raises:
        StaffError: a PATH does not exist or is not a notebook, folder or zip.
    """
    raw: list[_Found] = []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise StaffError(f"{path} does not exist. Give .ipynb files, folders or .zip archives.")
        if path.is_dir():
            raw += _scan_dir(path)
        elif path.suffix == ".zip":
            raw += _extract_zip(path, extract_to)
        elif path.suffix == ".ipynb":
            raw.append((path.stem, str(path), path, None))
        else:
            raise StaffError(
                f"{path} is not a notebook (.ipynb), a folder or a .zip archive of notebooks."
            )
    raw.sort(key=lambda r: (_clean_id(r[0]), r[1]))
    # Every plain id is kept for the first submission that has it; a duplicate gets the first
    # free "-2", "-3"... so it can collide neither with another stem (say "hw-2") nor with the
    # files that sit next to the submission folders in --out.
    taken = {_clean_id(r[0]) for r in raw} | reserved_ids()
    first: set[str] = set()
    subs = []
    for stem, origin, nb_path, problem in raw:
        base = _clean_id(stem)
        if base not in first and not _reserved(base):
            first.add(base)
            sub_id = base
        else:
            n = 2
            while f"{base}-{n}" in taken or _reserved(f"{base}-{n}"):
                n += 1
            sub_id = f"{base}-{n}"
            taken.add(sub_id)
        subs.append(Submission(sub_id, origin, nb_path, problem))
    return sorted(subs, key=lambda s: s.id)
