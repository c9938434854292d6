"""Specification of `reference.learn_kernel`.

The training trajectory is replayed with an independent NumPy gradient step.
"""

import numpy as np
import pytest

from reference import KernelFit, detect_edges, edge_image, learn_kernel


def np_corr2d(X, K):
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    return np.einsum("ijab,ab->ij", windows, K)


def np_loss_and_gradient(X, Y, K):
    """Summed squared error of corr2d(X, K) against Y, and its gradient in K."""
    residual = np_corr2d(X, K) - np.asarray(Y, dtype=np.float64)
    return float(np.sum(residual**2)), 2.0 * np_corr2d(X, residual)


@pytest.fixture(scope="module")
def chapter_data():
    X = edge_image()
    return X.numpy(), detect_edges(X).numpy()


@pytest.mark.parametrize("seed", range(5))
def test_learns_the_edge_kernel(chapter_data, seed):
    fit = learn_kernel(*chapter_data, seed=seed)
    assert isinstance(fit, KernelFit)
    assert isinstance(fit.kernel, np.ndarray) and fit.kernel.shape == (1, 2)
    assert len(fit.losses) == 10 and all(isinstance(v, float) for v in fit.losses)
    assert all(np.diff(fit.losses) < 0), fit.losses
    np.testing.assert_allclose(fit.kernel, [[1.0, -1.0]], atol=0.1)


def test_same_seed_same_result_other_seed_other_start(chapter_data):
    first, again = learn_kernel(*chapter_data, seed=3), learn_kernel(*chapter_data, seed=3)
    np.testing.assert_array_equal(first.kernel, again.kernel)
    assert first.losses == again.losses
    assert learn_kernel(*chapter_data, seed=4).losses[0] != first.losses[0]


def test_each_step_is_plain_gradient_descent(chapter_data):
    X, Y = chapter_data
    lr, steps = 3e-2, 4
    kernels = [learn_kernel(X, Y, lr=lr, num_epochs=n, seed=0).kernel for n in range(1, steps + 1)]
    losses = learn_kernel(X, Y, lr=lr, num_epochs=steps + 1, seed=0).losses
    for n in range(steps - 1):
        loss, gradient = np_loss_and_gradient(X, Y, kernels[n])
        assert losses[n + 1] == pytest.approx(loss, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(kernels[n + 1], kernels[n] - lr * gradient, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "target",
    [np.array([[0.5, -2.0]]), np.array([[0.3, -0.7], [1.2, 0.1]]), np.array([[2.0], [-1.0]])],
    ids=["1x2", "2x2", "2x1"],
)
def test_recovers_an_unseen_kernel_from_random_data(target):
    X = np.random.default_rng(7).uniform(0.0, 1.0, size=(8, 9))
    fit = learn_kernel(X, np_corr2d(X, target), kernel_size=target.shape, lr=1e-2, num_epochs=300)
    np.testing.assert_allclose(fit.kernel, target, atol=0.02)
    assert fit.losses[-1] < 1e-3 * fit.losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"Y": np.ones((6, 8))}, r"output shape \(6, 7\).*Y\.shape=\(6, 8\)"),
        ({"X": np.ones(8)}, r"2-D `X`.*Received: X\.shape=\(8,\)"),
        ({"X": np.ones((0, 8))}, r"non-empty `X`"),
        ({"kernel_size": (7, 1)}, r"X\.shape=\(6, 8\), K\.shape=\(7, 1\)"),
        ({"kernel_size": (0, 2)}, r"Received: kernel_size=\(0, 2\)"),
        ({"num_epochs": 0}, r"Received: num_epochs=0"),
        ({"lr": 0.0}, r"positive, finite `lr`\. Received: lr=0\.0"),
        ({"lr": float("nan")}, r"Received: lr=nan"),
    ],
    ids=["Y-shape", "X-1d", "X-empty", "kernel-too-tall", "kernel-size", "epochs", "lr", "lr-nan"],
)
def test_bad_arguments(chapter_data, kwargs, message):
    X, Y = chapter_data
    arguments = {"X": X, "Y": Y, **kwargs}
    with pytest.raises(ValueError, match=message):
        learn_kernel(**arguments)
