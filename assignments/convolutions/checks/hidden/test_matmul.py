"""Hidden checks of Exercise 3 (matmul): several shapes, rectangular everywhere."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)
answer_key = load_helpers(__file__, "answers")


def fortran_variants(W, input_shape, output_shape):
    """W rewritten for column-major vec of the input, the output, or both."""
    p_in = np.arange(int(np.prod(input_shape))).reshape(input_shape).T.reshape(-1)
    p_out = np.arange(int(np.prod(output_shape))).reshape(output_shape).T.reshape(-1)
    return [W[p_out][:, p_in], W[:, p_in], W[p_out]]


def kernel_matrix_problem(got, K, input_shape):
    W = np.asarray(answer_key.kernel_matrix(K, input_shape), dtype=np.float64)
    where = f"for K of shape {K.shape} and input_shape={input_shape}"
    if got.shape != W.shape:
        if got.shape == W.T.shape:
            return (
                f"kernel_matrix has shape {got.shape} {where}: it is transposed. W needs "
                f"one row per output pixel ({W.shape[0]}) and one column per input pixel "
                f"({W.shape[1]})."
            )
        return f"kernel_matrix has shape {got.shape} {where}, expected {W.shape}"
    if np.allclose(got, W, atol=1e-5):
        return None
    output_shape = (input_shape[0] - K.shape[0] + 1, input_shape[1] - K.shape[1] + 1)
    if any(np.allclose(got, V, atol=1e-5) for V in fortran_variants(W, input_shape, output_shape)):
        return (
            f"kernel_matrix {where} flattens column by column (Fortran order): vec(X) must be "
            "X.reshape(-1), row by row, and output pixel (i, j) is row i * ow + j."
        )
    if got.shape[0] == got.shape[1] and np.allclose(got.T, W, atol=1e-5):
        return f"kernel_matrix {where} is transposed."
    return f"kernel_matrix is wrong {where}: W @ X.reshape(-1) must equal corr2d(X, K).reshape(-1)."


@pytest.mark.points(2)
def test_kernel_matrix_several_shapes(student, rng):
    """kernel_matrix for rectangular inputs, 1x1 kernels and kernels as large as the input"""
    cases = [
        ((2, 3), (4, 5)),
        ((1, 1), (2, 3)),
        ((3, 2), (3, 2)),
        ((2, 2), (5, 3)),
        ((1, 3), (3, 4)),
    ]
    for kshape, input_shape in cases:
        K = rng.normal(size=kshape).astype(np.float32)
        got = np.asarray(student.kernel_matrix(K, input_shape), dtype=np.float64)
        problem = kernel_matrix_problem(got, K, input_shape)
        assert problem is None, problem


@pytest.mark.points(1)
def test_corr2d_matmul_rectangular(student, rng):
    """corr2d_matmul on random rectangular inputs, as a matrix product"""
    problem = helpers.matrix_product_problem(student)
    assert problem is None, problem
    for xshape, kshape in [((5, 7), (2, 3)), ((6, 4), (3, 1))]:
        X = rng.normal(size=xshape).astype(np.float32)
        K = rng.normal(size=kshape).astype(np.float32)
        want = np.asarray(answer_key.corr2d(X, K), dtype=np.float64)
        got = np.asarray(student.corr2d_matmul(X, K), dtype=np.float64)
        assert got.shape == want.shape, (
            f"corr2d_matmul has shape {got.shape} for X of shape {xshape} and K of shape "
            f"{kshape}, expected {want.shape}"
        )
        assert np.allclose(got, want, atol=1e-4), (
            f"corr2d_matmul is wrong for X of shape {xshape} and K of shape {kshape}: it must "
            "give the same numbers as corr2d."
        )
