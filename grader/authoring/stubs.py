"""Turn the instructor's notebook into the student's: solutions out, signatures kept.

A solution is marked inside a code cell by two comment lines::

    def moving_average(x, n):
        \"\"\"The mean of each window of n values of x.\"\"\"
        # BEGIN SOLUTION
        ...
        # END SOLUTION

The lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` (markers included) are replaced by
a stub chosen from where the region sits:

- inside a function body, or inside any other block (``if``, ``for``, ``with``...):
  ``raise NotImplementedError`` at the region's indentation;
- directly in a class body or at the top level of the cell: each ``def`` and ``class`` in
  the region keeps its decorators, signature and docstring and its body becomes
  ``raise NotImplementedError`` (classes are stubbed method by method); imports are kept;
  a top-level assignment keeps its names, bound to ``None``; anything else is dropped;
- a region that is not valid Python on its own (it only makes sense with code around it)
  becomes ``raise NotImplementedError``.

Every stub starts with a ``# YOUR CODE HERE`` comment. Markdown and code cells tagged
``solution`` (e.g. the instructor's model explanation) are replaced by a placeholder that
keeps their other tags; cells tagged ``instructor`` are dropped. Outputs and execution counts
are cleared, and metadata about solutions (the tags above, ``nbgrader``, any key with
"solution" in its name) is removed.

Command line: ``python -m grader.authoring.stubs SOURCE OUT``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import textwrap
from pathlib import Path

import nbformat

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)#+\s*BEGIN SOLUTION\s*$")
END_RE = re.compile(r"^[ \t]*#+\s*END SOLUTION\s*$")
YOUR_CODE = "# YOUR CODE HERE"
RAISE = "raise NotImplementedError"
SOLUTION_TAG = "solution"
INSTRUCTOR_TAG = "instructor"
MARKDOWN_PLACEHOLDER = "_Write your answer here._"
CODE_PLACEHOLDER = f"{YOUR_CODE}\n"

_DEF_RE = re.compile(r"^\s*(async\s+def|def)\b")
_CLASS_RE = re.compile(r"^\s*class\b")


class SolutionMarkerError(ValueError):
    """The solution markers of a cell do not pair up."""


def make_student_notebook(source_nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the student version of ``source_nb`` (which is left unchanged).

    Raises:
        SolutionMarkerError: a ``BEGIN``/``END SOLUTION`` marker without its partner, or
            nested regions; the message names the cell and line.
    """
    nb = copy.deepcopy(source_nb)
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if INSTRUCTOR_TAG in tags:
            continue
        if SOLUTION_TAG in tags:
            cell.source = MARKDOWN_PLACEHOLDER if cell.cell_type == "markdown" else CODE_PLACEHOLDER
        elif cell.cell_type == "code":
            try:
                cell.source = stub_source(cell.source)
            except SolutionMarkerError as exc:
                raise SolutionMarkerError(f"cell {index}: {exc}") from None
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        _clean_metadata(cell.metadata)
        cells.append(cell)
    nb.cells = cells
    _clean_metadata(nb.metadata)
    return nb


def stub_source(source: str) -> str:
    """Replace every solution region of one code cell's source by its stub."""
    lines = source.split("\n")
    out: list[str] = []
    start = None
    indent = ""  # of the BEGIN SOLUTION marker that opened the current region
    for number, line in enumerate(lines):
        if begin := BEGIN_RE.match(line):
            if start is not None:
                raise SolutionMarkerError(
                    f"line {number + 1}: BEGIN SOLUTION inside the region opened "
                    f"at line {start + 1}"
                )
            start, indent = number, begin.group("indent")
        elif END_RE.match(line):
            if start is None:
                raise SolutionMarkerError(f"line {number + 1}: END SOLUTION without BEGIN SOLUTION")
            out.extend(_stub_region(lines, start, number, indent))
            start = None
        elif start is None:
            out.append(line)
    if start is not None:
        raise SolutionMarkerError(f"line {start + 1}: BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out)


def _stub_region(lines: list[str], begin: int, end: int, indent: str) -> list[str]:
    """The stub for ``lines[begin:end + 1]`` (markers included; ``indent`` is the BEGIN
    marker's)."""
    context = _enclosing_block(lines, begin, len(indent))
    if context in ("def", "block"):
        return [indent + YOUR_CODE, indent + RAISE]
    body = textwrap.dedent("\n".join(lines[begin + 1 : end]))
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return [indent + YOUR_CODE, indent + RAISE]
    body_lines = body.split("\n")
    stub = [YOUR_CODE]
    for node in tree.body:
        stub.extend(_stub_statement(node, body_lines, top_level=context == "top"))
    if context == "class" and len(stub) == 1:
        stub.append("pass")
    return [indent + line if line else line for line in stub]


def _enclosing_block(lines: list[str], begin: int, indent: int) -> str:
    """Where a region indented by ``indent`` sits: 'top', 'def', 'class' or 'block'."""
    if indent == 0:
        return "top"
    for line in reversed(lines[:begin]):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line) - len(line.lstrip()) < indent:
            if _DEF_RE.match(line):
                return "def"
            if _CLASS_RE.match(line):
                return "class"
            return "block"
    return "block"


