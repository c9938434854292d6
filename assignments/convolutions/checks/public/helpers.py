"""What the public and hidden checks of this assignment share (docs/grading-policy.md).

Not a check file: pytest collects only ``test_*.py``. Checks load it with :func:`load`
(the hidden ones from ``../public``), since check modules are imported by path. It imports
NumPy only, and nothing of the answer key: students get this file with the public checks.
"""

from __future__ import annotations

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
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
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
            "as top-level code instead, which raises on Keras 3. The assignment asks for a "
            "function learn_kernel(X, Y, kernel_size, lr, num_epochs) returning (kernel, "
            "losses); " + KERAS3_WATCH_SENTENCE
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
