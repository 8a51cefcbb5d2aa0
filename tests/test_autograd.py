"""The autograd core (nn/tensor.py, nn/ops.py): operators, broadcasting, reductions, indexing,
gradient accumulation, nn.grad, no_grad, second derivatives, deep graphs and errors."""
import numpy as np
import pytest

import nn
from conftest import tensor
from nn import ops


def randn(rng, shape, device, requires_grad=True):
    return tensor(rng.standard_normal(shape), device, requires_grad)


# ---- operators and broadcasting ----------------------------------------------------------------

BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
}


@pytest.mark.parametrize("name", sorted(BINARY_OPS))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((), (2, 3))])
def test_binary_operators_broadcast_gradients(device, rng, name, shapes):
    a, b = randn(rng, shapes[0], device), randn(rng, shapes[1], device)
    assert nn.gradcheck(BINARY_OPS[name], [a, b])
    out = BINARY_OPS[name](a, b)
    ga, gb = nn.grad(out, [a, b], nn.Tensor(np.ones(out.shape)).to(device))
    assert ga.shape == a.shape and gb.shape == b.shape


def test_operator_values_with_scalars_and_arrays(device, rng):
    data = rng.standard_normal((2, 3))
    x = tensor(data, device)
    other = nn.backend.to_device(np.full((2, 3), 2.0), device)
    np.testing.assert_allclose((2.0 - x).numpy(), 2.0 - data)
    np.testing.assert_allclose((1.0 / (x * x + 1.0)).numpy(), 1.0 / (data * data + 1.0))
    np.testing.assert_allclose((other * x).numpy(), 2.0 * data)  # ndarray * Tensor -> Tensor
    assert isinstance(other * x, nn.Tensor)
    np.testing.assert_allclose((-x).numpy(), -data)
    np.testing.assert_allclose((x ** 3).numpy(), data ** 3)
    np.testing.assert_allclose((x @ x.T).numpy(), data @ data.T)
    comparison = x > 0.0
    assert not isinstance(comparison, nn.Tensor)
    np.testing.assert_array_equal(nn.backend.to_numpy(comparison), data > 0)


def test_matmul_pow_neg_gradcheck(device, rng):
    a, b = randn(rng, (3, 4), device), randn(rng, (4, 2), device)
    assert nn.gradcheck(lambda a, b: a @ b, [a, b])
    assert nn.gradcheck(lambda a: -(a ** 3) + a ** 2, [a])
    c = tensor(0.5 + rng.random((2, 3)), device, requires_grad=True)
    assert nn.gradcheck(lambda c: c ** -0.5 + c ** 1.5, [c])


def test_scalar_operations_keep_float32(device):
    x = nn.Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True).to(device)
    y = ((x * 2.0 + 1) / 3.0 - 0.5) ** 2
    y = y.mean() + y.var() + (np.float64(2.0) * x).sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32
    assert nn.Tensor([1, 2]).dtype == np.float32  # ints become float32
    assert nn.Tensor(np.zeros(2)).dtype == np.float64  # float arrays keep their dtype


# ---- reductions --------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean", "var", "max"])
@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_reductions_values_and_gradients(device, rng, reduction, axis, keepdims):
    x = randn(rng, (2, 3, 4), device)
    y = getattr(x, reduction)(axis=axis, keepdims=keepdims)
    expected = getattr(np, reduction)(x.numpy(), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    assert nn.gradcheck(lambda x: getattr(x, reduction)(axis=axis, keepdims=keepdims), [x])


def test_unbiased_variance(device, rng):
    x = randn(rng, (3, 5), device)
    np.testing.assert_allclose(x.var(axis=1, ddof=1).numpy(), np.var(x.numpy(), axis=1, ddof=1))
    assert nn.gradcheck(lambda x: x.var(axis=1, ddof=1), [x])


def test_max_shares_gradient_among_ties(device):
    x = tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], device, requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


# ---- shapes and indexing -----------------------------------------------------------------------

def test_reshape_transpose_gradcheck(device, rng):
    x = randn(rng, (2, 3, 4), device)
    assert nn.gradcheck(lambda x: x.reshape(4, 6), [x])
    assert nn.gradcheck(lambda x: x.reshape((3, -1)), [x])
    assert nn.gradcheck(lambda x: x.transpose(2, 0, 1), [x])
    assert nn.gradcheck(lambda x: x.T, [x])
    np.testing.assert_array_equal(x.transpose(1, 2, 0).numpy(), x.numpy().transpose(1, 2, 0))


