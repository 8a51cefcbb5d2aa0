"""The gradient checker must catch wrong gradients, not only pass right ones."""
import numpy as np
import pytest

import nn
from nn.tensor import Function
from conftest import tensor


class SquareWithWrongGradient(Function):
    """y = x^2 but backward claims 2x + 0.01: a subtle bug gradcheck must report."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        x, = self.inputs
        return gy * (x * 2.0 + 0.01)


class SwapsOutputPositions(Function):
    """y = x * c with a backward that mixes up positions: only a random upstream catches it."""

    def forward(self, x):
        return x * 3.0

    def backward(self, gy):
        return gy[::-1] * 3.0


class CubeWithFirstOrderOnlyGradient(Function):
    """y = x^3 whose backward is right numerically but built from raw arrays (not differentiable),
    so its second derivative is missing: gradgradcheck must notice."""

    def forward(self, x):
        return x ** 3

    def backward(self, gy):
        x, = self.inputs
        return gy * nn.Tensor(3.0 * x.data ** 2)


def test_gradcheck_passes_a_correct_gradient(device, rng):
    x = tensor(rng.standard_normal((3, 4)), device, requires_grad=True)
    w = tensor(rng.standard_normal((4, 2)), device, requires_grad=True)
    assert nn.gradcheck(lambda x, w: (x @ w).exp(), [x, w])


def test_gradcheck_reports_the_worst_element_of_a_wrong_gradient(device, rng):
    x = tensor(rng.standard_normal((2, 3)), device, requires_grad=True)
    with pytest.raises(nn.GradcheckError, match=r"input 0 \(shape \(2, 3\)\).*analytic.*numeric"):
        nn.gradcheck(lambda x: SquareWithWrongGradient()(x), [x])


def test_random_upstream_gradient_catches_swapped_positions(device, rng):
    x = tensor(rng.standard_normal(5), device, requires_grad=True)
    with pytest.raises(nn.GradcheckError):
        nn.gradcheck(lambda x: SwapsOutputPositions()(x), [x])


def test_gradcheck_covers_parameters_as_well_as_inputs(device, rng):
    x = tensor(rng.standard_normal(4), device, requires_grad=True)
    p = tensor(rng.standard_normal(4), device, requires_grad=True)
    with pytest.raises(nn.GradcheckError, match="parameter 0"):
        nn.gradcheck(lambda x: x + SquareWithWrongGradient()(p), [x], params=[p])


def test_gradgradcheck_catches_a_backward_that_is_not_differentiable(device, rng):
    x = tensor(rng.standard_normal(4), device, requires_grad=True)
    assert nn.gradcheck(lambda x: CubeWithFirstOrderOnlyGradient()(x), [x])
    with pytest.raises(nn.GradcheckError):
        nn.gradgradcheck(lambda x: CubeWithFirstOrderOnlyGradient()(x), [x])
    assert nn.gradgradcheck(lambda x: x ** 3, [x])


def test_gradcheck_refuses_float32(rng):
    x = nn.Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        nn.gradcheck(lambda x: x * 2.0, [x])
