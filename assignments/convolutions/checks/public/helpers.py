"""What the public and hidden checks of this assignment share (docs/grading-policy.md).

Not a check file: pytest collects only ``test_*.py``. Checks load it with :func:`load`
(the hidden ones from ``../public``), since check modules are imported by path. It imports
NumPy only, and nothing of the answer key: students get this file with the public checks.
"""

from __future__ import annotations

import ast
import re

import numpy as np

from grader.checks import CheckFailure, StudentCodeRaised

LETTERS = "ABCD"
_WRAPPED = re.compile(r"^(?:(?:option|answer|choice)\s*)?\(?\s*([a-d])\s*[).:]?\s*\.?$", re.I)

# What the chapter's own code raises when it is pasted as is.
CHAPTER_CONV2D_INIT = "takes 1 positional argument but 2 were given"
KERAS3_WATCH = "not tf.Tensor or tf.Variable"
CHAPTER_CONV2D_SENTENCE = (
    "your Conv2D takes no kernel size, like the chapter's layer, which receives its kernel "
    "shape in build(); the assignment asks for Conv2D(kernel_size), which stores the shape in "
    "__init__ and creates weights of that shape in build(input_shape)."
)
KERAS3_WATCH_SENTENCE = (
    "tape.watch(...) on a Keras 3 weight raises, as in the chapter's training loop; the "
    "assignment asks for no watch call (the tape already watches trainable weights) and "
    "for updates with kernel.assign_sub(lr * gradient)."
)


def letter(value) -> str | None:
    """The one option letter an answer names, or None when it names none or several.

    Accepts "B", "b", " B. ", "(B)", "B)", "Option B", and one-element lists or tuples of
    those (docs/grading-policy.md, section 2).
    """
    if isinstance(value, (list, tuple)):
        return letter(value[0]) if len(value) == 1 else None
    if not isinstance(value, str):
        return None
    match = _WRAPPED.match(value.strip())
    return match.group(1).upper() if match else None


def answer_format_problem(name: str, value) -> str | None:
    """None when ``value`` is a readable letter answer, else what is wrong with it."""
    if value is None:
        return f"{name} is still None: set it to one letter, A to D."
    if letter(value) is None:
        return (
            f"{name} is {value!r}, which is not one of the letters A to D: write one "
            'letter, e.g. "C".'
        )
    return None


def diagonal_answers(value) -> dict[str, str | None]:
    """DIAGONAL_ANSWERS as {"a": letter or None, ...}, or a failure saying what is wrong."""
    if value is None:
        raise CheckFailure(
            'DIAGONAL_ANSWERS is still None: set it to a dict like {"a": "A", "b": "B", "c": "C"}.'
        )
    if isinstance(value, (list, tuple)) and len(value) == 3:
        value = dict(zip("abc", value, strict=True))  # in the order the questions come
    if not isinstance(value, dict):
        raise CheckFailure(
            f"DIAGONAL_ANSWERS is a {type(value).__name__}; it must be a dict like "
            '{"a": "A", "b": "B", "c": "C"}.'
        )
    keys = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in value.items()}
    for part in "abc":
        if part not in keys:
            raise CheckFailure(f'DIAGONAL_ANSWERS has no answer for "{part}".')
        problem = answer_format_problem(f'DIAGONAL_ANSWERS["{part}"]', keys[part])
        if problem:
            raise CheckFailure(problem)
    return {part: letter(keys[part]) for part in "abc"}


def number(value, what: str) -> float:
    """A number given as int, float, NumPy scalar or 0-d array/tensor; bools are refused."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        raise CheckFailure(f"{what} is {value!r}, a bool; it must be a number.")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
        return float(value)
    raise CheckFailure(f"{what} returned {_describe(value)}; it must be a single number (an int).")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return f"a {type(value).__name__}"


def first_line(text: str, limit: int = 160) -> str:
    """The first informative line of an error message (Keras' wrapper line skipped)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        lines = lines[1:]
    # TensorFlow prefixes op errors with the op's internal name: not for students.
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0]) if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def make_layer(student, kernel_size):
    """student.Conv2D(kernel_size), recognising the chapter's Conv2D() pasted as is."""
    try:
        return student.Conv2D(kernel_size)
    except StudentCodeRaised as exc:
        if exc.ename == "TypeError" and CHAPTER_CONV2D_INIT in exc.evalue:
            raise CheckFailure(
                f"Conv2D({kernel_size}) could not be created: {CHAPTER_CONV2D_SENTENCE} "
                f"(Python said: TypeError: {first_line(exc.evalue)})"
            ) from None
        raise CheckFailure(
            f"Conv2D({kernel_size}) could not be created: your __init__ raised an error "
            f"({exc.ename}: {first_line(exc.evalue)})."
        ) from None


