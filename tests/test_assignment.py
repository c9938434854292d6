"""The convolutions assignment: its files agree with each other, and its checks tell right from
wrong.

Fast tests read files only. The slow ones grade every example submission once (the mistake
fixtures among them), in real workers, and check each against ``examples/expected.toml``: a
notebook with one typical mistake loses exactly the points written there (and nothing else),
and the feedback names the mistake.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader.authoring import expected
from grader.authoring.stubs import make_student_notebook

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = ROOT / "assignments" / "convolutions"
EXAMPLES = ASSIGNMENT / "examples"
QUESTIONS = {
    "corr2d": 6,
    "conv2d": 5,
    "edges": 4,
    "learn_kernel": 5,
    "diagonal": 5,
    "gradient": 4,
    "matmul": 5,
    "kernels": 6,
}
MAX_SCORE = sum(QUESTIONS.values())

# What each example and mistake fixture must lose and say is in examples/expected.toml
# (grader/authoring/expected.py reads it, as `convgrade validate` does).
EXPECTED = expected.load(EXAMPLES)
PYTEST_STARTUP = 1.5  # seconds of checks_duration spent before the first check runs
CORRECT_CORR2D = ["correct_corr2d_numpy", "correct_corr2d_tf_nn", "correct_corr2d_loops"]


def load_source() -> nbformat.NotebookNode:
    return nbformat.read(str(ASSIGNMENT / "source.ipynb"), as_version=4)


# --- fast: the files agree ---------------------------------------------------------------


def test_student_notebook_is_generated_from_source():
    committed = (ASSIGNMENT / "student.ipynb").read_text()
    generated = nbformat.writes(make_student_notebook(load_source()))
    assert committed.strip() == generated.strip(), (
        "assignments/convolutions/student.ipynb is stale: run "
        "python -m grader.authoring.stubs assignments/convolutions/source.ipynb "
        "assignments/convolutions/student.ipynb"
    )


def test_fixtures_are_built_from_source(tmp_path):
    """make_mistakes.py run now gives the committed fixture and example notebooks."""
    maker = ROOT / "tests" / "fixtures" / "make_mistakes.py"
    spec = importlib.util.spec_from_file_location("make_mistakes", maker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "examples", tmp_path / "examples")
    pairs = [(p, EXAMPLES / p.name) for p in (tmp_path / "examples").glob("*.ipynb")]
    stale = [
        str(c.relative_to(ROOT))
        for p, c in pairs
        if not c.exists() or p.read_bytes() != c.read_bytes()
    ]
    assert not stale, f"run python tests/fixtures/make_mistakes.py and commit: {stale}"


def test_assignment_toml_lists_the_questions_and_points():
    config = tomllib.loads((ASSIGNMENT / "assignment.toml").read_text())
    points = {qid: q["points"] for qid, q in config["questions"].items()}
    assert points == QUESTIONS
    assert all(q.get("title") for q in config["questions"].values())


def test_student_notebook_states_the_total():
    text = "\n".join(c.source for c in load_source().cells if c.cell_type == "markdown")
    assert f"**Total: {MAX_SCORE} points.**" in text
    for qid, points in QUESTIONS.items():
        assert re.search(rf"\| `{qid}` \| {points} \|", text), qid


def test_answer_cells_are_tagged_for_the_exercises():
    tags = {
        t
        for c in nbformat.read(str(ASSIGNMENT / "student.ipynb"), as_version=4).cells
        for t in c.metadata.get("tags", [])
    }
    assert {"answer:diagonal", "answer:gradient", "answer:matmul", "answer:kernels"} <= tags
    assert "solution" not in tags


def test_check_points_add_up_to_assignment_toml():
    """Every check has points; per question they sum to assignment.toml (as the engine wants)."""
    totals: dict[str, int] = {}
    for path in sorted((ASSIGNMENT / "checks").glob("*/test_*.py")):
        question = max((q for q in QUESTIONS if path.stem.startswith(f"test_{q}")), key=len)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [
                    d
                    for d in node.decorator_list
                    if isinstance(d, ast.Call) and ast.unparse(d.func) == "pytest.mark.points"
                ]
                assert len(marks) == 1, f"{path.name}::{node.name} needs one points marker"
                totals[question] = totals.get(question, 0) + marks[0].args[0].value
    assert totals == QUESTIONS


def test_public_checks_do_not_use_reference():
    for path in (ASSIGNMENT / "checks" / "public").glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m and m.split(".")[0] == "reference" for m in modules), path.name


# Feedback must not state what a question asks the student to find (docs/grading-policy.md,
# section 4). Each pattern is a way a check's message once said, or could say, an answer.
LEAKS = {
    "the second-derivative kernel": r"1,\s*-2,\s*1|-\s*2\s*f\(x",
    "the answer of min_kernel_size": r"entries suffice|d \+ 1 (entries|taps) (are|is) enough",
    "the right option of (b)": r"swap sides",
    "the right option of (a)": r"crosses the edge once|steps from 0 up to 1",
    "a letter answer": r"answer is [A-D]\b|should be [A-D]\b",
}


def _message_strings(path: Path) -> list[str]:
    """Every string a check file can show: literals and the literal parts of f-strings."""
    tree = ast.parse(path.read_text())
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_feedback_states_no_answer(leak):
    pattern = re.compile(LEAKS[leak])
    for path in sorted((ASSIGNMENT / "checks").glob("*/*.py")):
        for text in _message_strings(path):
            assert not pattern.search(text), f"{path.name} states {leak}: {text!r}"


def test_expected_toml_names_every_example():
    expected = tomllib.loads((ASSIGNMENT / "examples" / "expected.toml").read_text())
    stems = {p.stem for p in (ASSIGNMENT / "examples").glob("*.ipynb")}
    assert set(expected) == stems


def test_fixture_table_covers_every_mistake_notebook():
    """Each mistake fixture has a table entry: exact points lost, and its feedback or none."""
    stems = {p.stem for p in EXAMPLES.glob("*.ipynb")}
    mistakes = {s for s in stems if s.startswith(("mistake_", "policy_", "hostile_"))}
    assert len(mistakes) == 31 and set(CORRECT_CORR2D) <= stems
    for stem in mistakes:
        entry = EXPECTED[stem]
        assert entry.lost is not None and entry.status == "graded", stem
        assert bool(entry.feedback) != entry.clean, stem


# --- the probes checks run inside the worker (called here in-process) -------------------


@pytest.fixture(scope="module")
def probes():
    """The assignment's probes file, loaded as the zygote loads it."""
    pytest.importorskip("tensorflow")
    from grader.authoring.assignment import load
    from grader.worker import probes

    return probes.load(str(load(ASSIGNMENT).probes))


