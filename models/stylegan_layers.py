"""Building blocks of StyleGAN: equalised-learning-rate layers, noise injection and style modulation.

Equalised learning rate (Karras et al. 2018, "Progressive Growing of GANs", section 4.1).
A weight is stored as w_hat ~ N(0, (1/lrmul)^2) and used at run time as

    w = w_hat * c,        c = gain / sqrt(fan_in) * lrmul

so every layer's output starts with the variance He initialisation would give, while Adam (which
normalises the update size per parameter) changes every layer at the same relative speed, whatever
its fan-in. `lrmul` < 1 slows a layer down: StyleGAN's mapping network uses lrmul = 0.01
(Karras et al. 2019, appendix C). The bias is stored unscaled and used as b_hat * lrmul.
Gains: sqrt(2) before a LeakyReLU, 1 for to-image layers, the style affine maps and D's output.
"""
import math

import numpy as np

import nn
import nn.functional as F

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def lrelu(x):
    """LeakyReLU with slope 0.2, the only non-linearity StyleGAN uses."""
    return F.leaky_relu(x, LRELU_SLOPE)


class Blur(nn.Function):
    """[1, 2, 1] x [1, 2, 1] / 16 low-pass filter of every channel of x (N, C, H, W), zero-padded:

        y[i, j] = sum_{a, b in -1..1} k[a] k[b] x[i + a, j + b],   k = (1, 2, 1) / 4

    The filter is symmetric and the padding is zero, so the filter is its own adjoint: the
    gradient is the same blur of gy, gx = blur(gy), and so are all higher derivatives. One
    Function instead of ~15 slices, additions and scalings (and their backwards) per call.
    """

    def forward(self, x):
        n, c, h, w = x.shape
        xp = nn.backend.get_array_module(x)
        padded = xp.zeros((n, h + 2, w + 2, c), dtype=x.dtype)
        padded[:, 1:-1, 1:-1, :] = x.transpose(0, 2, 3, 1)             # channels-last
        shifted = [padded[:, a:a + h, b:b + w] for a in range(3) for b in range(3)]
        y = nn.backend.elementwise(xp, blur_kernel)(*shifted, x.dtype.type(1.0 / 16.0))
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        return Blur()(gy)


def blur_kernel(x00, x01, x02, x10, x11, x12, x20, x21, x22, scale):
    """y = sum_{a, b} k[a] k[b] x_ab / 16 with k = (1, 2, 1), x_ab = x[i + a - 1, j + b - 1]: one
    kernel on the GPU. Rows first (a column's up + down + 2 x middle), then the three columns
    (left + right + 2 x middle), then the scale 1/16 (scale)."""
    left, middle, right = x00 + x20 + x10 + x10, x01 + x21 + x11 + x11, x02 + x22 + x12 + x12
    return (left + right + middle + middle) * scale


def blur(x):
    """The [1, 2, 1] low-pass filter (Blur) that StyleGAN applies after every upsampling convolution
    in G and before every downsampling one in D (Karras et al. 2019, appendix C; Zhang 2019, "Making
    convolutional networks shift-invariant again"): without it, nearest-neighbour upsampling
    leaves a grid of stripes."""
    return Blur()(x)


def channel_view(v):
    """A per-channel vector (C,) reshaped to (1, C, 1, 1) so that it broadcasts over NCHW maps."""
    return v.reshape(1, v.shape[0], 1, 1)


class EqualLinear(nn.Module):
    """y = x @ (w_hat * c).T + b_hat * lrmul, with c = gain / sqrt(in_features) * lrmul."""

    def __init__(self, in_features, out_features, gain=LRELU_GAIN, lrmul=1.0, bias_init=0.0,
                 rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.lrmul = lrmul
        self.scale = gain / math.sqrt(in_features) * lrmul
        stored = rng.standard_normal((out_features, in_features)) / lrmul
        self.weight = nn.Parameter(stored.astype(np.float32))
        self.bias = nn.Parameter(np.full(out_features, bias_init / lrmul, dtype=np.float32))

    def runtime_weight(self):
        return self.weight * self.scale         # w = c w_hat

    def forward(self, x):
        bias = self.bias * self.lrmul if self.lrmul != 1 else self.bias     # (b_hat * 1 = b_hat)
        return F.linear(x, self.runtime_weight(), bias)                     # x w^T + lrmul b_hat


class EqualConv2d(nn.Module):
    """'Same' convolution with weight w_hat * c, c = gain / sqrt(in_channels * k * k)."""

    def __init__(self, in_channels, out_channels, kernel_size, gain=LRELU_GAIN, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.padding = kernel_size // 2
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(rng.standard_normal(shape).astype(np.float32))
        self.bias = nn.Parameter(np.zeros(out_channels, dtype=np.float32))

    def runtime_weight(self):
        return self.weight * self.scale         # w = c w_hat, c = gain / sqrt(fan_in)

    def forward(self, x):
        return F.conv2d(x, self.runtime_weight(), self.bias, padding=self.padding)


class NoiseInjection(nn.Module):
    """x + weight[c] * noise, one single-channel noise image per sample shared by all channels
    (Karras et al. 2019, section 3.2 and figure 1 'B'). The weights start at 0, so the noise is
    switched on only as far as training finds it useful."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(np.zeros(channels, dtype=np.float32))

    def forward(self, x, noise):
        return x + channel_view(self.weight) * noise      # x[n, c] + B[c] * noise[n, 0]


class StyleModulation(nn.Module):
    """Instance norm followed by the style of w (Karras et al. 2019, equation 1, AdaIN):

        AdaIN(x, y) = (y_s + 1) * (x - mu(x)) / sigma(x) + y_b,       (y_s, y_b) = A(w)

    A is an equalised linear map with gain 1 and zero bias, so y_s starts near 0 and the scale
    y_s + 1 near 1 (an AdaIN scale that starts near 0 is a reported cause of failure)."""

    def __init__(self, channels, w_dim, rng=None):
        super().__init__()
        self.channels = channels
        self.affine = EqualLinear(w_dim, 2 * channels, gain=1.0, rng=rng)

    def forward(self, x, w):
        style = self.affine(w)                  # (y_s, y_b) = A(w)
        scale = style[:, :self.channels] + 1.0  # y_s + 1
        bias = style[:, self.channels:]         # y_b
        return F.adain(x, scale, bias)          # (y_s + 1) (x - mu(x)) / sigma(x) + y_b
