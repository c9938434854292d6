"""Reading a submitted notebook: every way it can be broken becomes a clear student message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.authoring.stubs import MARKDOWN_PLACEHOLDER
from grader.errors import SubmissionProblem

ANSWER_TAG = "answer:"


@dataclass(frozen=True)
class Cell:
    index: int  # position among all cells of the notebook
    source: str


@dataclass(frozen=True)
class LoadedNotebook:
    nb: nbformat.NotebookNode
    code_cells: tuple[Cell, ...]
    answers: tuple[tuple[str, str], ...]  # (question, free text) from tagged markdown cells
    notes: tuple[str, ...]


def _answer_question(cell) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", []) or []:
        if isinstance(tag, str) and tag.startswith(ANSWER_TAG):
            return tag[len(ANSWER_TAG) :].strip() or None
    return None


def _malformed(nb) -> str | None:
    """What breaks the structure the loader relies on (JSON objects where objects belong)."""
    metadata = nb.get("metadata", {})
    if not isinstance(metadata, dict):
        return "its metadata is not a JSON object"
    for key in ("kernelspec", "language_info"):
        if not isinstance(metadata.get(key) or {}, dict):
            return f"metadata.{key} is not a JSON object"
    for number, cell in enumerate(nb.cells, 1):
        if not isinstance(cell, dict):
            return f"cell {number} is not a JSON object"
        cell_metadata = cell.get("metadata", {})
        if not isinstance(cell_metadata, dict):
            return f"the metadata of cell {number} is not a JSON object"
        if not isinstance(cell_metadata.get("tags") or [], list):
            return f"the tags of cell {number} are not a list"
        source = cell.get("source", "")
        if not isinstance(source, str) and not (
            isinstance(source, list) and all(isinstance(s, str) for s in source)
        ):
            return f"the source of cell {number} is not text"
    return None


def load_submission(path: Path, max_mib: int = 50) -> LoadedNotebook:
    """Load and sanity-check a submission.

    Raises:
        SubmissionProblem: with a status for grades.csv and a message for the student.
    """
    text = _read_text(path, max_mib)
    nb, notes = _parse(text)
    _check_language(nb)
    if not nb.cells:
        raise SubmissionProblem("empty", "the notebook has no cells.")
    code, answers = _code_and_answers(nb)
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return LoadedNotebook(nb, code, answers, notes)


def _read_text(path: Path, max_mib: int) -> str:
    """The file's text, if it is a readable UTF-8 file of a sane size."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SubmissionProblem(
            "unreadable", f"the file could not be read ({exc.strerror})"
        ) from None
    if size > max_mib * 1024 * 1024:
        raise SubmissionProblem(
            "too_large",
            f"the notebook file is {size / 2**20:.1f} MiB; the limit is {max_mib} MiB. Clear all "
            "outputs (Edit > Clear Outputs of All Cells), save and submit again.",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:  # e.g. a folder named *.ipynb, or the file vanished
        raise SubmissionProblem(
            "unreadable", f"the file could not be read ({exc.strerror})"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SubmissionProblem(
            "not_notebook",
            f"the file is not UTF-8 text (undecodable byte at position {exc.start}); submit the "
            ".ipynb file that Jupyter saved, not a PDF or an export.",
        ) from None


def _parse(text: str) -> tuple[nbformat.NotebookNode, tuple[str, ...]]:
    """The notebook as nbformat 4 (converted from 3 if need be), and notes on what was done."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SubmissionProblem(
            "not_notebook",
            f"the file is not valid JSON ({exc}); a notebook is a JSON document. Did you submit "
            "the .ipynb file itself?",
        ) from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise SubmissionProblem(
            "not_notebook", "the file is JSON but not a Jupyter notebook (no 'cells' list)."
        )
    notes: tuple[str, ...] = ()
    major = data.get("nbformat")
    if major != 4:
        if major != 3 and "worksheets" not in data:
            raise SubmissionProblem(
                "not_notebook", f"unsupported notebook format version {major!r} (expected 4)."
            )
        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception:
            raise SubmissionProblem(
                "old_format",
                "the notebook uses nbformat 3, which could not be converted; open it in a "
                "current Jupyter and save it again.",
            ) from None
        notes = ("converted from nbformat 3 to nbformat 4",)
    else:
        try:
            nb = nbformat.from_dict(data)
        except Exception as exc:
            raise SubmissionProblem("not_notebook", f"the notebook is malformed: {exc}") from None
    if not isinstance(nb.get("cells"), list):
        raise SubmissionProblem("not_notebook", "the notebook's 'cells' is not a list.")
    if problem := _malformed(nb):
        raise SubmissionProblem(
            "not_notebook",
            f"the notebook is malformed: {problem}. Submit the .ipynb file that Jupyter saved.",
        )
    return nb, notes


def _check_language(nb: nbformat.NotebookNode) -> None:
    language = (
        (nb.get("metadata", {}).get("kernelspec") or {}).get("language")
        or (nb.get("metadata", {}).get("language_info") or {}).get("name")
        or "python"
    )
    if str(language).lower() != "python":
        raise SubmissionProblem(
            "wrong_kernel",
            f"the notebook's kernel language is {language!r}; this assignment needs a Python 3 "
            "kernel (Kernel > Change kernel > Python 3), then save and submit again.",
        )


def _code_and_answers(
    nb: nbformat.NotebookNode,
) -> tuple[tuple[Cell, ...], tuple[tuple[str, str], ...]]:
    """The code cells to run, and the free-text answers typed into answer cells."""
    code, answers = [], []
    for index, cell in enumerate(nb.cells):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        if not isinstance(source, str):
            continue
        if cell.get("cell_type") == "code":
            code.append(Cell(index, source))
        elif cell.get("cell_type") == "markdown" and (question := _answer_question(cell)):
            # The untouched placeholder of the student notebook is not an answer to read.
            if source.strip() not in ("", MARKDOWN_PLACEHOLDER):
                answers.append((question, source))
    return tuple(code), tuple(answers)