def call_learn_kernel(student, *args, **kwargs):
    """student.learn_kernel(...), explaining the chapter's Keras 3 `tape.watch` pitfall."""
    try:
        return student.learn_kernel(*args, **kwargs)
    except StudentCodeRaised as exc:
        if KERAS3_WATCH in exc.evalue:
            raise CheckFailure(
                f"learn_kernel could not train: {KERAS3_WATCH_SENTENCE} (TensorFlow said: "
                f"{exc.ename}: {first_line(exc.evalue)})"
            ) from None
        if exc.ename == "TypeError" and "unexpected keyword argument" in exc.evalue:
            raise CheckFailure(
                "learn_kernel does not take the arguments the checks pass: its signature must "
                "be learn_kernel(X, Y, kernel_size=(1, 2), lr=3e-2, num_epochs=10) "
                f"(Python said: TypeError: {first_line(exc.evalue)})."
            ) from None
        raise CheckFailure(
            f"learn_kernel raised an error while training ({exc.ename}: {first_line(exc.evalue)})."
        ) from None


def chapter_training_loop(student) -> bool:
    """True when the notebook has the chapter's top-level training loop (tape.watch on a weight)."""
    return any(
        re.search(r"\.watch\(\s*\w+\.weights\[0\]\s*\)", src) for src in student.code_cells()
    )


def missing_learn_kernel(student) -> str:
    """Why learn_kernel is missing, in one sentence when the chapter's loop is there instead."""
    if chapter_training_loop(student):
        return (
            "your notebook does not define `learn_kernel`: it has the chapter's training loop "
            "as top-level code, which raises on Keras 3 at tape.watch(...), while the "
            "assignment asks for a function learn_kernel(X, Y, kernel_size, lr, num_epochs) "
            "that returns (kernel, losses) and uses no tape.watch."
        )
    return "your notebook does not define `learn_kernel`"


# --- learn_kernel: how a training run's numbers came about ----------------------------------


def windows(X: np.ndarray, kernel_size) -> np.ndarray:
    """One flattened window of X per output pixel (row-major): corr2d(X, K) = windows @ K."""
    kh, kw = kernel_size
    oh, ow = X.shape[0] - kh + 1, X.shape[1] - kw + 1
    return np.array(
        [X[i : i + kh, j : j + kw].reshape(-1) for i in range(oh) for j in range(ow)],
        dtype=np.float64,
    )


def replay(X, Y, kernel, losses, lr: float) -> str | None:
    """Name how a run of plain gradient descent kept its books, from its last kernel.

    The summed squared error is quadratic in the kernel, so one step with learning rate
    ``lr`` is an affine map that can be undone: from the returned kernel the earlier kernels,
    and with them the losses a correct run records, follow exactly. Returns ``"ok"`` (sum,
    recorded before each update), ``"after"`` (recorded after the update), ``"mean"`` (mean
    instead of sum), ``"mean-after"``, ``"ascent"`` (a step up the gradient), or None when
    no such story fits (wrong lr, other loss, other update).
    """
    P = windows(np.asarray(X, np.float64), np.shape(kernel))
    y = np.asarray(Y, np.float64).reshape(-1)
    k_last = np.asarray(kernel, np.float64).reshape(-1)
    losses = np.asarray(losses, np.float64).reshape(-1)
    n = len(y)
    H, g0 = 2 * P.T @ P, 2 * P.T @ y
    stories = {
        "ok": (lr, 1.0, False),
        "after": (lr, 1.0, True),
        "mean": (lr / n, 1.0 / n, False),
        "mean-after": (lr / n, 1.0 / n, True),
        "ascent": (-lr, 1.0, False),
    }
    for name, (step, scale, after) in stories.items():
        # k_next = k - step * (H k - g0)  =>  k = (I - step H)^-1 (k_next - step g0)
        A = np.eye(len(k_last)) - step * H
        if np.linalg.cond(A) > 1e6:
            continue
        kernels = [k_last]
        for _ in range(losses.size):
            kernels.append(np.linalg.solve(A, kernels[-1] - step * g0))
        kernels.reverse()  # k_0 ... k_N
        recorded = kernels[1:] if after else kernels[:-1]
        want = np.array([scale * np.sum((P @ k - y) ** 2) for k in recorded])
        if np.allclose(losses, want, rtol=2e-3, atol=1e-4 * max(1.0, want.max())):
            return name
    return None


