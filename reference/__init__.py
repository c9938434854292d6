"""Reference implementations for the chapter "Convolutions for Images".

The trusted answers the autograder compares students' work against, and the
code the solution notebook uses. Written for TensorFlow 2.x with Keras 3.
Inputs may be tensors, variables, numpy arrays or nested lists; bad shapes
raise `ValueError` naming what was received.

Cross-correlation (`reference.correlation`):
    corr2d(X, K): vectorized 2-D cross-correlation, differentiable in X and K.
    corr2d_loop(X, K): the pixel-by-pixel version; slow and not differentiable.

Layer (`reference.layers`):
    Conv2D(kernel_size): Keras layer computing ``corr2d(X, weight) + bias``.

Edge detection (`reference.edges`):
    edge_image(height, width): the striped test image.
    EDGE_KERNEL: ``[[1, -1]]``, responds to horizontal changes.
    detect_edges(X, K): ``corr2d`` with `EDGE_KERNEL` by default.

Learning a kernel (`reference.learning`):
    learn_kernel(X, Y, ...): fits a bias-free keras Conv2D kernel by gradient
    descent; returns ``KernelFit(kernel, losses)``.

Exercises:
    1. diagonal_edge_image(n), diagonal_edge_answers(n) (`reference.exercises`).
    2. custom_layer_gradients(corr) -> LayerGradients (`reference.exercises`).
    3. kernel_matrix(K, input_shape), corr2d_matmul(X, K) (`reference.matmul`).
    4. derivative_kernel(d), second_derivative_kernel(), integral_kernel(n),
       min_kernel_size(d) (`reference.kernels`).

The hidden checks compare with the assignment's own answer key in NumPy alone
(``assignments/convolutions/checks/hidden/answers.py``), which the tests hold equal to
these functions.

See ``reference/README.md`` for the answers in prose.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names load their module on first use (PEP 562), so `import reference` stays free of
# TensorFlow until a name is used.
_HOME = {
    "corr2d": "correlation",
    "corr2d_loop": "correlation",
    "EDGE_KERNEL": "edges",
    "detect_edges": "edges",
    "edge_image": "edges",
    "DiagonalEdgeAnswers": "exercises",
    "LayerGradients": "exercises",
    "custom_layer_gradients": "exercises",
    "diagonal_edge_answers": "exercises",
    "diagonal_edge_image": "exercises",
    "derivative_kernel": "kernels",
    "integral_kernel": "kernels",
    "min_kernel_size": "kernels",
    "second_derivative_kernel": "kernels",
    "Conv2D": "layers",
    "KernelFit": "learning",
    "learn_kernel": "learning",
    "corr2d_matmul": "matmul",
    "kernel_matrix": "matmul",
}

if TYPE_CHECKING:
    from reference.correlation import corr2d, corr2d_loop
    from reference.edges import EDGE_KERNEL, detect_edges, edge_image
    from reference.exercises import (
        DiagonalEdgeAnswers,
        LayerGradients,
        custom_layer_gradients,
        diagonal_edge_answers,
        diagonal_edge_image,
    )
    from reference.kernels import (
        derivative_kernel,
        integral_kernel,
        min_kernel_size,
        second_derivative_kernel,
    )
    from reference.layers import Conv2D
    from reference.learning import KernelFit, learn_kernel
    from reference.matmul import corr2d_matmul, kernel_matrix


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'reference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"reference.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "EDGE_KERNEL",
    "Conv2D",
    "DiagonalEdgeAnswers",
    "KernelFit",
    "LayerGradients",
    "corr2d",
    "corr2d_loop",
    "corr2d_matmul",
    "custom_layer_gradients",
    "derivative_kernel",
    "detect_edges",
    "diagonal_edge_answers",
    "diagonal_edge_image",
    "edge_image",
    "integral_kernel",
    "kernel_matrix",
    "learn_kernel",
    "min_kernel_size",
    "second_derivative_kernel",
]
