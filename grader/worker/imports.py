"""Imports under grading, on the worker side: the assignment's packages and the book's helpers.

Three things happen to the ``import`` statements of a student's cells (an IPython AST
transformer, so they apply to what the cell really runs, after magics are turned into
calls):

- Every import statement, wherever it sits (top level, function body, ``try``), first asks
  :func:`check` whether its package belongs to the assignment's declared packages (plus the
  standard library). An undeclared package raises :class:`PackageUnavailable`, naming it,
  even when it happens to be installed: grading then matches what ``convgrade check`` told
  the student before submitting.
- An import statement at the top level of a cell that fails with ``ModuleNotFoundError``
  does not stop the cell. The names it would have bound are bound to a placeholder that
  raises :class:`PackageUnavailable` as soon as it is used, and the rest of the cell runs.
  A cell such as ``import scipy.signal`` followed by ``def`` statements therefore still
  defines its functions; a function that then uses scipy fails with a message naming it.
  Imports inside a ``try`` are left alone: the student's own fallback handles them.
- The book's helper packages ``d2l`` and ``dl`` (``from d2l import tensorflow as d2l``, or
  the chapter's ``from dl import tensorflow as dl``) import as stubs when they are not
  installed. Using a helper on them raises :class:`BookHelperUnavailable`, which tells the
  student to define that helper in the notebook.

None of this is a security boundary (``importlib.import_module`` is not guarded); it keeps
grading consistent with the declared environment, and keeps one missing package from
costing points that do not depend on it.
"""

from __future__ import annotations

import ast
import builtins
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NoReturn

from . import seeding

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

BOOK_HELPERS = ("d2l", "dl")
GUARD_NAME = "__convgrade_imports__"  # the object the transformed statements call
_allowed: frozenset[str] | None = None  # None: every installed package may be imported


class PackageUnavailable(ModuleNotFoundError):
    """A package the grading environment does not provide was imported or used."""


class BookHelperUnavailable(AttributeError):
    """A helper of the book's ``d2l``/``dl`` package was used under grading."""


def configure(packages: Iterable[str] | None) -> None:
    """Set the packages student code may import (``None``: whatever is installed)."""
    global _allowed
    _allowed = None if packages is None else frozenset(str(p) for p in packages)


def is_allowed(root: str) -> bool:
    if _allowed is None:
        return True
    return (
        root in _allowed
        or root in sys.stdlib_module_names
        or root in BOOK_HELPERS
        or root == "__future__"
    )


def _unavailable(root: str, statement: str) -> PackageUnavailable:
    listed = ", ".join(sorted(_allowed)) if _allowed is not None else "what is installed"
    return PackageUnavailable(
        f"{root} is not available in the grading environment\n"
        f"`{statement}` cannot run under grading. This assignment's notebooks may import the "
        f"standard library and: {listed}. Write this part without {root}.",
        name=root,
    )


def check(module: str, level: int, statement: str) -> None:
    """Raise :class:`PackageUnavailable` for an import of an undeclared package."""
    root = (module or "").split(".")[0]
    if level == 0 and root and not is_allowed(root):
        raise _unavailable(root, statement)


class Placeholder:
    """Stands for a name whose import failed; any use raises, naming the package."""

    __slots__ = ("_convgrade_root", "_convgrade_statement")

    def __init__(self, root: str, statement: str) -> None:
        object.__setattr__(self, "_convgrade_root", root)
        object.__setattr__(self, "_convgrade_statement", statement)

    def _fail(self) -> PackageUnavailable:
        return _unavailable(self._convgrade_root, self._convgrade_statement)

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # IPython and introspection probe dunders; say "absent"
            raise AttributeError(name)
        raise self._fail()

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise self._fail()

    def __getitem__(self, key: object) -> NoReturn:
        raise self._fail()

    def __repr__(self) -> str:
        return f"<{self._convgrade_root}: not available under grading>"


def missing(exc: BaseException, statement: str, module: str) -> Placeholder:
    """Called where a top-level import failed: report it once and return a placeholder."""
    root = getattr(exc, "name", None) or (module or "").split(".")[0]
    root = str(root).split(".")[0]
    sys.stderr.write(
        f"[convgrade: `{statement}` failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
        f"the rest of this cell still ran. Code that uses {root} will raise an error.]\n"
    )
    return Placeholder(root, statement)


class Guard:
    """What the transformed statements call (kept in builtins, restored after each cell)."""

    check = staticmethod(check)
    missing = staticmethod(missing)
    imported = staticmethod(seeding.seed_new_libraries)


# -- the AST transformer ----------------------------------------------------------------


def _statement_text(node: ast.stmt) -> str:
    try:
        return ast.unparse(node)[:200]
    except Exception:
        return "import"


