"""Batch and instance normalisation composed of primitive ops.

Plain versions of nn/functional.py batch_norm and instance_norm, which normalise in fused
Functions with hand-written backward formulas. Here the mean, the variance and the division are
separate ops, so the gradients (and second derivatives) come from those ops' backward:

    mean = x.mean(axes)      var = ((x - mean) ** 2).mean(axes)             (biased)
    y = (x - mean) / sqrt(var + eps) * weight + bias              (weight, bias: per channel)

Batch norm averages over (N, H, W) and, in training, moves the running statistics towards the
batch's: running = (1 - momentum) * running + momentum * batch value, with the UNBIASED variance.
Instance norm averages over (H, W), each sample and channel on its own.
"""
from ..tensor import Tensor, array_of


def standardize(x, axes, eps):
    """(x - mean) / sqrt(var + eps), and the mean and biased variance, over `axes` (kept)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    return centred / (var + eps).sqrt(), mean, var


def scale_and_shift(y, weight, bias):
    """y * weight + bias, with (C,) weight and bias (each may be None) broadcast over channels."""
    channel = (1, y.shape[1]) + (1,) * (y.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(channel)
    if bias is not None:
        y = y + bias.reshape(channel)
    return y


def move_running_stat(running, batch_value, momentum):
    """running = (1 - momentum) * running + momentum * batch_value, in place (no graph)."""
    if running is not None:
        array = array_of(running)
        array[...] = (1 - momentum) * array + momentum * batch_value.reshape(array.shape)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Plain batch_norm (fast version: nn/functional.py batch_norm). x (N, C) or (N, C, H, W)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    if training:
        y, mean, var = standardize(x, axes, eps)
        count = x.size // x.shape[1]                     # values per channel
        move_running_stat(running_mean, mean.data, momentum)
        move_running_stat(running_var, var.data * (count / (count - 1)), momentum)
    else:
        channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        mean = Tensor(array_of(running_mean).astype(x.dtype).reshape(channel))
        var = Tensor(array_of(running_var).astype(x.dtype).reshape(channel))
        y = (x - mean) / (var + eps).sqrt()
    return scale_and_shift(y, weight, bias)


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """Plain instance_norm (fast version: nn/functional.py instance_norm). x (N, C, H, W)."""
    y, _, _ = standardize(x, (2, 3), eps)
    return scale_and_shift(y, weight, bias)
