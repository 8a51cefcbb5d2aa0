"""Layers with weights (Linear, convolutions), Dropout, activations and containers.

Default initialisation is PyTorch's: weights kaiming_uniform_(a=sqrt(5)), i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Parameters
are float32. Random numbers come from nn.init's shared generator (seed it with nn.manual_seed).
"""
import math
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .. import init
from ..arguments import int_pair
from ..ops import as_tensor
from .module import Module, Parameter


def _reset_weight_and_bias(weight, bias):
    """PyTorch's default: weight ~ U(+-1/sqrt(fan_in)) via kaiming_uniform_(a=sqrt(5)),
    bias ~ U(+-1/sqrt(fan_in)) with the same fan_in."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


def _empty_parameter(*shape):
    return Parameter(np.zeros(shape, dtype=np.float32))


# ---- layers with weights ---------------------------------------------------------------------

class Linear(Module):
    """y = x @ W^T + b, with W of shape (out_features, in_features) and b of shape (out,)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty_parameter(out_features, in_features)
        self.register_parameter("bias", _empty_parameter(out_features) if bias else None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """2-D cross-correlation: weight (out_channels, in_channels, kh, kw), bias (out_channels,).

    H_out = (H + 2 * padding - kh) // stride + 1 (likewise W). kernel_size, stride and padding
    are an int or an (h, w) pair.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride, self.padding = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
        self.weight = _empty_parameter(out_channels, in_channels, *self.kernel_size)
        self.register_parameter("bias", _empty_parameter(out_channels) if bias else None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class ConvTranspose2d(Module):
    """The gradient of conv2d with respect to its input, used to upsample.

    weight (in_channels, out_channels, kh, kw), bias (out_channels,);
    H_out = (H - 1) * stride - 2 * padding + kh + output_padding (likewise W).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride, self.padding = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
        self.output_padding = int_pair(output_padding, "output_padding", 0)
        self.weight = _empty_parameter(in_channels, out_channels, *self.kernel_size)
        self.register_parameter("bias", _empty_parameter(out_channels) if bias else None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride,
                                  padding=self.padding, output_padding=self.output_padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, bias={self.bias is not None}")


def pixelcnn_mask(kernel_size, mask_type):
    """The (kh, kw) PixelCNN mask: 1 where the kernel may look, 0 elsewhere.

    Rows below the centre and pixels right of the centre are 0 (they come later in raster
    order); type "A" (first layer) also zeroes the centre, so a pixel never sees itself.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
    kh, kw = kernel_size
    centre_row, centre_col = kh // 2, kw // 2
    mask = np.ones((kh, kw), dtype=np.float32)
    mask[centre_row + 1:, :] = 0
    mask[centre_row, centre_col + 1:] = 0
    if mask_type == "A":
        mask[centre_row, centre_col] = 0
    return mask


class MaskedConv2d(Conv2d):
    """A Conv2d whose kernel only sees pixels before the centre in raster order: the textbook
    PixelCNN layer (van den Oord et al. 2016a), with its gradient checks in tests/test_modules.py.

    models/pixelcnn.py does not use it: a stack of masked 3x3 convolutions has a blind spot
    above and to the right, so the gated PixelCNN there gets causality from two stacks of
    shifted convolutions instead (see its docstring).

    forward computes conv2d(x, weight * mask): the mask is a constant, so masked weights get a
    zero gradient. padding defaults to kernel_size // 2, which keeps H and W for stride 1 (odd
    kernels), so output (i, j) depends only on inputs before (i, j) (and on (i, j) for type "B").
    The mask is a non-persistent buffer: it moves with `.to()` but is not in the state dict.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A", stride=1,
                 padding=None, bias=True):
        kernel = int_pair(kernel_size, "kernel_size", 1)
        if padding is None:
            padding = (kernel[0] // 2, kernel[1] // 2)
        super().__init__(in_channels, out_channels, kernel, stride, padding, bias)
        self.mask_type = mask_type
        self.register_buffer("mask", pixelcnn_mask(kernel, mask_type), persistent=False)
        self.weight.data *= self.mask.data  # so the stored weights are the effective ones

    def forward(self, x):
        mask = as_tensor(self.mask.data, self.weight)  # the weight's dtype, no gradient
        return F.conv2d(x, self.weight * mask, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"


# ---- dropout and activations ------------------------------------------------------------------

class Dropout(Module):
    """In training mode, zero each element with probability p and scale the rest by 1/(1-p);
    in eval mode, the identity.

    Randomness: masks are drawn from `generator` (an np.random.Generator) when given, otherwise
    from nn.init's shared generator, so nn.manual_seed makes them repeatable and
    nn.get_rng_state / nn.set_rng_state save and restore them. On the GPU that generator gives
    a seed for the GPU's one cuRAND generator, which draws the mask there (F.dropout).
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return F.dropout(x, self.p, training=True, rng=self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    """max(x, 0)"""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Module):
    """tanh(x)"""

    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))"""

    def forward(self, x):
        return F.sigmoid(x)


class Identity(Module):
    """Returns its input (a placeholder, e.g. for an optional normalisation)."""

    def forward(self, x):
        return x


class Flatten(Module):
    """Reshape (N, d1, d2, ...) to (N, d1 * d2 * ...)."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


# ---- containers -----------------------------------------------------------------------------

class ModuleList(Module):
    """A list of sub-modules, registered as "0", "1", ... (for models that loop over layers)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """Sub-modules by key, e.g. one block per resolution: blocks[8], blocks[16], ...

    The state dict names them by key ("blocks.8.conv.weight"). Keys are stored as strings, and
    any key is turned into one with str(), so blocks[8] and blocks["8"] are the same module.
    Iterating gives the keys (strings) in the order they were added, like a dict."""

    def __init__(self, modules=None):
        super().__init__()
        for key, module in (modules or {}).items():
            self[key] = module

    def __setitem__(self, key, module):
        setattr(self, str(key), module)

    def __getitem__(self, key):
        return self._modules[str(key)]

    def __contains__(self, key):
        return str(key) in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b, c)(x) = c(b(a(x))).

    Sub-modules are named "0", "1", ... (or by the keys of an OrderedDict given instead).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                setattr(self, name, module)
        else:
            self.extend(modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x
