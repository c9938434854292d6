"""The student-notebook generator: solutions out, signatures and explanations kept."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.authoring.stubs import (
    MARKDOWN_PLACEHOLDER,
    SolutionMarkerError,
    main,
    make_student_notebook,
    stub_source,
)

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "assignments" / "convolutions" / "source.ipynb"


def src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def test_region_in_a_function_body_becomes_a_raise():
    cell = src('''
        def corr2d(X, K):
            """Cross-correlate."""
            # BEGIN SOLUTION
            return X @ K
            # END SOLUTION
    ''')
    assert stub_source(cell) == src('''
        def corr2d(X, K):
            """Cross-correlate."""
            # YOUR CODE HERE
            raise NotImplementedError
    ''')


def test_whole_functions_in_a_region_keep_decorators_signature_and_docstring():
    cell = src('''
        import functools

        # BEGIN SOLUTION
        @functools.cache
        def integral_kernel(n: int,
                            scale=1.0):
            """Ones.

            More words.
            """
            return [[scale] * n]


        def one_liner(x): return x
        # END SOLUTION
    ''')
    assert stub_source(cell) == src('''
        import functools

        # YOUR CODE HERE
        @functools.cache
        def integral_kernel(n: int,
                            scale=1.0):
            """Ones.

            More words.
            """
            raise NotImplementedError
        def one_liner(x):
            raise NotImplementedError
    ''')


def test_class_in_a_region_is_stubbed_method_by_method():
    cell = src('''
        # BEGIN SOLUTION
        class Conv2D(Layer):
            """A layer."""

            units = 3

            def __init__(self, kernel_size):
                super().__init__()
                self.kernel_size = kernel_size

            def call(self, X):
                """Forward pass."""
                return X
        # END SOLUTION
    ''')
    stubbed = stub_source(cell)
    assert stubbed == src('''
        # YOUR CODE HERE
        class Conv2D(Layer):
            """A layer."""
            def __init__(self, kernel_size):
                raise NotImplementedError
            def call(self, X):
                """Forward pass."""
                raise NotImplementedError
    ''')
    namespace = {"Layer": object}
    exec(stubbed, namespace)
    with pytest.raises(NotImplementedError):
        namespace["Conv2D"]((1, 2))


def test_region_in_a_class_body_stubs_its_methods():
    cell = src('''
        class Conv2D(Layer):
            """A layer."""

            # BEGIN SOLUTION
            def build(self, input_shape):
                self.weight = 1
            # END SOLUTION

            def call(self, X):
                return X
    ''')
    stubbed = stub_source(cell)
    assert "    # YOUR CODE HERE\n    def build(self, input_shape):\n" in stubbed
    assert "        raise NotImplementedError" in stubbed
    assert "self.weight = 1" not in stubbed
    ast.parse(stubbed)


def test_region_in_a_method_body_is_indented_like_the_method():
    cell = src("""
        class Conv2D(Layer):
            def call(self, X):
                # BEGIN SOLUTION
                if X is None:
                    return 0
                return X
                # END SOLUTION
    """)
    assert stub_source(cell).endswith("        # YOUR CODE HERE\n        raise NotImplementedError")


def test_top_level_statements_keep_names_and_imports_only():
    cell = src("""
        # Replace None by one letter.
        # BEGIN SOLUTION
        import math
        GRADIENT_ANSWER = "B"
        a, (b, c) = 1, (2, 3)
        weights: dict = {}
        print(GRADIENT_ANSWER)
        for i in range(3):
            pass
        # END SOLUTION
        print("after")
    """)
    assert stub_source(cell) == src("""
        # Replace None by one letter.
        # YOUR CODE HERE
        import math
        GRADIENT_ANSWER = None
        a = b = c = None
        weights = None
        print("after")
    """)


def test_region_inside_a_block_or_not_parsable_becomes_a_raise():
    inside_if = src("""
        if True:
            # BEGIN SOLUTION
            x = 1
            # END SOLUTION
    """)
    assert stub_source(inside_if) == "if True:\n    # YOUR CODE HERE\n    raise NotImplementedError"
    partial = src("""
        # BEGIN SOLUTION
        x = (1,
        # END SOLUTION
        2)
    """)
    assert stub_source(partial).startswith("# YOUR CODE HERE\nraise NotImplementedError")


def test_markers_are_matched_loosely_but_must_pair():
    assert stub_source("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION") == (
        "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError"
    )
    for bad, where in [
        ("# BEGIN SOLUTION\nx = 1", "line 1: BEGIN SOLUTION without END"),
        ("x = 1\n# END SOLUTION", "line 2: END SOLUTION without BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "line 2: BEGIN SOLUTION inside"),
    ]:
        with pytest.raises(SolutionMarkerError, match=where):
            stub_source(bad)


def _notebook():
    solved = new_code_cell("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION")
    solved.outputs = [new_output("execute_result", data={"text/plain": "1"}, execution_count=3)]
    solved.execution_count = 3
    solved.metadata["nbgrader"] = {"solution": True}
    answer = new_markdown_cell("The model answer.")
    answer.metadata["tags"] = ["answer:diagonal", "solution"]
    secret = new_code_cell("assert f() == 1")
    secret.metadata["tags"] = ["instructor"]
    nb = new_notebook(cells=[new_markdown_cell("# Title"), solved, answer, secret])
    nb.metadata["solution_checksum"] = "abc"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_notebook_outputs_metadata_and_instructor_cells():
    source = _notebook()
    before = nbformat.writes(source)
    student = make_student_notebook(source)
    assert nbformat.writes(source) == before, "the source notebook must not change"
    title, code, answer = student.cells
    assert title.source == "# Title"
    assert code.outputs == [] and code.execution_count is None
    assert "nbgrader" not in code.metadata
    assert answer.source == MARKDOWN_PLACEHOLDER
    assert answer.metadata["tags"] == ["answer:diagonal"]
    assert "solution_checksum" not in student.metadata
    assert "kernelspec" in student.metadata
    nbformat.validate(student)
    assert nbformat.writes(make_student_notebook(student)) == nbformat.writes(student)


def test_marker_errors_name_the_cell():
    nb = new_notebook(cells=[new_markdown_cell("x"), new_code_cell("# END SOLUTION")])
    with pytest.raises(SolutionMarkerError, match=r"cell 1: line 1"):
        make_student_notebook(nb)


def test_assignment_notebook_keeps_every_signature_and_compiles():
    source = nbformat.read(str(SOURCE), as_version=4)
    student = make_student_notebook(source)

    def signatures(nb):
        found = {}
        for cell in nb.cells:
            if cell.cell_type == "code":
                for node in ast.walk(ast.parse(cell.source)):
                    if isinstance(node, ast.FunctionDef | ast.ClassDef):
                        args = ast.unparse(node.args) if isinstance(node, ast.FunctionDef) else ""
                        found[node.name] = args
        return found

    assert signatures(student) == signatures(source)
    text = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in text and "return" in text
    assert "GRADIENT_ANSWER = None" in text and "DIAGONAL_ANSWERS = None" in text


def test_command_line_writes_the_student_notebook(tmp_path, capsys):
    out = tmp_path / "student.ipynb"
    assert main([str(SOURCE), str(out)]) == 0
    assert nbformat.read(str(out), as_version=4).cells
    bad = tmp_path / "bad.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("# BEGIN SOLUTION")]), str(bad))
    assert main([str(bad), str(tmp_path / "x.ipynb")]) == 2
    assert "BEGIN SOLUTION without END" in capsys.readouterr().err
