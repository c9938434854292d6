"""Seeds, secret hidden inputs, the grading environment and free-text answers (fast parts).

The end-to-end halves (real workers, real CLI) are in tests/test_envdet_e2e.py.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.authoring import assignment as assignment_mod
from grader.authoring.release import leaks, release_members, student_notebook
from grader.engine import seeding
from grader.engine.check_messages import check_message, hidden_message, student_line
from grader.engine.notebook import load_submission
from grader.engine.proxy import StudentCodeRaised
from grader.engine.static_imports import HELPER_PREFIX, PREFIX, cell_imports, environment_problems
from grader.errors import StaffError
from grader.outputs.manual_answers import free_text_answers

ROOT = Path(__file__).resolve().parent.parent
ENVDET = ROOT / "tests" / "fixtures" / "envdet"
CONV = ROOT / "assignments" / "convolutions"


def test_fixtures_are_built_by_their_script(tmp_path):
    """The committed notebooks are what the script makes now (from full_marks.ipynb)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make", ENVDET / "make_envdet_fixtures.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.main(tmp_path)
    made = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert made == sorted(p.name for p in ENVDET.glob("*.ipynb"))
    for name in made:
        assert (tmp_path / name).read_text() == (ENVDET / name).read_text(), name


# -- seeds -------------------------------------------------------------------------------


def test_seeds_follow_the_content_and_the_check():
    a = seeding.content_key(["import numpy as np", "x = 1"])
    same = seeding.content_key(["import numpy as np", "x = 1"])
    other = seeding.content_key(["import numpy as np", "x = 2"])
    # Cell boundaries count: the same text split differently is other content.
    split = seeding.content_key(["import numpy as np\nx = 1"])
    assert a == same and len({a, other, split}) == 3
    assert seeding.check_seed(a, "t::x") == seeding.check_seed(same, "t::x")
    assert seeding.check_seed(a, "t::x") != seeding.check_seed(other, "t::x")
    assert seeding.check_seed(a, "t::x") != seeding.check_seed(a, "t::y")
    assert seeding.notebook_seed(a) != seeding.notebook_seed(other)


def test_hidden_seeds_need_the_secret():
    key = seeding.content_key(["def corr2d(X, K): ..."])
    one, two = b"1" * 64, b"2" * 64
    assert seeding.check_seed(key, "h::t", one) == seeding.check_seed(key, "h::t", one)
    assert seeding.check_seed(key, "h::t", one) != seeding.check_seed(key, "h::t", two)
    assert seeding.check_seed(key, "h::t", one) != seeding.check_seed(key, "h::t")
    seed = seeding.check_seed(key, "h::t", one)
    assert seeding.worker_seed(seed) not in (seed, seed % 2**31, seed % 2**32)
    assert 0 <= seeding.worker_seed(seed) < 2**31


def test_the_secret_is_made_once_private_and_reused(tmp_path):
    secret = seeding.assignment_secret(tmp_path)
    path = tmp_path / "secret"
    assert path.is_file() and len(secret) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert seeding.assignment_secret(tmp_path) == secret
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


def test_a_short_secret_is_refused(tmp_path):
    (tmp_path / "secret").write_text("abc\n")
    with pytest.raises(StaffError, match=r"secret of 3 characters; use at least 32"):
        seeding.assignment_secret(tmp_path)


