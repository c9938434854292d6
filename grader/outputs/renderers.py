"""Output formats: each file the writers make is one small named renderer class.

A :class:`SubmissionRenderer` turns one submission's frozen result into one file of that
submission's folder (``feedback.md``); a :class:`BatchRenderer` turns the results of a whole
batch into one file at the top of ``--out`` (``grades.csv``). :func:`register` adds a format
to the registry, under its file name; :mod:`grader.outputs.writers` registers the built-in
formats and writes every registered one, for fresh results and for the files that a reused
result is missing. A new format is thus one renderer plus a golden file in ``tests/golden/``;
a batch format's file name is reserved from then on, so no submission folder takes it.

Renderers read records only: they never grade, and they hold no state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from nbformat import NotebookNode

from grader.errors import GraderBug
from grader.outputs.results import SubmissionResult

# Text is written as UTF-8; bytes as they are.
Rendered = str | bytes


@dataclass(frozen=True)
class SubmissionInput:
    """What a per-submission file is rendered from."""

    result: SubmissionResult
    title: str = ""  # the assignment's title
    # The run notebook. Only a fresh run has it: result.json does not hold it.
    executed: NotebookNode | None = None


@dataclass(frozen=True)
class BatchInput:
    """What a per-batch file is rendered from."""

    results: tuple[SubmissionResult, ...]  # one per submission, in the batch's order
    question_ids: tuple[str, ...]  # in the order of assignment.toml


class SubmissionRenderer(ABC):
    """One file in the folder of each submission."""

    file_name: ClassVar[str]

    @abstractmethod
    def render(self, item: SubmissionInput) -> Rendered | None:
        """The file's content, or None when there is none for this submission."""


class BatchRenderer(ABC):
    """One file at the top of ``--out``, next to the submission folders."""

    file_name: ClassVar[str]

    @abstractmethod
    def render(self, batch: BatchInput) -> Rendered:
        """The file's content."""


_Renderer = TypeVar("_Renderer", SubmissionRenderer, BatchRenderer)
_Class = TypeVar("_Class", type[SubmissionRenderer], type[BatchRenderer])

# Insertion-ordered: files are written in the order their formats were registered.
_SUBMISSION_FILES: dict[str, SubmissionRenderer] = {}
_BATCH_FILES: dict[str, BatchRenderer] = {}


def register(cls: _Class) -> _Class:
    """Class decorator: add the output format ``cls`` to the registry.

    Raises:
        GraderBug: ``cls`` is not a renderer, its file name is not a plain file name, or
            another registered format already writes a file of that name.
    """
    if issubclass(cls, SubmissionRenderer):
        _add(_SUBMISSION_FILES, cls())
    elif issubclass(cls, BatchRenderer):
        _add(_BATCH_FILES, cls())
    else:
        raise GraderBug(f"{cls!r} is neither a SubmissionRenderer nor a BatchRenderer")
    return cls


def _add(table: dict[str, _Renderer], renderer: _Renderer) -> None:
    name = getattr(renderer, "file_name", "")
    kind = type(renderer).__name__
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise GraderBug(f"output format {kind} needs a plain file name; got file_name={name!r}")
    if name in table:
        other = type(table[name]).__name__
        raise GraderBug(f"output formats {other} and {kind} both write {name!r}")
    table[name] = renderer


def unregister(cls: type[SubmissionRenderer] | type[BatchRenderer]) -> None:
    """Remove the format ``cls`` from the registry (if it is there)."""
    name = getattr(cls, "file_name", "")
    if type(_SUBMISSION_FILES.get(name)) is cls:
        del _SUBMISSION_FILES[name]
    if type(_BATCH_FILES.get(name)) is cls:
        del _BATCH_FILES[name]


def submission_renderers() -> tuple[SubmissionRenderer, ...]:
    """The registered per-submission formats, in the order their files are written."""
    return tuple(_SUBMISSION_FILES.values())


def batch_renderers() -> tuple[BatchRenderer, ...]:
    """The registered per-batch formats, in the order their files are written."""
    return tuple(_BATCH_FILES.values())