def _stub_statement(node: ast.stmt, lines: list[str], top_level: bool) -> list[str]:
    """Stub lines for one statement of a dedented region (``lines`` is its source)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return _stub_def(node, lines, [RAISE])
    if isinstance(node, ast.ClassDef):
        members: list[str] = []
        for child in node.body:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                start = child.col_offset
                members.extend(
                    _unindent(line, start) for line in _stub_def(child, lines, [RAISE], start)
                )
        return _stub_def(node, lines, members or ["pass"])
    if isinstance(node, ast.Import | ast.ImportFrom):
        return lines[node.lineno - 1 : node.end_lineno]
    if top_level and isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        if names:
            return [" = ".join(dict.fromkeys(names)) + " = None"]
    return []


def _stub_def(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
    lines: list[str],
    body: list[str],
    offset: int = 0,
) -> list[str]:
    """Decorators, header and docstring of ``node`` as written, then ``body`` indented.

    ``offset`` is the node's own indentation: the returned lines keep it (the caller strips
    it when it re-indents members).
    """
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    docstring = ast.get_docstring(node, clean=False) is not None
    body_start = node.body[0]
    if body_start.lineno == node.lineno:  # one-liner: `def f(x): return x`
        header = ast.unparse(_bare(node)).split("\n")[:-1]
        header = [" " * offset + line for line in header]
        inner = " " * (offset + 4)
        kept = [inner + ast.unparse(body_start)] if docstring else []
    else:
        header = lines[first - 1 : body_start.lineno - 1]
        inner = " " * body_start.col_offset
        kept = lines[body_start.lineno - 1 : body_start.end_lineno] if docstring else []
    return header + kept + [inner + line if line else line for line in body]


def _unindent(line: str, width: int) -> str:
    """``line`` without up to ``width`` leading spaces (never cutting other text)."""
    return line[min(width, len(line) - len(line.lstrip(" "))) :]


def _bare(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    """A copy of a def/class whose body is a single ``pass`` (to unparse its header)."""
    bare = copy.copy(node)
    bare.body = [ast.Pass()]
    return bare


def _clean_metadata(metadata: dict) -> None:
    tags = metadata.get("tags")
    if tags is not None:
        kept = [t for t in tags if t not in (SOLUTION_TAG, INSTRUCTOR_TAG)]
        if kept:
            metadata["tags"] = kept
        else:
            del metadata["tags"]
    for key in list(metadata):
        if key == "nbgrader" or "solution" in key.lower():
            del metadata[key]


def write_student_notebook(source: Path | str, out: Path | str) -> None:
    """Read ``source``, write its student version to ``out``."""
    source_nb = nbformat.read(str(source), as_version=4)
    nbformat.write(make_student_notebook(source_nb), str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader.authoring.stubs",
        description="Write the student notebook: solution regions replaced by stubs.",
    )
    parser.add_argument("source", type=Path, help="instructor notebook with solutions")
    parser.add_argument("out", type=Path, help="where to write the student notebook")
    args = parser.parse_args(argv)
    try:
        write_student_notebook(args.source, args.out)
    except (OSError, ValueError, nbformat.ValidationError) as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