# Mistakes in the training itself: the run is not the gradient descent the notebook asks for,
# so whether its kernel happens to land near the target depends only on the random start.
# The checks of the learned kernel fail on them whatever the start (docs/grading-policy.md).
WRONG_TRAINING = ("mean", "mean-after", "ascent")

BOOKKEEPING = {
    "after": (
        "each loss is recorded after its update, with the new kernel: record the loss "
        "computed before the update"
    ),
    "mean": (
        "the loss is the mean of the squared differences, not their sum: with the mean each "
        "step is as many times smaller as there are output pixels"
    ),
    "mean-after": (
        "the loss is the mean of the squared differences, not their sum, and each loss is "
        "recorded after its update"
    ),
    "ascent": "the update goes uphill: the kernel must move against the gradient",
}


# --- edges: detect_edges judged with the student's own corr2d carried forward --------------

EDGE_KERNEL = np.array([[1.0, -1.0]], dtype=np.float32)


def true_edges(X) -> np.ndarray:
    """corr2d(X, [[1, -1]]): each pixel minus its right-hand neighbour (the notebook's rule)."""
    X = np.asarray(X, dtype=np.float64)
    return X[:, :-1] - X[:, 1:]


def _close(a, b) -> bool:
    return a is not None and np.shape(a) == np.shape(b) and np.allclose(a, b, atol=1e-4)


def _try(call):
    try:
        return np.asarray(call(), dtype=np.float64), None
    except (StudentCodeRaised, TypeError, ValueError) as exc:
        return None, exc


def edges_problem(student, X, name: str, square) -> str | None:
    """None when detect_edges(X) is right, by the reference or by the student's own corr2d.

    ``square`` is an image of the same kind with equal sides: when both detect_edges and the
    student's corr2d fail on the rectangular ``X`` (height and width mixed up in corr2d,
    charged in corr2d), detect_edges is judged on it instead (docs/grading-policy.md).
    """
    got, error = _try(lambda: student.detect_edges(X))
    if error is None and _close(got, true_edges(X)):
        return None  # right by the notebook's rule: the student's corr2d is not needed
    own, own_error = _try(lambda: student.corr2d(X, EDGE_KERNEL))
    if error is not None and own_error is not None and square is not None:
        got_sq, error_sq = _try(lambda: student.detect_edges(square))
        own_sq, _ = _try(lambda: student.corr2d(square, EDGE_KERNEL))
        if error_sq is None and (_close(got_sq, true_edges(square)) or _close(got_sq, own_sq)):
            return None  # right given its own corr2d, which fails on rectangular images
        return (
            edges_problem(
                student, square, f"a square {square.shape[0]}x{square.shape[1]} image", None
            )
            or "detect_edges is wrong."
        )
    if error is not None:
        text = error.ename + ": " + first_line(error.evalue) if hasattr(error, "ename") else error
        return f"detect_edges raised an error on {name} ({text})."
    want = true_edges(X)
    if _close(got, want) or _close(got, own):
        return None
    if got.shape != want.shape:
        if got.shape == want.shape[::-1]:
            return (
                f"detect_edges on {name} has shape {got.shape}, expected {want.shape}: height "
                "and width are mixed up (rows come first: h - kh + 1 rows, w - kw + 1 columns)."
            )
        return (
            f"detect_edges on {name} of shape {X.shape} has shape {got.shape}, expected "
            f"{want.shape}."
        )
    if _close(got, -want) or (own is not None and _close(got, -own)):
        return (
            f"detect_edges on {name} has the signs reversed: a step from 1 down to 0 must give "
            "+1. Use the kernel [[1, -1]] as it is."
        )
    return f"detect_edges on {name} is not corr2d(X, [[1, -1]])."


# --- matmul: is corr2d_matmul a matrix product? (read from the notebook's source) ---------

MATRIX_PRODUCTS = {"matmul", "dot", "tensordot", "einsum", "matvec", "inner", "vdot", "mm"}
CORRELATIONS = {
    "corr2d",
    "corr2d_loop",
    "conv2d",
    "Conv2D",
    "correlate",
    "correlate2d",
    "convolve",
    "convolve2d",
    "convolution",
}


def _definitions(cells) -> dict:
    """Top-level functions of the notebook's code cells, by name (the last one wins)."""
    found = {}
    for source in cells:
        # Magics and shell lines are not Python; blank them so the rest still parses.
        lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.split("\n")]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.value
    return found


