"""A number in Tensor arithmetic (x + 2, 0.5 * x, 1 - x, x / 3, 2 / x) stays a number on the host,
held by its op (nn/ops.py AddConstant, SubtractConstant, SubtractFromConstant, MulConstant,
DivByConstant, DivideConstant): the values and gradients of the 0-d array it used to become, bit
for bit, without a host-to-device copy per number per call on the GPU (issue 22: ~180 per StyleGAN
step)."""
import numpy as np
import pytest

import nn
from conftest import tensor

CONSTANT_OPS = {                       # name: (with the number, with the number as a 0-d Tensor)
    "x + c": (lambda x, c: x + c, lambda x, c: x + c),
    "c + x": (lambda x, c: c + x, lambda x, c: c + x),
    "x - c": (lambda x, c: x - c, lambda x, c: x - c),
    "c - x": (lambda x, c: c - x, lambda x, c: c - x),
    "x * c": (lambda x, c: x * c, lambda x, c: x * c),
    "c * x": (lambda x, c: c * x, lambda x, c: c * x),
    "x / c": (lambda x, c: x / c, lambda x, c: x / c),
    "c / x": (lambda x, c: c / x, lambda x, c: c / x),
}
NUMBERS = [0.3, 3, np.float64(-1.7), np.float32(2.5), np.int64(-4)]


def zero_d(c, like):
    """What a number became before: a 0-d Tensor of x's dtype on x's device."""
    return nn.Tensor(np.asarray(c, dtype=like.dtype)).to(like.device)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CONSTANT_OPS))
def test_a_number_gives_the_bits_of_the_0d_array_it_used_to_become(device, name, dtype):
    """Values, gradients and second derivatives: identical (the same operations in the same order),
    and the dtype is x's (NumPy 2 would make float32 * np.float64(c) float64)."""
    with_number, with_array = CONSTANT_OPS[name]
    rng = np.random.default_rng(0)
    values = (rng.uniform(0.5, 2.0, (3, 4)) * rng.choice([-1, 1], (3, 4))).astype(dtype)
    for c in NUMBERS:
        results = []
        for f, constant in ((with_number, lambda x: c), (with_array, lambda x: zero_d(c, x))):
            x = nn.Tensor(values, requires_grad=True).to(device)
            y = f(x, constant(x))
            gx, = nn.grad((y * y).sum(), x, create_graph=True)
            ggx, = nn.grad(gx.sum(), x)
            results.append([y.numpy(), gx.numpy(), ggx.numpy()])
        assert results[0][0].dtype == dtype, (name, c)
        for found, expected in zip(*results):
            np.testing.assert_array_equal(found, expected, err_msg=f"{name}, c = {c!r}")


@pytest.mark.parametrize("name", sorted(CONSTANT_OPS))
def test_the_constant_ops_pass_gradcheck_and_gradgradcheck(device, name):
    with_number, _ = CONSTANT_OPS[name]
    x = tensor(np.random.default_rng(1).uniform(0.5, 2.0, (2, 3)), device, requires_grad=True)
    assert nn.gradcheck(lambda x: with_number(x, 1.7), [x])
    assert nn.gradgradcheck(lambda x: with_number(x, -0.6), [x])


def test_a_number_is_never_copied_to_the_device(cupy_standin):
    """On the GPU each number used to be a 0-d device array: one host-to-device copy each."""
    x = nn.Tensor(np.linspace(1, 2, 6, dtype=np.float32), requires_grad=True).to("gpu")
    with cupy_standin._standin.counting() as counts:
        y = (1.0 - x * 0.5 + 2) / 3 + 4 / x - np.float64(0.25) * x
        y.sum().backward()
    assert counts.host_to_device == 0, f"{counts.host_to_device} host-to-device copies"
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    xs = np.linspace(1, 2, 6, dtype=np.float64)
    np.testing.assert_allclose(x.grad.numpy(), -0.5 / 3 - 4 / xs ** 2 - 0.25, rtol=1e-6)