@pytest.mark.parametrize("index", [(slice(None), 1), (0, slice(1, None, 2)), (Ellipsis, None, 2),
                                   (np.array([0, 1, 0]),), (slice(None), np.array([2, 0, 2, 2]))],
                         ids=["column", "strided", "ellipsis_newaxis", "rows_repeated", "cols_repeated"])
def test_getitem_gradcheck(device, rng, index):
    x = randn(rng, (2, 3, 4), device)
    expected = x.numpy()[index]
    index = tuple(nn.backend.to_device(i, device) if isinstance(i, np.ndarray) else i for i in index)
    np.testing.assert_array_equal(x[index].numpy(), expected)
    assert nn.gradcheck(lambda x: x[index], [x])


def test_integer_array_indexing_adds_up_repeated_indices(device):
    x = tensor(np.arange(5.0), device, requires_grad=True)
    index = nn.backend.to_device(np.array([1, 3, 1, 1, 0]), device)
    x[index].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 3, 0, 1, 0])
    rows, cols = (nn.backend.to_device(np.array(v), device) for v in ([0, 0, 1], [2, 2, 0]))
    m = tensor(np.zeros((2, 3)), device, requires_grad=True)
    m[rows, cols].sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [[0, 0, 2], [1, 0, 0]])


# ---- backward: accumulation, reuse, graph walking --------------------------------------------------

def test_backward_accumulates_into_grad(device):
    x = tensor([1.0, 2.0], device, requires_grad=True)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])
    assert isinstance(x.grad, nn.Tensor) and x.grad.is_leaf and not x.grad.requires_grad


def test_a_tensor_used_many_times_gets_the_sum_of_its_gradients(device):
    x = tensor([2.0], device, requires_grad=True)
    y = x * x
    z = y * x + y + x  # x^3 + x^2 + x
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 * 4 + 2 * 2 + 1])


