"""Hidden checks of Part 1 (`corr2d`): inputs the student never sees."""

import numpy as np
import pytest

from grader.checks import StudentCodeRaised, load_helpers

answer_key = load_helpers(__file__, "answers")

WORKED_EXAMPLE = np.array([[19.0, 25.0], [37.0, 43.0]])


def ref(X, K):
    return np.asarray(answer_key.corr2d(X, K), dtype=np.float64)


def call(student, X, K):
    """student.corr2d(X, K) as a float array; on an error, say what the error suggests."""
    try:
        got = student.corr2d(X, K)
    except StudentCodeRaised as exc:
        square = np.ones((max(X.shape), max(X.shape)), dtype=np.float32)
        sq_kernel = np.ones((max(K.shape), max(K.shape)), dtype=np.float32)
        try:
            ok = np.allclose(np.asarray(student.corr2d(square, sq_kernel)), ref(square, sq_kernel))
        except StudentCodeRaised:
            ok = False
        if ok and X.shape[0] != X.shape[1]:
            raise AssertionError(
                f"corr2d works on square inputs but raised {exc.ename} on X of shape {X.shape} "
                f"with K of shape {K.shape}: height and width are mixed up somewhere (rows "
                "come first: X.shape[0] is the height, K.shape[0] the kernel's height)."
            ) from None
        raise
    try:
        return np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise AssertionError(
            f"corr2d returned {type(got).__name__}, expected an array of numbers"
        ) from None


def diagnose(got, X, K):
    """A sentence naming the mistake behind a wrong corr2d(X, K), or None if it is right."""
    want = ref(X, K)
    (h, w), (kh, kw) = X.shape, K.shape
    where = f"for X of shape {X.shape} and K of shape {K.shape}"
    if got.shape == WORKED_EXAMPLE.shape and np.allclose(got, WORKED_EXAMPLE):
        if not (want.shape == got.shape and np.allclose(want, got)):
            return (
                f"corr2d returned the worked example's output [[19, 25], [37, 43]] {where}: "
                "it looks hard-coded. Compute the output from X and K."
            )
    if got.shape != want.shape:
        if got.ndim == 2 and got.shape == want.shape[::-1]:
            return (
                f"corr2d has shape {got.shape} {where}, expected {want.shape}: height and "
                "width are mixed up (rows: h - kh + 1, columns: w - kw + 1)."
            )
        if got.ndim == 2 and got.shape == (h - kw + 1, w - kh + 1):
            return (
                f"corr2d has shape {got.shape} {where}, expected {want.shape}: the kernel's "
                "height and width are mixed up (kh = K.shape[0] goes with the rows)."
            )
        if got.ndim == 2 and all(
            abs(g - e) <= 1 for g, e in zip(got.shape, want.shape, strict=True)
        ):
            return (
                f"corr2d has shape {got.shape} {where}, expected {want.shape}: the output "
                "shape is off by one. The kernel fits in h - kh + 1 rows and w - kw + 1 columns."
            )
        return f"corr2d has shape {got.shape} {where}, expected {want.shape}."
    if not np.all(np.isfinite(got)):
        return f"corr2d contains NaN or infinite values {where}."
    if np.allclose(got, want, atol=1e-4, rtol=1e-4):
        return None
    if np.allclose(got, ref(X, K[::-1, ::-1]), atol=1e-4, rtol=1e-4):
        return (
            f"corr2d looks like true convolution {where}: the kernel is flipped. "
            "Cross-correlation uses K as it is, without rotating it."
        )
    if h == w and kh == kw and np.allclose(got, ref(X.T, K).T, atol=1e-4, rtol=1e-4):
        return f"corr2d transposes the kernel {where}: height and width are mixed up."
    bad = np.argwhere(~np.isclose(got, want, atol=1e-4, rtol=1e-4))
    idx = tuple(int(i) for i in bad[0])
    return (
        f"corr2d is wrong {where} at index {idx}: got {got[idx]:.5g}, expected "
        f"{want[idx]:.5g} ({len(bad)} of {want.size} entries differ)."
    )


def check_cases(student, cases):
    for X, K in cases:
        problem = diagnose(call(student, X, K), X, K)
        assert problem is None, problem


@pytest.mark.points(2)
def test_random_rectangular_inputs(student, rng):
    """corr2d on random rectangular inputs and kernels"""
    shapes = [((5, 7), (2, 3)), ((6, 4), (3, 2)), ((4, 9), (2, 2)), ((7, 5), (1, 3))]
    cases = [
        (rng.normal(size=xs).astype(np.float32), rng.normal(size=ks).astype(np.float32))
        for xs, ks in shapes
    ]
    check_cases(student, cases)


@pytest.mark.points(1)
def test_one_by_one_kernel(student, rng):
    """corr2d with a 1x1 kernel scales the input"""
    X = rng.normal(size=(4, 6)).astype(np.float32)
    check_cases(student, [(X, np.array([[2.5]], dtype=np.float32))])


@pytest.mark.points(1)
def test_kernel_as_large_as_input(student, rng):
    """corr2d with a kernel the size of the input gives a 1x1 output"""
    cases = [
        (rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)),
        (rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)),
    ]
    check_cases(student, cases)


def int_kernel(rng) -> np.ndarray:
    """A random 2x2 integer kernel, never all zeros, that differs from itself turned by 180
    degrees: a small kernel drawn at random is that symmetric one time in 49, and then a
    flipped kernel (true convolution) would pass for some draws and fail for others."""
    while True:
        K = rng.integers(-3, 4, size=(2, 2)).astype(np.int32)
        K[0, 0] = 2
        if not np.array_equal(K, K[::-1, ::-1]):
            return K


@pytest.mark.points(1)
def test_integer_inputs(student, rng):
    """corr2d accepts integer arrays, and float images with an integer kernel"""
    X = rng.integers(-5, 6, size=(5, 6)).astype(np.int32)
    K = int_kernel(rng)
    try:
        got = student.corr2d(X, K)
    except StudentCodeRaised as exc:
        floats = call(student, X.astype(np.float32), K.astype(np.float32))
        problem = diagnose(floats, X.astype(np.float32), K.astype(np.float32))
        assert problem is None, problem
        raise AssertionError(
            f"corr2d works on float arrays but raised {exc.ename} on integer arrays "
            f"({exc.evalue[:120]}): convert X and K to floating point first, e.g. with "
            "tf.cast(X, tf.float32)."
        ) from None
    problem = diagnose(np.asarray(got, dtype=np.float64), X, K)
    assert problem is None, problem
    # A float image with an integer kernel: casting the image to the kernel's dtype would
    # cut off its fractions, which integer-only inputs never show. Square, so that a height
    # and width mix-up (charged by the other checks) does not fail this one too.
    X = (rng.normal(size=(5, 5)) * 2).astype(np.float32)
    K = int_kernel(rng)
    try:
        got = np.asarray(student.corr2d(X, K), dtype=np.float64)
    except StudentCodeRaised as exc:
        raise AssertionError(
            "corr2d raised an error on a float image with an integer kernel "
            f"({exc.ename}: {exc.evalue.strip().splitlines()[0][:120] if exc.evalue else ''}): "
            "convert X and K to the same floating-point dtype first."
        ) from None
    truncated = ref(np.trunc(X), K)
    if got.shape == truncated.shape and np.allclose(got, truncated, atol=1e-4):
        raise AssertionError(
            "corr2d on a float image with an integer kernel cuts off the image's fractions: "
            "it casts the image to the kernel's integer dtype. Convert both to a floating-point "
            "dtype instead."
        )
    problem = diagnose(got, X, K)
    assert problem is None, problem