def _guard_call(attr: str, args: list[ast.expr]) -> ast.Call:
    return ast.Call(
        func=ast.Attribute(ast.Name(GUARD_NAME, ast.Load()), attr, ast.Load()),
        args=args,
        keywords=[],
    )


def _check_stmt(module: str, level: int, text: str) -> ast.stmt:
    return ast.Expr(
        _guard_call("check", [ast.Constant(module), ast.Constant(level), ast.Constant(text)])
    )


def _is_future(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


_ImportStmt = ast.Import | ast.ImportFrom


def _module_of(stmt: _ImportStmt) -> str:
    if isinstance(stmt, ast.ImportFrom):
        return stmt.module or ""
    return stmt.names[0].name


def _bound_names(node: _ImportStmt) -> list[str]:
    names = []
    for alias in node.names:
        if alias.name == "*":
            continue
        if isinstance(node, ast.Import) and alias.asname is None:
            names.append(alias.name.split(".")[0])
        else:
            names.append(alias.asname or alias.name)
    return names


class ImportTransformer(ast.NodeTransformer):
    """Rewrites a cell's import statements as the module docstring describes."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        body: list[ast.stmt] = []
        for stmt in node.body:
            if _is_future(stmt):  # must stay first in the cell, and never fails
                body.append(stmt)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                body += self._top_level(stmt)
            else:
                body.append(self.visit(stmt))
        node.body = body
        return node

    def _single(self, stmt: _ImportStmt) -> list[_ImportStmt]:
        # One statement per imported module, so each can fail on its own.
        if isinstance(stmt, ast.Import) and len(stmt.names) > 1:
            return [ast.copy_location(ast.Import(names=[a]), stmt) for a in stmt.names]
        return [stmt]

    def _guarded(self, stmt: _ImportStmt) -> list[ast.stmt]:
        module = _module_of(stmt)
        level = getattr(stmt, "level", 0) or 0
        check_stmt = ast.copy_location(_check_stmt(module, level, _statement_text(stmt)), stmt)
        return [check_stmt, stmt]

    def _top_level(self, stmt: _ImportStmt) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for single in self._single(stmt):
            text = _statement_text(single)
            module = _module_of(single)
            exc = ast.Name("_convgrade_exc", ast.Load())
            args = [exc, ast.Constant(text), ast.Constant(module)]
            names = _bound_names(single)
            handler_body: list[ast.stmt]
            if names:  # one report, then the same placeholder under every bound name
                handler_body = [
                    ast.Assign(
                        targets=[ast.Name(n, ast.Store()) for n in names],
                        value=_guard_call("missing", args),
                    )
                ]
            else:
                handler_body = [ast.Expr(_guard_call("missing", args))]
            after = ast.Expr(_guard_call("imported", []))
            wrapped = ast.Try(
                body=self._guarded(single) + [ast.copy_location(after, single)],
                handlers=[
                    ast.ExceptHandler(
                        type=ast.Name("ModuleNotFoundError", ast.Load()),
                        name="_convgrade_exc",
                        body=handler_body,
                    )
                ],
                orelse=[],
                finalbody=[],
            )
            out.append(ast.fix_missing_locations(ast.copy_location(wrapped, single)))
        return out

    def visit_Import(self, node: ast.Import) -> list[ast.stmt]:
        return [ast.fix_missing_locations(s) for s in self._guarded(node)]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom | list[ast.stmt]:
        if _is_future(node):
            return node
        return [ast.fix_missing_locations(s) for s in self._guarded(node)]


class _SafeTransformer(ast.NodeTransformer):
    """IPython unregisters a transformer that raises: never raise, leave the cell as it is."""

    def visit(self, node):
        try:
            return ImportTransformer().visit(node)
        except Exception:
            return node


# -- the book's helper packages -----------------------------------------------------------


class _HelperModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        root = self.__name__.split(".")[0]
        raise BookHelperUnavailable(
            f"{root}.{name}: a book helper grading does not provide; define {name} yourself\n"
            f"The book's {root} package is only a stub under grading: importing it works, "
            f"but none of its helpers exist. Write {name} in your notebook."
        )


class BookHelperFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Provides ``d2l``/``dl`` and their submodules as stubs when they are not installed."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in BOOK_HELPERS:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _HelperModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install(shell: InteractiveShell) -> None:
    """Set everything up in an IPython shell (in the zygote or a worker, before any cell)."""
    builtins.__dict__[GUARD_NAME] = Guard
    if not any(isinstance(f, BookHelperFinder) for f in sys.meta_path):
        sys.meta_path.append(BookHelperFinder())  # last: a real d2l, if installed, wins
    if not any(isinstance(t, _SafeTransformer) for t in shell.ast_transformers):
        shell.ast_transformers.append(_SafeTransformer())