def _layers():
    import reference

    good = reference.Conv2D((2, 3))
    loop = reference.Conv2D((2, 3), corr=reference.corr2d_loop)
    X = np.arange(20, dtype=np.float32).reshape(4, 5) / 10
    for layer in (good, loop):
        layer(X)
        layer.weight.assign(np.ones((2, 3), np.float32))
        layer.bias.assign(np.array([0.5], np.float32))
    return good, loop, X


def test_probe_layer_gradients(probes):
    import reference

    good, loop, X = _layers()
    U = np.linspace(-1, 1, 9, dtype=np.float32).reshape(3, 3)
    grads = probes.layer_gradients(good, X, U)
    np.testing.assert_allclose(grads["weight"], reference.corr2d(X, U), atol=1e-5)
    np.testing.assert_allclose(grads["bias"], [U.sum()], atol=1e-5)
    np.testing.assert_allclose(grads["output"], reference.corr2d(X, np.ones((2, 3))) + 0.5)
    grads = probes.layer_gradients(loop, X)
    assert grads["weight"] is None
    np.testing.assert_allclose(grads["bias"], [9.0])


def test_probe_layer_gradients_watches_a_non_trainable_bias(probes):
    """Whether the output depends on the bias is told apart from whether it is trainable."""
    import keras

    import reference

    class FrozenBias(keras.layers.Layer):
        def build(self, input_shape):
            self.weight = self.add_weight(shape=(1, 2), initializer="ones")
            self.bias = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, inputs):
            return reference.corr2d(inputs, self.weight) + self.bias

    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    layer = FrozenBias()
    layer(X)
    grads = probes.layer_gradients(layer, X)
    np.testing.assert_allclose(grads["bias"], 9.0)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(1, 2)]


def test_probe_layer_gradients_reports_what_raised(probes):
    class Broken:
        weight = bias = None

        def __call__(self, X):
            raise ValueError("no")

    grads = probes.layer_gradients(Broken(), np.ones((2, 2)))
    assert grads["weight"] is None and grads["error"] == "ValueError: no"
    assert set(probes.__all__) == {"corr_gradient", "layer_gradients"}


def test_worker_keeps_its_own_probe_references(probes):
    """Reassigning cgprobes.NAME from a notebook does not change what a check runs."""
    from grader.worker import serve

    original = probes.layer_gradients
    serve.install_probes(probes)
    try:
        probes.layer_gradients = lambda *a, **k: {"weight": "forged"}
        assert serve._PROBES["layer_gradients"] is original
    finally:
        probes.layer_gradients = original
        serve.install_probes(None)


def test_probe_corr_gradient(probes):
    import reference

    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    K = np.ones((2, 2), np.float32)
    np.testing.assert_allclose(
        probes.corr_gradient(reference.corr2d, X, K)["kernel"],
        reference.corr2d(X, np.ones((2, 3))),
    )
    assert probes.corr_gradient(reference.corr2d_loop, X, K) == {"kernel": None, "error": None}
    broken = probes.corr_gradient(lambda X, K: 1 / 0, X, K)
    assert broken["kernel"] is None and broken["error"].startswith("ZeroDivisionError")


# --- slow: grading in real workers --------------------------------------------------------


