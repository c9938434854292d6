"""Loading a submission: every broken notebook is a SubmissionProblem the student can act on."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from grader.engine.notebook import Cell, load_submission
from grader.errors import SubmissionProblem

# --- helpers -------------------------------------------------------------------------------


def code(source, outputs=(), execution_count=None, **extra) -> dict:
    return {
        "cell_type": "code",
        "metadata": {},
        "source": source,
        "outputs": list(outputs),
        "execution_count": execution_count,
        **extra,
    }


def markdown(source, tags=None, **extra) -> dict:
    metadata = {"tags": tags} if tags is not None else {}
    return {"cell_type": "markdown", "metadata": metadata, "source": source, **extra}


def notebook(cells, **metadata) -> dict:
    metadata.setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata, "cells": cells}


def write(tmp_path: Path, content, name: str = "submission.ipynb") -> Path:
    """Write a dict as JSON, a str as text and bytes as they are."""
    path = tmp_path / name
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def stream_output(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


NOTEBOOK_V3 = {
    "nbformat": 3,
    "nbformat_minor": 0,
    "metadata": {"name": "homework"},
    "worksheets": [
        {
            "metadata": {},
            "cells": [
                {"cell_type": "markdown", "metadata": {}, "source": ["# Convolutions"]},
                {
                    "cell_type": "code",
                    "metadata": {},
                    "language": "python",
                    "input": ["import numpy as np\n", "X = np.ones((3, 3))"],
                    "outputs": [
                        {"output_type": "stream", "stream": "stdout", "text": ["old output\n"]}
                    ],
                    "prompt_number": 4,
                    "collapsed": False,
                },
            ],
        }
    ],
}

# --- each bad input: its status and a message that says what to do -----------------------

BAD_INPUTS = {
    "not-json": (b"this is not { json", "not_notebook", r"not valid JSON .*\.ipynb file itself"),
    "empty-file": (b"", "not_notebook", "not valid JSON"),
    "truncated-json": (
        json.dumps(notebook([code("x = 1")]))[:-20],
        "not_notebook",
        "not valid JSON",
    ),
    "json-list": (
        [1, 2, 3],
        "not_notebook",
        r"JSON but not a Jupyter notebook \(no 'cells' list\)",
    ),
    "json-string": ('"just a string"', "not_notebook", "JSON but not a Jupyter notebook"),
    "json-without-cells": ({"hello": "world"}, "not_notebook", "JSON but not a Jupyter notebook"),
    "undecodable-bytes": (
        b'{"cells": ["\xff\xfe\xfa"]}',
        "not_notebook",
        r"not UTF-8 text \(undecodable byte at position 12\).*not a PDF",
    ),
    "utf16-file": (
        json.dumps(notebook([code("x = 1")])).encode("utf-16"),
        "not_notebook",
        "not UTF-8 text",
    ),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "not_notebook", "not UTF-8 text"),
    "nbformat-5": (
        {**notebook([code("x = 1")]), "nbformat": 5},
        "not_notebook",
        r"unsupported notebook format version 5 \(expected 4\)",
    ),
    "nbformat-missing": (
        {"cells": [code("x = 1")], "metadata": {}},
        "not_notebook",
        "unsupported notebook format version None",
    ),
    "cells-not-a-list": (
        {**notebook([]), "cells": {"0": code("x = 1")}},
        "not_notebook",
        "'cells' is not a list",
    ),
    "no-cells": (notebook([]), "empty", "the notebook has no cells"),
    "nbformat-3-without-cells": (
        {**NOTEBOOK_V3, "worksheets": []},
        "empty",
        "the notebook has no cells",
    ),
    "nbformat-3-unconvertible": (
        {"nbformat": 3, "nbformat_minor": 0, "worksheets": "garbage"},
        "old_format",
        r"nbformat 3, which could not be converted; open it in a current Jupyter",
    ),
    "r-kernel": (
        notebook([code("x <- 1")], kernelspec={"name": "ir", "display_name": "R", "language": "R"}),
        "wrong_kernel",
        r"kernel language is 'R'; this assignment needs a Python 3 kernel \(Kernel > Change",
    ),
    "julia-language-info": (
        {**notebook([code("x = 1")]), "metadata": {"language_info": {"name": "julia"}}},
        "wrong_kernel",
        "kernel language is 'julia'",
    ),
}


@pytest.mark.parametrize(("content", "status", "match"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_a_bad_input_gives_its_status_and_a_helpful_message(tmp_path, content, status, match):
    path = write(tmp_path, content)

    with pytest.raises(SubmissionProblem, match=match) as info:
        load_submission(path)

    assert info.value.status == status
    assert info.value.message == str(info.value)


# Notebooks whose JSON has the wrong shape inside: still a clear problem, never a crash.
MALFORMED = {
    "cell-is-a-string": notebook(["print('hi')"]),
    "cell-is-null": notebook([None, code("x = 1")]),
    "metadata-is-a-list": {**notebook([code("x = 1")]), "metadata": []},
    "kernelspec-is-a-string": notebook([code("x = 1")], kernelspec="python3"),
    "language-info-is-a-string": {
        **notebook([code("x = 1")]),
        "metadata": {"language_info": "python"},
    },
    "cell-metadata-is-a-list": notebook([{**markdown("text"), "metadata": []}]),
    "tags-is-a-number": notebook([markdown("text", tags=3)]),
    "source-is-a-number": notebook([code(42)]),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_notebook_is_a_submission_problem_not_a_crash(tmp_path, content):
    path = write(tmp_path, content)

    with pytest.raises(SubmissionProblem, match="malformed") as info:
        load_submission(path)

    assert info.value.status == "not_notebook"


def test_a_missing_file_is_unreadable(tmp_path):
    with pytest.raises(SubmissionProblem, match=r"could not be read \(No such file"):
        load_submission(tmp_path / "gone.ipynb")


def test_a_folder_named_like_a_notebook_is_unreadable(tmp_path):
    (tmp_path / "homework.ipynb").mkdir()

    with pytest.raises(SubmissionProblem, match="could not be read") as info:
        load_submission(tmp_path / "homework.ipynb")

    assert info.value.status == "unreadable"


# --- size limit ----------------------------------------------------------------------------


def huge_output_notebook(mib: float) -> dict:
    text = "x" * int(mib * 2**20)
    return notebook([code("print('x' * 10**8)", outputs=[stream_output(text)], execution_count=1)])


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write(tmp_path, huge_output_notebook(1.2))  # "1.2 MiB", not a rounded "1 MiB"

    def no_reading(self):
        raise AssertionError("the file was read although it is too large")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr(Path, "read_text", no_reading)
    with pytest.raises(
        SubmissionProblem, match=r"is 1\.2 MiB; the limit is 1 MiB\. Clear all outputs"
    ):
        load_submission(path, max_mib=1)


def test_the_size_limit_status_is_too_large(tmp_path):
    path = write(tmp_path, huge_output_notebook(1.7))

    with pytest.raises(SubmissionProblem) as info:
        load_submission(path, max_mib=1)

    assert info.value.status == "too_large"


def test_a_file_under_the_size_limit_loads_with_its_big_output_cleared(tmp_path):
    path = write(tmp_path, huge_output_notebook(1.7))

    loaded = load_submission(path, max_mib=2)

    assert loaded.nb.cells[0]["outputs"] == []
    assert loaded.code_cells == (Cell(0, "print('x' * 10**8)"),)


# --- what a good notebook gives ------------------------------------------------------------


def test_code_cells_keep_their_position_among_all_cells(tmp_path):
    path = write(
        tmp_path,
        notebook(
            [
                markdown("# Title"),
                code(["import numpy as np\n", "X = np.ones(3)"]),
                markdown("Some text"),
                {"cell_type": "raw", "metadata": {}, "source": "raw text"},
                code(""),
                code("y = 2"),
            ]
        ),
    )

    loaded = load_submission(path)

    assert loaded.code_cells == (
        Cell(1, "import numpy as np\nX = np.ones(3)"),
        Cell(4, ""),
        Cell(5, "y = 2"),
    )
    assert loaded.notes == ()


def test_code_cell_outputs_and_execution_counts_are_cleared(tmp_path):
    outputs = [
        stream_output("forged: all tests passed\n"),
        {
            "output_type": "execute_result",
            "execution_count": 7,
            "data": {"text/plain": "42"},
            "metadata": {},
        },
    ]
    path = write(
        tmp_path,
        notebook([code("print('hi')", outputs=outputs, execution_count=7), markdown("text")]),
    )
    original = path.read_bytes()

    loaded = load_submission(path)

    cell = loaded.nb.cells[0]
    assert cell["outputs"] == []
    assert cell["execution_count"] is None
    assert loaded.nb.cells[1]["source"] == "text"
    assert path.read_bytes() == original  # the submission itself is left as it was


def test_answer_cells_are_collected_from_tagged_markdown(tmp_path):
    path = write(
        tmp_path,
        notebook(
            [
                markdown("The kernel [1, -1] finds vertical edges.", tags=["answer:edges"]),
                markdown("untagged text"),
                markdown(
                    ["A 2x2 kernel\n", "on a 3x3 input."], tags=["solution", "answer: shape "]
                ),
                markdown("empty question id", tags=["answer:"]),
                code(
                    "x = 1  # a tagged code cell is code, not an answer",
                    metadata={"tags": ["answer:x"]},
                ),
                markdown("other tag", tags=["answers:edges"]),
            ]
        ),
    )

    loaded = load_submission(path)

    assert loaded.answers == (
        ("edges", "The kernel [1, -1] finds vertical edges."),
        ("shape", "A 2x2 kernel\non a 3x3 input."),
    )


def test_nbformat_3_is_converted_with_a_note(tmp_path):
    path = write(tmp_path, NOTEBOOK_V3)

    loaded = load_submission(path)

    assert loaded.nb.nbformat == 4
    assert loaded.notes == ("converted from nbformat 3 to nbformat 4",)
    assert loaded.code_cells == (Cell(1, "import numpy as np\nX = np.ones((3, 3))"),)
    assert loaded.nb.cells[1]["outputs"] == []
    assert loaded.nb.cells[1]["execution_count"] is None


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + json.dumps(notebook([code("x = 1")])).encode(),
        notebook([code("x = 1")], kernelspec={"name": "python3", "language": "Python"}),
        {**notebook([code("x = 1")]), "metadata": {}},
        {**notebook([code("x = 1")]), "metadata": {"language_info": {"name": "python"}}},
        json.dumps(notebook([code("x = 1")]), indent=1),
    ],
    ids=["utf8-bom", "language-capitalised", "no-kernel-metadata", "language-info", "indented"],
)
def test_harmless_variants_load(tmp_path, content):
    loaded = load_submission(write(tmp_path, content))

    assert loaded.code_cells == (Cell(0, "x = 1"),)


def test_a_notebook_written_by_nbformat_round_trips(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# hi"), nbformat.v4.new_code_cell("a = 1")],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}},
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)

    loaded = load_submission(path)

    assert loaded.code_cells == (Cell(1, "a = 1"),)
    assert [c["cell_type"] for c in loaded.nb.cells] == ["markdown", "code"]


def test_untouched_answer_placeholders_are_not_collected(tmp_path):
    from nbformat.v4 import new_markdown_cell, new_notebook

    from grader.authoring.stubs import MARKDOWN_PLACEHOLDER
    from grader.engine.notebook import load_submission

    nb = new_notebook(
        cells=[
            new_markdown_cell(MARKDOWN_PLACEHOLDER, metadata={"tags": ["answer:diagonal"]}),
            new_markdown_cell("  ", metadata={"tags": ["answer:gradient"]}),
            new_markdown_cell("The edge vanishes.", metadata={"tags": ["answer:matmul"]}),
        ]
    )
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nb))
    assert load_submission(path).answers == (("matmul", "The edge vanishes."),)