def test_a_read_only_assignment_keeps_its_secret_in_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "asg"
    folder.mkdir()
    folder.chmod(0o555)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: make the file path unusable
            (folder / "secret").mkdir()
        secret = seeding.assignment_secret(folder)
    finally:
        folder.chmod(0o755)
    kept = list((tmp_path / "config" / "convgrade" / "secrets").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("asg-")
    assert kept[0].read_text().strip().encode() == secret


def test_the_release_never_holds_the_secret(tmp_path):
    asg_dir = tmp_path / "convolutions"
    shutil.copytree(CONV, asg_dir, ignore=shutil.ignore_patterns("secret", "examples"))
    asg = assignment_mod.load(asg_dir)
    secret = seeding.assignment_secret(asg.root).decode()
    members = release_members(asg, student_notebook(asg))
    assert not any(name.endswith("/secret") for name in members)
    assert not any(secret in data.decode(errors="replace") for data in members.values())
    members["convolutions/notes.txt"] = f"key: {secret}".encode()
    assert any("the assignment's secret" in problem for problem in leaks(asg, members))


def test_the_worker_seeds_every_generator_the_same_way():
    keras = pytest.importorskip("keras")
    import random

    import tensorflow as tf

    from grader.worker import seeding as worker_seeding

    def draw():
        init = keras.initializers.GlorotUniform()  # no seed: drawn from `random`
        return (
            random.random(),
            float(np.random.rand()),
            float(tf.random.normal(())),
            float(tf.random.get_global_generator().normal(())),
            np.asarray(init((2, 2))).tolist(),
            np.asarray(keras.random.normal((2,))).tolist(),
        )

    worker_seeding.seed_everything(1234)
    first = draw()
    worker_seeding.seed_everything(1234)
    assert draw() == first
    worker_seeding.seed_everything(4321)
    assert all(a != b for a, b in zip(draw(), first, strict=True))
    # Before each check: everything but TensorFlow's own op seeds (see seed_for_check).
    worker_seeding.seed_for_check(77)
    again = draw()
    worker_seeding.seed_for_check(77)
    after = draw()
    for i in (0, 1, 4, 5):  # random, NumPy, a Keras initialiser, keras.random
        assert after[i] == again[i]


# -- what hidden checks may quote ---------------------------------------------------------

PAYLOAD = "LEAK:" + "c$|xlj*d3aGtf~m1QAAh2C+H{(Z(RQ35YO-2$+G`<{-iXC;$?HYXWhMKx|`>Ol&" * 20


class _Info:
    def __init__(self, value):
        self.value = value


def _raised(evalue: str, ename: str = "ValueError") -> StudentCodeRaised:
    return StudentCodeRaised(f"`corr2d(...)` raised {ename}: {evalue}", ename, evalue)


def test_a_hidden_check_quotes_one_short_sanitised_line_of_student_text():
    exc = _raised(PAYLOAD + "\nsecond line")
    message = check_message(_Info(exc), "hidden")
    assert message.startswith("`corr2d(...)` raised ValueError: LEAK:c")
    assert len(message) < 130 and "second line" not in message
    assert "`" not in message[len("`corr2d(...)`") :]  # backticks and markup are replaced
    # A public check (whose inputs the student has anyway) shows the message in full.
    assert PAYLOAD in check_message(_Info(exc), "visible")


def test_student_text_quoted_inside_a_checks_own_message_is_cut_too():
    try:
        try:
            raise _raised(PAYLOAD)
        except StudentCodeRaised as inner:
            raise AssertionError(
                f"corr2d works on floats but raised {inner.ename} on integers "
                f"({inner.evalue[:300]}): convert X and K to floating point first."
            ) from None
    except AssertionError as exc:
        message = hidden_message(exc)
    assert "corr2d works on floats but raised ValueError on integers" in message
    assert message.endswith("convert X and K to floating point first.")
    assert PAYLOAD[:120] not in message and len(message) < 250


def test_a_long_class_name_reported_by_the_worker_is_cut():
    from grader.engine.proxy import NotPlainData

    exc = NotPlainData(f"`corr2d(...)` is not an array or number (it is {PAYLOAD[:300]})")
    message = check_message(_Info(exc), "hidden")
    assert message.startswith("`corr2d(...)` is not an array or number (it is LEAK:")
    assert len(message) < 120


def test_a_forged_exception_type_name_cannot_break_lines():
    message = check_message(_Info(_raised("boom", ename="X\n## Checks\n**Score")), "hidden")
    assert "\n" not in message and "**" not in message


def test_student_line_is_short_and_plain():
    assert student_line("plain text") == "plain text"
    assert student_line("a <b> `c`\nmore") == "a ?b? ?c? [...]"
    assert len(student_line("x" * 500)) == 80 + len(" [...]")


# -- the grading environment ----------------------------------------------------------------


def _roots(source: str) -> list[tuple[str, str]]:
    return [(u.root, u.where) for u in cell_imports(source, 1)]


def test_imports_are_found_wherever_they_are():
    source = (
        "%matplotlib inline\n"
        "!pip install scipy\n"
        "import numpy as np, os.path\n"
        "from scipy import signal\n"
        "from . import sibling\n"
        "try:\n"
        "    import cv2\n"
        "except ImportError:\n"
        "    cv2 = None\n"
        "def corr2d(X, K):\n"
        "    import torch.nn.functional as F\n"
        "    return F\n"
    )
    assert _roots(source) == [
        ("numpy", "top level"),
        ("os", "top level"),
        ("scipy", "top level"),
        ("cv2", "top level"),
        ("torch", "in corr2d"),
    ]
    assert _roots("%%bash\nimport scipy\n") == []  # a shell cell is not Python
    assert _roots("def broken(:\n    import scipy") == []  # its run reports the syntax error


def test_environment_problems_name_package_and_place():
    cells = [(0, "import numpy as np\nimport scipy.signal"), (3, "import json\nimport pandas")]
    [line] = environment_problems(cells, ("numpy", "tensorflow"))
    assert line.startswith(PREFIX)
    assert "pandas (cell 4, line 2)" in line and "scipy (cell 1, line 2)" in line
    assert "numpy" in line.split("Grading provides")[1] and "json" not in line.split(".")[0]
    assert environment_problems(cells, ("numpy", "scipy", "pandas")) == []


def test_the_book_helper_import_is_harmless_but_its_helpers_are_named():
    cells = [
        (0, "from d2l import tensorflow as d2l\nimport numpy as np"),
        (1, "from dl import tensorflow as dl\ny = dl.corr2d(X, K) + d2l.try_gpu()"),
    ]
    [line] = environment_problems(cells, ("numpy",))
    assert line.startswith(HELPER_PREFIX)
    assert "d2l.try_gpu (cell 2)" in line and "dl.corr2d (cell 2)" in line
    assert environment_problems(cells[:1], ("numpy",)) == []


def test_environment_table_is_read_and_checked(tmp_path):
    shutil.copytree(ROOT / "tests" / "fixtures" / "mini", tmp_path / "mini")
    toml = tmp_path / "mini" / "assignment.toml"
    assert assignment_mod.load(tmp_path / "mini").packages is None
    toml.write_text(toml.read_text() + '\n[environment]\npackages = ["numpy", "IPython"]\n')
    assert assignment_mod.load(tmp_path / "mini").packages == ("numpy", "IPython")
    toml.write_text(toml.read_text().replace('"IPython"', '"scikit-learn"'))
    with pytest.raises(StaffError, match=r"top-level import names.*'scikit-learn'"):
        assignment_mod.load(tmp_path / "mini")
    assert "keras" in assignment_mod.load(CONV).packages


@pytest.fixture
def runner():
    from grader.worker import imports
    from grader.worker.executor import CellRunner

    imports.configure(["numpy"])
    try:
        yield CellRunner()
    finally:
        imports.configure(None)


def test_a_failed_top_level_import_does_not_stop_the_cell(runner):
    out = runner.run(
        "import numpy as np\nimport scipy.signal\nfrom scipy.ndimage import convolve\n"
        "def double(x):\n    return 2 * x\n"
        "def uses_scipy(x):\n    return scipy.signal.correlate2d(x, x)\n"
    )
    assert out["error"] is None
    assert "`import scipy.signal` failed" in out["outputs"][0]["text"]
    ns = runner.namespace
    assert ns["double"](2) == 4
    with pytest.raises(ModuleNotFoundError, match=r"^scipy is not available in the grading"):
        ns["uses_scipy"](np.ones((2, 2)))
    with pytest.raises(ModuleNotFoundError, match=r"^scipy is not available"):
        ns["convolve"](1)


def test_a_future_import_stays_first_in_its_cell(runner):
    out = runner.run("from __future__ import annotations\nimport numpy as np\ndef f(x: Foo): ...")
    assert out["error"] is None and "f" in runner.namespace


def test_an_undeclared_import_inside_a_function_fails_when_called(runner):
    runner.run("def f():\n    import scipy\n    return 1\n")
    with pytest.raises(ModuleNotFoundError, match=r"^scipy is not available in the grading"):
        runner.namespace["f"]()


def test_a_students_own_fallback_for_a_failed_import_still_runs(runner):
    out = runner.run(
        "try:\n    import scipy\n    ok = 'scipy'\nexcept ImportError:\n    ok = 'no'\n"
    )
    assert out["error"] is None and runner.namespace["ok"] == "no"


def test_the_book_helpers_import_in_both_spellings_and_fail_by_name_when_used(runner):
    out = runner.run("from d2l import tensorflow as d2l\nfrom dl import tensorflow as dl\nx = 1")
    assert out["error"] is None and runner.namespace["x"] == 1
    out = runner.run("d2l.corr2d([[1]], [[1]])")
    assert out["error"]["ename"] == "BookHelperUnavailable"
    assert out["error"]["evalue"].startswith("d2l.corr2d: a book helper grading does not provide")


# -- free-text answers ------------------------------------------------------------------------


def _answers(path: Path) -> dict[str, str]:
    return dict(free_text_answers(load_submission(path).nb, CONV / "student.ipynb"))


def test_answers_typed_outside_the_tagged_cell_are_found_or_marked_missing():
    found = _answers(ENVDET / "conv_answers_elsewhere.ipynb")
    assert list(found) == ["diagonal", "gradient", "matmul", "kernels"]
    assert "DIAGONAL-ANSWER" in found["diagonal"] and "a markdown cell" in found["diagonal"]
    assert "GRADIENT-ANSWER" in found["gradient"] and "typed into the prompt" in found["gradient"]
    assert "Explain" not in found["gradient"]  # the prompt itself is not the answer
    assert "MATMUL-ANSWER" in found["matmul"]
    assert found["kernels"].startswith("[MISSING]")


def test_answers_in_a_raw_cell_or_code_comments_are_found():
    found = _answers(ENVDET / "conv_answer_in_code.ipynb")
    assert "RAW-DIAGONAL-ANSWER" in found["diagonal"]
    assert "CODE-GRADIENT-ANSWER" in found["gradient"]
    full = _answers(CONV / "examples" / "full_marks.ipynb")
    assert found["matmul"] == full["matmul"]  # answers in their tagged cells stay as they are
    assert not any(text.startswith("[") for text in full.values())


def test_the_untouched_template_has_every_answer_missing():
    found = _answers(CONV / "student.ipynb")
    assert len(found) == 4 and all(t.startswith("[MISSING]") for t in found.values())


def test_a_missing_answer_points_to_text_the_student_added_elsewhere():
    nb = load_submission(ENVDET / "conv_answers_elsewhere.ipynb").nb
    nb.cells.append(new_markdown_cell("KERNELS-ANSWER, typed at the very end: d + 1 taps."))
    found = dict(free_text_answers(nb, CONV / "student.ipynb"))
    assert found["kernels"].startswith("[MISSING]")
    assert f"cell {len(nb.cells)}: 'KERNELS-ANSWER, typed at the very end" in found["kernels"]
    assert "DIAGONAL-ANSWER" not in found["kernels"]  # claimed by its own question


def test_without_a_template_the_tagged_cells_still_name_the_questions():
    nb = new_notebook(
        cells=[
            new_markdown_cell("Why?"),
            new_markdown_cell("", metadata={"tags": ["answer:why"]}),
            new_markdown_cell("Because it slides."),
            new_code_cell("x = 1"),
        ]
    )
    [(question, text)] = free_text_answers(nbformat.from_dict(nb))
    assert question == "why" and text.endswith("Because it slides.")


def test_the_gradescope_autograder_carries_the_secret(tmp_path):
    """Each Gradescope run starts from the zip: without the secret in it, every re-run
    would make a new one and draw other hidden inputs."""
    import zipfile

    from grader.commands.gradescope import build_autograder

    asg = tmp_path / "mini"
    shutil.copytree(
        ROOT / "tests" / "fixtures" / "mini", asg, ignore=shutil.ignore_patterns("secret")
    )
    with zipfile.ZipFile(build_autograder(asg, tmp_path / "ag.zip")) as zf:
        carried = zf.read("assignment/secret").strip()
    assert carried == seeding.assignment_secret(asg)
