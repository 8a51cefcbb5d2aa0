"""nn.functional against PyTorch (CPU, float64): forward values and gradients of every input.

Each test skips when PyTorch is not installed. Our side runs on the `device` under test.
"""
import numpy as np
import pytest

import nn
import nn.functional as F
from conftest import tensor
from nn.backend import to_device


def compare_with_torch(ours, theirs, arrays, rng, device, rtol=1e-7, atol=1e-9):
    """Run `ours` on nn Tensors and `theirs` on torch tensors made from the same float64
    arrays; compare outputs and the gradients of every input for a random upstream gradient."""
    torch = pytest.importorskip("torch")
    our_inputs = [tensor(a, device, requires_grad=True) for a in arrays]
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, y_torch = ours(*our_inputs), theirs(*torch_inputs)
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=rtol, atol=atol)
    upstream = rng.standard_normal(y.shape)
    y.backward(tensor(upstream, device))
    y_torch.backward(torch.tensor(upstream).reshape(y_torch.shape))
    for i, (x, x_torch) in enumerate(zip(our_inputs, torch_inputs)):
        assert x.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(x.grad.numpy(), x_torch.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


def test_linear(device, rng):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal(s) for s in [(4, 3), (5, 3), (5,)]]
    compare_with_torch(F.linear, torch.nn.functional.linear, arrays, rng, device)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 3, 2)])
def test_batch_norm_training_with_running_stats(device, rng, shape):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal(shape) * 2 + 0.5, rng.standard_normal(3), rng.standard_normal(3)]
    mean0, var0 = rng.standard_normal(3), 0.5 + rng.random(3)
    ours_mean, ours_var = to_device(mean0.copy(), device), to_device(var0.copy(), device)
    torch_mean, torch_var = torch.tensor(mean0), torch.tensor(var0)
    compare_with_torch(
        lambda x, w, b: F.batch_norm(x, ours_mean, ours_var, w, b, training=True, momentum=0.2),
        lambda x, w, b: torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b,
                                                       training=True, momentum=0.2),
        arrays, rng, device)
    np.testing.assert_allclose(nn.backend.to_numpy(ours_mean), torch_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(nn.backend.to_numpy(ours_var), torch_var.numpy(), rtol=1e-12)
    compare_with_torch(  # eval mode with the updated statistics
        lambda x, w, b: F.batch_norm(x, ours_mean, ours_var, w, b, training=False),
        lambda x, w, b: torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b),
        arrays, rng, device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3, 2)])
def test_cross_entropy(device, rng, shape, reduction):
    torch = pytest.importorskip("torch")
    target = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    compare_with_torch(
        lambda x: F.cross_entropy(x, to_device(target, device), reduction),
        lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(target), reduction=reduction),
        [rng.standard_normal(shape) * 3], rng, device)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["binary_cross_entropy_with_logits", "mse_loss"])
def test_elementwise_losses(device, rng, name, reduction):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(F, name), getattr(torch.nn.functional, name)
    logits_or_input = rng.standard_normal((4, 3)) * 5
    target = rng.random((4, 3)) if name.startswith("binary") else rng.standard_normal((4, 3))
    compare_with_torch(lambda x, t: ours(x, t, reduction),
                       lambda x, t: theirs(x, t, reduction=reduction),
                       [logits_or_input, target], rng, device)


def test_instance_norm(device, rng):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal((2, 3, 3, 2)) + 1, rng.standard_normal(3), rng.standard_normal(3)]
    compare_with_torch(
        lambda x, w, b: F.instance_norm(x, w, b),
        lambda x, w, b: torch.nn.functional.instance_norm(x, weight=w, bias=b),
        arrays, rng, device)


@pytest.mark.parametrize("name", ["softplus", "softplus_beta", "leaky_relu", "relu", "sigmoid",
                                  "tanh", "log_softmax", "softmax"])
def test_activations(device, rng, name):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    pairs = {
        "softplus": (F.softplus, tf.softplus),
        "softplus_beta": (lambda x: F.softplus(x, beta=2.0), lambda x: tf.softplus(x, beta=2.0)),
        "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: tf.leaky_relu(x, 0.2)),
        "relu": (F.relu, tf.relu),
        "sigmoid": (F.sigmoid, torch.sigmoid),
        "tanh": (F.tanh, torch.tanh),
        "log_softmax": (F.log_softmax, lambda x: tf.log_softmax(x, dim=1)),
        "softmax": (F.softmax, lambda x: tf.softmax(x, dim=1)),
    }
    ours, theirs = pairs[name]
    compare_with_torch(ours, theirs, [rng.standard_normal((2, 3, 4)) * 4], rng, device)


@pytest.mark.parametrize("kernel, stride, shape", [(2, None, (2, 3, 4, 6)), (2, None, (2, 2, 5, 5)),
                                                   (3, 2, (2, 2, 7, 6)), ((3, 2), 1, (1, 2, 4, 4))])
def test_avg_pool2d(device, rng, kernel, stride, shape):
    torch = pytest.importorskip("torch")
    compare_with_torch(
        lambda x: F.avg_pool2d(x, kernel, stride),
        lambda x: torch.nn.functional.avg_pool2d(x, kernel, stride),
        [rng.standard_normal(shape)], rng, device)


@pytest.mark.parametrize("factor", [2, 3])
def test_upsample_nearest(device, rng, factor):
    torch = pytest.importorskip("torch")
    compare_with_torch(
        lambda x: F.upsample_nearest(x, factor),
        lambda x: torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest"),
        [rng.standard_normal((2, 3, 2, 3))], rng, device)


@pytest.mark.parametrize("padding", [(1, 2), (2, 0, 1, 3), (1, 1, 0, 2, 1, 0)])
def test_pad(device, rng, padding):
    torch = pytest.importorskip("torch")
    compare_with_torch(
        lambda x: F.pad(x, padding, value=0.25),
        lambda x: torch.nn.functional.pad(x, padding, value=0.25),
        [rng.standard_normal((2, 3, 2, 3))], rng, device)
