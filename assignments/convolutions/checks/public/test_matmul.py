"""Public checks of Exercise 3 (matmul): the 3x3 worked example as a matrix product."""

import numpy as np
import pytest

from grader.checks import load_helpers

helpers = load_helpers(__file__)

X_SMALL = np.arange(9, dtype=np.float32).reshape(3, 3)
K_SMALL = np.arange(4, dtype=np.float32).reshape(2, 2)
W_SMALL = np.array(
    [
        [0, 1, 0, 2, 3, 0, 0, 0, 0],
        [0, 0, 1, 0, 2, 3, 0, 0, 0],
        [0, 0, 0, 0, 1, 0, 2, 3, 0],
        [0, 0, 0, 0, 0, 1, 0, 2, 3],
    ],
    dtype=np.float64,
)


@pytest.mark.points(1)
def test_kernel_matrix_of_the_worked_example(student):
    """kernel_matrix for the 2x2 kernel and 3x3 inputs"""
    got = np.asarray(student.kernel_matrix(K_SMALL, (3, 3)), dtype=np.float64)
    if got.shape == W_SMALL.T.shape:
        raise AssertionError(
            "kernel_matrix(K, (3, 3)) has shape (9, 4): it is transposed. W needs one row per "
            "output pixel (4) and one column per input pixel (9)."
        )
    assert got.shape == W_SMALL.shape, (
        f"kernel_matrix(K, (3, 3)) has shape {got.shape}, expected (4, 9)"
    )
    # Same matrix with column-major (Fortran-order) vec for input and output:
    order = np.arange(9).reshape(3, 3).T.reshape(-1)
    out_order = np.arange(4).reshape(2, 2).T.reshape(-1)
    if np.allclose(got, W_SMALL[out_order][:, order]) or np.allclose(got, W_SMALL[:, order]):
        raise AssertionError(
            "kernel_matrix flattens column by column (Fortran order): vec(X) must be "
            "X.reshape(-1), row by row."
        )
    np.testing.assert_allclose(got, W_SMALL, err_msg="kernel_matrix(K, (3, 3)) is wrong")


@pytest.mark.points(1)
def test_corr2d_matmul_on_the_worked_example(student):
    """corr2d_matmul on the 3x3 worked example gives [[19, 25], [37, 43]]"""
    problem = helpers.matrix_product_problem(student)
    assert problem is None, problem
    got = np.asarray(student.corr2d_matmul(X_SMALL, K_SMALL), dtype=np.float64)
    assert got.shape == (2, 2), f"corr2d_matmul(X, K) has shape {got.shape}, expected (2, 2)"
    if np.allclose(got, [[19, 37], [25, 43]]):
        raise AssertionError(
            "corr2d_matmul(X, K) is transposed: reshape the product row by row to (oh, ow)."
        )
    np.testing.assert_allclose(got, [[19, 25], [37, 43]], err_msg="corr2d_matmul(X, K) is wrong")
