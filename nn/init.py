"""Weight initialisation, in place on a Tensor's `.data` (dtype and device are kept).

Random numbers come from one NumPy generator shared by the whole library, so
`nn.manual_seed(seed)` makes model construction (and Dropout masks) repeatable:

    nn.manual_seed(0); a = MyModel()
    nn.manual_seed(0); b = MyModel()      # identical weights to a

Values are always drawn on the CPU and then copied to the tensor's device, so a model gets the
same weights on "cpu" and "gpu". Every function also takes `generator=` (an
np.random.Generator) to use instead of the shared one. Dropout masks on the GPU are drawn there by
one cuRAND generator per GPU, reseeded for each mask from this shared generator
(nn/functional.py), so its state alone (`get_rng_state`) decides the masks on both devices.

Fan-in and fan-out follow PyTorch: for a weight of shape (a, b, k1, k2, ...)
    fan_in = b * k1 * k2 * ...,   fan_out = a * k1 * k2 * ...
(for a transposed convolution, whose weight is (in, out, kh, kw), "fan_in" is therefore
out * kh * kw, exactly as in PyTorch).
"""
import math

import numpy as np

from .backend import to_device

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind nn.init and Dropout. Returns the new generator."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    """The shared np.random.Generator (replaced by each `manual_seed`)."""
    return _generator


def get_rng_state():
    """The shared generator's state as a dict of plain numbers and strings (nn.save can store
    it in a checkpoint, so a resumed run draws the same Dropout masks)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state from `get_rng_state()` into the shared generator."""
    _generator.bit_generator.state = state


def _fill(tensor, values):
    """Write NumPy `values` into tensor.data in place (cast to its dtype, on its device)."""
    tensor.data[...] = to_device(np.asarray(values, dtype=tensor.dtype), tensor.device)
    return tensor


def _generator_or_default(generator):
    return _generator if generator is None else generator


def calculate_fan_in_and_fan_out(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out need a weight with at least 2 dimensions, got shape "
                         f"{tensor.shape}")
    receptive_field = int(np.prod(tensor.shape[2:]))  # 1 for a Linear weight
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance: sqrt(2) for relu, sqrt(2 / (1 + a^2)) for
    leaky_relu with slope a (default 0.01), 5/3 for tanh, 1 for linear/conv/sigmoid."""
    if nonlinearity in ("linear", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def _fan(tensor, mode):
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', not {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    return _fill(tensor, _generator_or_default(generator).uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    return _fill(tensor, _generator_or_default(generator).normal(mean, std, tensor.shape))


def constant_(tensor, value):
    return _fill(tensor, np.full(tensor.shape, value))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. 2015: U(-bound, bound), bound = gain * sqrt(3 / fan), gain from calculate_gain.

    With a = sqrt(5) (PyTorch's default for Linear and Conv weights) bound = 1 / sqrt(fan_in).
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. 2015: N(0, std^2), std = gain / sqrt(fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio 2010: U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio 2010: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
