"""Finding a submission's free-text answers for ``manual.csv``, wherever the student typed them.

The student notebook hands out, for each free-text question, a markdown *prompt* followed by
a markdown cell tagged ``answer:<question>`` holding a placeholder. Students do not always
type into that cell: they add a new cell below it, type under the prompt in the prompt's own
cell, replace the tagged cell by a fresh (untagged) one, write a raw cell or a code comment,
or delete the cell. So for each question of the handed-out notebook (the template):

1. the tagged cell's text, unless it is empty or still the placeholder;
2. the *region* of the question: the cells after its prompt, up to the next heading, the
   next question's prompt or another question's tagged cell. Text there that the template
   does not hold is the student's: new markdown or raw cells, comment-only code cells, and
   what was added to the prompt cell itself;
3. if neither holds anything: an explicit ``[MISSING]`` row, so staff see the gap; it lists
   the text cells the student added that no question claimed, so staff can look there.

Text not found in the tagged cell is marked with where it was found, so staff can tell.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.authoring.stubs import MARKDOWN_PLACEHOLDER

ANSWER_TAG = "answer:"
MISSING = "[MISSING] no answer found: the answer cell is empty or deleted, and no text was typed"


@dataclass(frozen=True)
class _Question:
    id: str
    prompt: str  # the markdown just before the tagged cell in the template ("" if none)


def _source(cell) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(str(s) for s in source)
    return source if isinstance(source, str) else ""


def _tag_question(cell) -> str | None:
    tags = cell.get("metadata", {}).get("tags", []) or []
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(ANSWER_TAG):
            return tag[len(ANSWER_TAG) :].strip() or None
    return None


def _questions(cells) -> list[_Question]:
    out = []
    for i, cell in enumerate(cells):
        question = _tag_question(cell)
        if question and cell.get("cell_type") == "markdown":
            before = cells[i - 1] if i else None
            prompt = ""
            if before is not None and before.get("cell_type") == "markdown":
                if not _tag_question(before):
                    prompt = _source(before).strip()
            out.append(_Question(question, prompt))
    return out


@functools.lru_cache(maxsize=8)
def _template(path: str, mtime: float) -> tuple[tuple[_Question, ...], frozenset[str]]:
    nb = nbformat.read(path, as_version=4)
    known = frozenset(_source(c).strip() for c in nb.cells)
    return tuple(_questions(nb.cells)), known


def _is_blank(text: str) -> bool:
    return text.strip() in ("", MARKDOWN_PLACEHOLDER)


def _comment_text(source: str) -> str | None:
    """The text of a code cell made of comments only (an answer typed as comments)."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip()]
    if lines and all(ln.startswith("#") for ln in lines):
        return "\n".join(ln.lstrip("#").strip() for ln in lines)
    return None


def _is_boundary(cell, question: str, prompts: set[str]) -> bool:
    text = _source(cell).strip()
    if cell.get("cell_type") == "markdown" and text.startswith("#"):
        return True
    tag = _tag_question(cell)
    return (tag is not None and tag != question) or text in prompts


def _find_prompt(cells, prompt: str) -> int | None:
    if not prompt:
        return None
    first = prompt.splitlines()[0].strip()
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown" and first and first in _source(cell):
            return i
    return None


def _region_texts(
    cells, start: int, question: str, known, prompts: set[str]
) -> list[tuple[int, str]]:
    found = []
    for i in range(start + 1, len(cells)):
        cell = cells[i]
        if _is_boundary(cell, question, prompts):
            break
        text = _source(cell).strip()
        if text in known or _is_blank(text) or _tag_question(cell) == question:
            continue
        kind = cell.get("cell_type")
        if kind == "code":
            comment = _comment_text(text)
            if comment:
                found.append((i, f"[found in cell {i + 1}, a code cell of comments] {comment}"))
        elif kind in ("markdown", "raw"):
            found.append((i, f"[found in cell {i + 1}, a {kind} cell after the prompt] {text}"))
    return found


def _added_text(cells, known, used: set[int]) -> list[str]:
    """Markdown and raw cells the student added that no question claimed."""
    out = []
    for i, cell in enumerate(cells):
        text = _source(cell).strip()
        if cell.get("cell_type") not in ("markdown", "raw") or i in used:
            continue
        if text in known or _is_blank(text) or _tag_question(cell):
            continue
        out.append(f"cell {i + 1}: {text.splitlines()[0][:80]!r}")
    return out


def free_text_answers(
    nb: nbformat.NotebookNode, template: Path | None = None
) -> tuple[tuple[str, str], ...]:
    """(question, text) for every free-text question, with a ``[MISSING]`` text if none.

    ``template`` is the student notebook as handed out; without it, the questions are those
    whose tagged cells the submission still holds.
    """
    cells = [c for c in nb.cells if isinstance(c, dict)]
    known: frozenset[str] = frozenset()
    questions: list[_Question] = []
    if template is not None and Path(template).is_file():
        try:
            tq, known = _template(str(template), Path(template).stat().st_mtime)
            questions = list(tq)
        except (OSError, ValueError):
            questions = []
    seen = {q.id for q in questions}
    for q in _questions(cells):  # a question the template lacks (or no template at all)
        if q.id not in seen:
            questions.append(q)
            seen.add(q.id)
    prompts = {q.prompt for q in questions if q.prompt}
    found: dict[str, list[str]] = {}
    used: set[int] = set()
    for q in questions:
        texts = [
            _source(c).strip()
            for c in cells
            if _tag_question(c) == q.id and not _is_blank(_source(c))
        ]
        start = _find_prompt(cells, q.prompt)
        if start is not None:
            used.add(start)
            own = _source(cells[start]).strip()
            if own not in known:  # the student typed into the prompt's own cell
                extra = own.replace(q.prompt, "", 1).strip() if q.prompt in own else own
                how = "typed into the prompt" if q.prompt in own else "the prompt cell, edited"
                texts.append(f"[found in cell {start + 1}, {how}] {extra}")
            region = _region_texts(cells, start, q.id, known, prompts)
            used.update(i for i, _ in region)
            texts += [text for _, text in region]
        found[q.id] = texts
    elsewhere = _added_text(cells, known, used)
    answers = []
    for q in questions:
        texts = found[q.id]
        if not texts:
            start = _find_prompt(cells, q.prompt)
            where = " near the question's prompt" if start is not None else " (the prompt is gone)"
            hint = f". Text added elsewhere: {'; '.join(elsewhere[:5])}" if elsewhere else ""
            texts = [MISSING + where + hint]
        answers.append((q.id, "\n\n".join(texts)))
    return tuple(answers)