@pytest.fixture(scope="module")
def graded():
    """Grade every fixture, example and the source notebook once; stem -> SubmissionResult."""
    from grader.api import grade_notebook
    from grader.authoring.assignment import load
    from grader.sandbox.launcher import Launcher

    paths = [ASSIGNMENT / "source.ipynb", ASSIGNMENT / "student.ipynb"]
    paths += sorted(EXAMPLES.glob("*.ipynb"))
    asg = load(ASSIGNMENT)
    launcher = Launcher(hidden=(asg.root,), probes=asg.probes)
    try:
        return {p.stem: grade_notebook(p, ASSIGNMENT, launcher=launcher) for p in paths}
    finally:
        launcher.close()


def failure_messages(result) -> str:
    return "\n".join(t.message for t in result.tests if t.status == "failed")


@pytest.mark.slow
def test_solution_scores_the_maximum(graded):
    result = graded["source"]
    assert result.status == "graded"
    assert (result.score, result.max_score) == (MAX_SCORE, MAX_SCORE), failure_messages(result)


@pytest.mark.slow
def test_solution_is_fast(graded):
    """Student code (every cell but the imports) plus checks stay small once TF is loaded.

    The budget is 2 s for the notebook's cells and the checks' own work. The engine's
    ``checks_duration`` also holds pytest's start-up and collection (about 1.3 s here), so the
    bound below adds that allowance.
    """
    execution = graded["source"].execution
    cells = sum(c.duration for c in execution.cells[1:])
    assert cells < 1.0, cells
    assert cells + execution.checks_duration < 2.0 + PYTEST_STARTUP, (
        cells,
        execution.checks_duration,
    )


@pytest.mark.slow
def test_untouched_template_scores_zero_without_engine_error(graded):
    result = graded["student"]
    assert result.status == "graded"
    assert result.score == 0 and result.max_score == MAX_SCORE
    assert all(t.status == "failed" and t.message for t in result.tests)
    assert not any("autograder" in t.message.lower() for t in result.tests)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(s for s in EXPECTED if EXPECTED[s].lost is not None))
def test_mistake_loses_exactly_its_points_and_is_named(graded, stem):
    problems = EXPECTED[stem].problems(graded[stem])
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_forged_probes_earn_nothing(graded):
    """Issue 15: forging the probes does not change the score of a layer with no autodiff."""
    honest = graded["hostile_numpy_layer"].question_scores
    for stem in ("hostile_numpy_layer_forged_probes", "hostile_numpy_layer_forged_worker_table"):
        assert graded[stem].question_scores == honest, stem


@pytest.mark.slow
@pytest.mark.parametrize("stem", CORRECT_CORR2D)
def test_correct_corr2d_variants_earn_full_corr2d_points(graded, stem):
    score, maximum = graded[stem].question_scores["corr2d"]
    assert score == maximum, failure_messages(graded[stem])


@pytest.mark.slow
def test_examples_score_as_expected(graded):
    short = {stem: e.score for stem, e in EXPECTED.items() if e.lost is None}
    assert len(short) == 5
    got = {stem: graded[stem].score for stem in short}
    assert got == short


@pytest.mark.slow
def test_the_chapters_keras3_watch_error_gets_a_plain_sentence_first(graded):
    """Issue 16: the Keras 3 `tape.watch` failure in 'Problems' is explained, not bare."""
    errors = graded["mistake_11_chapter_code_pasted"].errors
    (line,) = [e for e in errors if "not tf.Tensor or tf.Variable" in e]
    assert re.match(r"cell \d+: On Keras 3, tape\.watch\(\) refuses a layer's weight", line)
    assert line.index("tape.watch()") < line.index("It raised ValueError")


def test_a_hint_needs_its_exception_name_and_pattern():
    from grader.authoring.assignment import Hint
    from grader.engine.grading import _cell_errors
    from grader.outputs.results import CellRecord

    class Session:
        records = [
            CellRecord(0, "error", 0.1, "ValueError", "object of type 'Variable', not tf.Tensor"),
            CellRecord(1, "error", 0.1, "TypeError", "object of type 'Variable', not tf.Tensor"),
        ]
        shell_commands: list = []
        output_note = ""

    hint = Hint(matches=r"type 'Variable'", says="Say this first.", error="ValueError")
    assert _cell_errors(Session(), (hint,)) == [
        "cell 1: Say this first. It raised ValueError: object of type 'Variable', not tf.Tensor",
        "cell 2 raised TypeError: object of type 'Variable', not tf.Tensor",
    ]


def test_a_malformed_hint_is_a_staff_error(tmp_path, mini_assignment):
    import shutil

    from grader.authoring.assignment import load
    from grader.errors import StaffError

    folder = tmp_path / "a"
    shutil.copytree(mini_assignment, folder)
    toml = folder / "assignment.toml"
    toml.write_text(toml.read_text() + '\n[[hints]]\nmatches = "(unclosed"\nsays = "x"\n')
    with pytest.raises(StaffError, match=r"hint 1 in .*: matches is not a regular expression"):
        load(folder)