def test_backward_twice_over_one_graph(device):
    x = tensor([1.5], device, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


def test_backward_with_explicit_gradient(device, rng):
    x = randn(rng, (2, 3), device)
    g = rng.standard_normal((2, 3))
    (x * 2.0).backward(tensor(g, device))
    np.testing.assert_allclose(x.grad.numpy(), 2 * g)


def test_deep_chain_backward_without_recursion(device):
    x = tensor([1.0], device, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-9)


def test_only_leaves_that_require_grad_get_grad(device, rng):
    x, c = randn(rng, (2,), device), randn(rng, (2,), device, requires_grad=False)
    hidden = x * c
    (hidden * hidden).sum().backward()
    assert c.grad is None and hidden.grad is None and x.grad is not None


# ---- nn.grad, no_grad, second derivatives ------------------------------------------------------

def test_grad_returns_gradients_without_touching_dot_grad(device, rng):
    x, w = randn(rng, (3,), device), randn(rng, (3,), device)
    out = (x * w).sum()
    gx, gw = nn.grad(out, [x, w])
    np.testing.assert_allclose(gx.numpy(), w.numpy())
    np.testing.assert_allclose(gw.numpy(), x.numpy())
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad  # create_graph=False: plain values


def test_grad_with_grad_outputs_and_unused_inputs(device, rng):
    x, unused = randn(rng, (2, 2), device), randn(rng, (2,), device)
    y = x * 3.0
    g = rng.standard_normal((2, 2))
    gx, gu = nn.grad(y, [x, unused], grad_outputs=tensor(g, device), allow_unused=True)
    np.testing.assert_allclose(gx.numpy(), 3 * g)
    assert gu is None
    with pytest.raises(RuntimeError, match="not used"):
        nn.grad(y.sum(), [x, unused])
    with pytest.raises(RuntimeError, match="does not require grad"):
        nn.grad(y.sum(), [randn(rng, (2,), device, requires_grad=False)])
    with pytest.raises(RuntimeError, match="grad_outputs"):
        nn.grad(y, [x])


class _RecordingMul(nn.Function):
    """a * b that records which input gradients backward was asked for."""
    asked = []

    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        _RecordingMul.asked.append(self.needs_input_grad)
        a, b = self.inputs
        return gy * b, gy * a


def test_grad_computes_only_gradients_on_a_path_from_the_inputs(device, rng):
    # nn.grad(D(x), [x]) (an R1 penalty) must not also compute D's weight gradients.
    x, w = randn(rng, (3,), device), randn(rng, (3,), device)
    xw = x * w
    multiply = _RecordingMul()
    out = (multiply(xw, w) ** 2).sum()                 # x reaches the first input only
    _RecordingMul.asked.clear()
    gx, = nn.grad(out, [x])
    assert _RecordingMul.asked == [(True, False)]      # handed to backward by nn.grad's loop
    np.testing.assert_allclose(gx.numpy(), 2 * (x.numpy() * w.numpy() ** 2) * w.numpy() ** 2,
                               rtol=1e-6)
    _RecordingMul.asked.clear()
    out.backward()                                     # backward() wants every leaf
    assert _RecordingMul.asked == [(True, True)]
    np.testing.assert_allclose(w.grad.numpy(), 4 * x.numpy() ** 2 * w.numpy() ** 3, rtol=1e-6)


def test_no_grad_records_nothing(device, rng):
    x = randn(rng, (2,), device)
    with nn.no_grad():
        y = x * 2.0
        assert not nn.is_grad_enabled()
    assert nn.is_grad_enabled()
    assert not y.requires_grad and y.creator is None
    assert (x * 2.0).requires_grad


def test_create_graph_gives_second_derivatives(device):
    x = tensor([0.5, -2.0], device, requires_grad=True)
    y = (x ** 3).sum()
    gx, = nn.grad(y, [x], create_graph=True)
    np.testing.assert_allclose(gx.numpy(), 3 * np.array([0.5, -2.0]) ** 2)
    assert gx.requires_grad
    ggx, = nn.grad(gx.sum(), [x])
    np.testing.assert_allclose(ggx.numpy(), 6 * np.array([0.5, -2.0]))


def test_mixed_second_derivative_and_backward_of_a_gradient_norm(device, rng):
    x, w = randn(rng, (3,), device), randn(rng, (3,), device)
    out = (x * x * w).sum()
    gx, = nn.grad(out, [x], create_graph=True)  # 2 x w
    penalty = (gx * gx).sum()                   # 4 x^2 w^2
    penalty.backward()
    np.testing.assert_allclose(w.grad.numpy(), 8 * x.numpy() ** 2 * w.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.numpy() * w.numpy() ** 2)


@pytest.mark.parametrize("name", ["mean_var_sqrt", "div_pow", "getitem_matmul", "exp_log_max"])
def test_primitive_gradgradcheck(device, rng, name):
    x = tensor(0.5 + rng.random((3, 4)), device, requires_grad=True)
    w = randn(rng, (4, 2), device)
    functions = {
        "mean_var_sqrt": lambda x, w: (x.var(axis=0) + x.mean(axis=1, keepdims=True)).sqrt(),
        "div_pow": lambda x, w: x / (w.sum() ** 2 + 1.0) + x ** 3,
        "getitem_matmul": lambda x, w: x[np.array([0, 2, 2])] @ w,
        "exp_log_max": lambda x, w: (x.exp() + x.log()).max(axis=1) * w.sum(),
    }
    fn = functions[name]
    if name == "getitem_matmul":
        index = nn.backend.to_device(np.array([0, 2, 2]), device)
        fn = lambda x, w: x[index] @ w  # noqa: E731
    assert nn.gradgradcheck(fn, [x, w])


# ---- errors ------------------------------------------------------------------------------------

def test_errors(device, rng):
    x = randn(rng, (2, 3), device)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="gradient of shape"):
        (x * 2.0).backward(tensor(np.ones(3), device))
    with pytest.raises(ValueError, match="2-D"):
        ops.matmul(x, randn(rng, (3,), device))
    with pytest.raises(TypeError):
        nn.Tensor(x)


def test_mixing_devices_is_an_error(device, rng):
    if device != "gpu":
        pytest.skip("needs a GPU to have two devices")
    with pytest.raises(RuntimeError, match="two devices"):
        randn(rng, (2,), "gpu") + randn(rng, (2,), "cpu")


def test_tensor_helpers(device, rng):
    x = randn(rng, (2, 3), device)
    assert x.detach().is_leaf and not x.detach().requires_grad
    assert isinstance(x.numpy(), np.ndarray) and x.device == device
    assert x.float().dtype == np.float32 and x.float().double().dtype == np.float64
    assert tensor([[4.0]], device).item() == 4.0
    assert x.to("cpu").device == "cpu"
