"""Which imports of a notebook grading cannot satisfy, worked out from its source alone.

``convgrade check`` (on the student's machine, where every package may be installed) and
``convgrade grade`` both run this before anything else, so the student learns before
submitting that, say, scipy is not there under grading. Nothing is executed: each code cell
is parsed with :mod:`ast` after IPython's own input transformations (``%magic`` and ``!cmd``
lines become calls), and every ``import a.b`` and ``from a import b`` is found wherever it
sits: top level, function bodies, ``try`` blocks. Relative imports are ignored.

What grading provides is the assignment's ``[environment] packages`` (see
:mod:`grader.authoring.assignment`) plus the standard library. Without that declaration it is what
the grading environment has installed (only meaningful where grading runs).

The book's helper packages ``d2l`` and ``dl`` are replaced by stubs under grading (see
``grader/worker/imports.py``): importing them is harmless, using one of their helpers
raises an error, so the report names each helper the notebook uses.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

BOOK_HELPERS = ("d2l", "dl")
PREFIX = "imports grading cannot satisfy:"
HELPER_PREFIX = "book helpers not available under grading:"
_MAGIC_LINE = re.compile(r"^(\s*)[%!].*$", re.MULTILINE)


@dataclass(frozen=True)
class ImportUse:
    """One import statement: what it imports and where it is."""

    module: str
    cell: int  # 1-based position among all cells, as Jupyter numbers them for the student
    line: int
    where: str  # "top level" or "in smooth"

    @property
    def root(self) -> str:
        return self.module.split(".")[0]

    def describe(self) -> str:
        return f"cell {self.cell}, line {self.line}" + (
            f", {self.where}" if self.where != "top level" else ""
        )


def python_source(cell_source: str) -> str:
    """A code cell as Python: IPython's transformations, or magic lines blanked out."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(cell_source)
    except Exception:  # IPython missing, or a cell it cannot transform
        if cell_source.lstrip().startswith("%%"):
            return ""  # a cell magic: its body is not Python (%%bash, %%html, ...)
        return _MAGIC_LINE.sub(lambda m: m.group(1) + "pass", cell_source)


class _Finder(ast.NodeVisitor):
    def __init__(self, cell: int) -> None:
        self.cell = cell
        self.scope: list[str] = []
        self.found: list[ImportUse] = []

    def _add(self, module: str, node: ast.stmt) -> None:
        where = f"in {self.scope[-1]}" if self.scope else "top level"
        self.found.append(ImportUse(module, self.cell, node.lineno, where))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not node.level and node.module:
            self._add(node.module, node)

    def _scoped(self, node) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped


def cell_imports(source: str, cell: int) -> list[ImportUse]:
    """The imports of one code cell (none if it is not valid Python: its run will say so)."""
    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return []
    finder = _Finder(cell)
    finder.visit(tree)
    return finder.found


def _helper_aliases(tree: ast.AST) -> dict[str, str]:
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BOOK_HELPERS:
                    aliases[a.asname or a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            root = node.module.split(".")[0]
            if root in BOOK_HELPERS:
                for a in node.names:
                    if a.name != "*":
                        aliases[a.asname or a.name] = root
    return aliases


def helper_uses(cells: Iterable[tuple[int, str]]) -> dict[str, list[str]]:
    """``{"d2l.plot": ["cell 3"], ...}``: attributes used on a name bound to d2l/dl.

    A name bound in one cell is used in later ones, so the bindings are notebook-wide.
    """
    trees = []
    for cell, source in cells:
        try:
            trees.append((cell, ast.parse(python_source(source))))
        except (SyntaxError, ValueError):
            continue
    aliases: dict[str, str] = {}
    for _, tree in trees:
        aliases.update(_helper_aliases(tree))
    uses: dict[str, list[str]] = {}
    for cell, tree in trees:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and not node.attr.startswith("_")
                and node.attr not in ("tensorflow", "torch", "mxnet", "jax")
            ):
                places = uses.setdefault(f"{node.value.id}.{node.attr}", [])
                if f"cell {cell}" not in places:
                    places.append(f"cell {cell}")
    return uses


def is_provided(root: str, packages: Iterable[str] | None) -> bool:
    """Whether grading can import the top-level package ``root``."""
    if root in sys.stdlib_module_names or root == "__future__" or root in BOOK_HELPERS:
        return True
    if packages is not None:
        return root in set(packages)
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False


def environment_problems(
    cells: Iterable[tuple[int, str]], packages: Iterable[str] | None
) -> list[str]:
    """Sentences for the top of the feedback: unavailable imports, then used book helpers.

    ``cells`` holds (0-based cell index among all cells, source) of the code cells.
    """
    cells = [(index + 1, source) for index, source in cells]
    packages = None if packages is None else tuple(packages)
    missing: dict[str, list[ImportUse]] = {}
    for cell, source in cells:
        for use in cell_imports(source, cell):
            if not is_provided(use.root, packages):
                missing.setdefault(use.root, []).append(use)
    out = []
    if missing:
        parts = [
            f"{root} ({'; '.join(u.describe() for u in uses[:3])})"
            for root, uses in sorted(missing.items())
        ]
        provided = (
            "the standard library and " + ", ".join(sorted(packages))
            if packages is not None
            else "the standard library and the packages installed where grading runs"
        )
        out.append(
            f"{PREFIX} {', '.join(parts)}. Grading provides {provided}. The rest of a cell "
            "still runs after a failed import, but code that uses a missing package fails."
        )
    helpers = helper_uses(cells)
    if helpers:
        named = ", ".join(f"{k} ({', '.join(v[:3])})" for k, v in sorted(helpers.items()))
        out.append(
            f"{HELPER_PREFIX} {named}. Importing the book's d2l/dl package is harmless under "
            "grading, but its helpers raise an error: define them in your notebook."
        )
    return out


def is_environment_line(text: str) -> bool:
    return text.startswith((PREFIX, HELPER_PREFIX))