def _reachable(name: str, definitions: dict) -> list:
    """The definition of ``name`` and of every notebook function it names, transitively."""
    seen, todo, nodes = set(), [name], []
    while todo:
        current = todo.pop()
        if current in seen or current not in definitions:
            continue
        seen.add(current)
        nodes.append(definitions[current])
        for node in ast.walk(definitions[current]):
            if isinstance(node, ast.Name) and node.id in definitions:
                todo.append(node.id)
    return nodes


def matrix_product_problem(student) -> str | None:
    """None unless the source shows that corr2d_matmul computes no matrix product.

    A matrix product is ``@`` or a call of matmul, dot, tensordot, einsum, matvec, inner or
    vdot, in corr2d_matmul or in a notebook function it uses (kernel_matrix, a helper).
    Where the source cannot tell (no top-level definition), nothing is concluded.
    """
    definitions = _definitions(student.code_cells())
    if "corr2d_matmul" not in definitions:
        return None
    nodes = _reachable("corr2d_matmul", definitions)
    names, products = set(), False
    for node in (n for root in nodes for n in ast.walk(root)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            products = True
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    products = products or bool(names & MATRIX_PRODUCTS)
    if products:
        return None
    used = sorted(names & CORRELATIONS)
    if used:
        return (
            f"corr2d_matmul computes no matrix product: it uses {used[0]}, so it is "
            "cross-correlation computed again, not as a matrix times a vector. Multiply a matrix "
            "built from K (or from the windows of X) with a vector, using @ or matmul."
        )
    return (
        "corr2d_matmul computes no matrix product (no @, matmul, dot, tensordot or einsum in it "
        "or in the functions it calls): the exercise asks for one matrix multiplication."
    )


def fit_result(result, kernel_size) -> tuple[np.ndarray, np.ndarray]:
    """learn_kernel's (kernel, losses) as arrays, or a failure naming what came back."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise CheckFailure(
            f"learn_kernel returned {_describe(result)}; it must return a pair (kernel, losses)."
        )
    try:
        kernel = np.asarray(result[0], dtype=np.float64)
        losses = np.asarray(result[1], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CheckFailure(
            "learn_kernel must return an array kernel and a list of float losses."
        ) from None
    return kernel, losses


def story(X, Y, kernel, losses, lr: float, kernel_size) -> str | None:
    """:func:`replay` on a run's results, or None when they cannot be replayed."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.size != int(np.prod(kernel_size)) or losses.size == 0:
        return None
    if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(losses))):
        return None
    return replay(X, Y, kernel.reshape(kernel_size), losses, lr)


def growth_problem(student, X, Y, lr: float, losses: np.ndarray, kernel_size) -> str:
    """Why the losses grow: a wrong direction, an overshooting step, or an ignored lr.

    Runs learn_kernel once more, 3 epochs at lr / 100 (cheap, and only after a failure).
    """
    start = f"the losses increase (from {losses[0]:.4g} to {losses[-1]:.4g}) at lr={lr:g}"
    small = lr / 100
    try:
        _, slow = fit_result(
            call_learn_kernel(student, X, Y, kernel_size=kernel_size, lr=small, num_epochs=3),
            kernel_size,
        )
    except CheckFailure:
        slow = np.array([])
    if slow.size < 2 or not np.all(np.isfinite(slow)) or not np.all(np.isfinite(losses[:2])):
        return f"{start}: the update goes uphill or overshoots; move against the gradient."
    if slow[-1] < slow[0]:
        return (
            f"{start}, but fall at lr={small:g}: each step overshoots the minimum and the loss "
            "diverges. The direction is right; the step is larger than lr * gradient (is the "
            "gradient scaled up, or a learning rate of your own used?)."
        )
    # Going uphill at lr / 100, each step multiplies the loss by at most (1 + small * c) ** 2
    # (c: the largest curvature); growing faster than that, the run did not use lr / 100.
    curvature = np.linalg.eigvalsh(
        2
        * windows(np.asarray(X, np.float64), kernel_size).T
        @ windows(np.asarray(X, np.float64), kernel_size)
    ).max()
    bound = (1 + small * curvature) ** (2 * (slow.size - 1)) * 1.01
    if slow[-1] > bound * slow[0]:
        return (
            f"{start}, and about as fast at lr={small:g}: learn_kernel does not use its lr "
            "argument. Take each step with the lr passed in."
        )
    return (
        f"{start}, and still at lr={small:g}: the update goes uphill. The kernel must move "
        "against the gradient (kernel - lr * gradient)."
    )
