"""Normalisation layers: BatchNorm2d (used by the DCGAN), and the textbook InstanceNorm2d and AdaIN.

InstanceNorm2d and AdaIN are the plain layers as the papers and PyTorch define them, each with its
gradient checks in tests/test_modules.py. StyleGAN does not use them as they are: its style
layers (models/stylegan_layers.py, StyleModulation) call F.adain directly, with an equalised-
learning-rate affine map A(w) and scale A(w)_s + 1, which is how the official code builds them.
"""
import numpy as np

from .. import functional as F
from .layers import Linear
from .module import Module, Parameter


def _add_affine_parameters(module, num_features, affine):
    """weight (ones) and bias (zeros) of shape (num_features,), or None for both."""
    if affine:
        module.weight = Parameter(np.ones(num_features, dtype=np.float32))
        module.bias = Parameter(np.zeros(num_features, dtype=np.float32))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class BatchNorm2d(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel over (N, H, W).

    Training: mean and biased variance of the batch; the running statistics are updated as
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var_unbiased
    Eval: the running statistics are used instead. Buffers: running_mean (zeros),
    running_var (ones); parameters (when affine): weight (ones), bias (zeros).

    all_sum (None): in a data-parallel run, a function that sums an array over the processes;
    set (experiment/distributed.py's replicate, with --sync-batchnorm), training uses the
    statistics of the global batch (F.batch_norm's all_sum), as PyTorch's SyncBatchNorm.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        self.momentum = momentum
        _add_affine_parameters(self, num_features, affine)
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))
        self.all_sum = None

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=self.momentum, eps=self.eps,
                            all_sum=self.all_sum)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}")


class InstanceNorm2d(Module):
    """y = (x - mean) / sqrt(var + eps) [* weight + bias], mean and biased variance over (H, W)
    for each sample and channel (Ulyanov et al. 2016). No running statistics (PyTorch's default);
    affine=False by default, as in PyTorch. The textbook layer; StyleGAN normalises inside
    F.adain instead."""

    def __init__(self, num_features, eps=1e-5, affine=False):
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        _add_affine_parameters(self, num_features, affine)

    def forward(self, x):
        return F.instance_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class AdaIN(Module):
    """Adaptive instance normalisation (Huang & Belongie 2017; StyleGAN's eq. 1): a style vector
    w sets each channel's scale and bias. The textbook layer with a plain nn.Linear style map;
    StyleGAN's StyleModulation (models/stylegan_layers.py) is the same formula with an
    equalised-learning-rate map.

        (scale, bias) = split(style(w)),   style = Linear(w_dim, 2 * channels)
        y = scale * (x - mean) / sqrt(var + eps) + bias        (F.adain, stats over H and W)

    The style map's bias starts at 1 for the scale half and 0 for the bias half, so the scale
    starts near 1: a scale near 0 would multiply every feature by almost nothing, and training
    would start from a network whose styles erase its input.
    forward(x (N, C, H, W), w (N, w_dim)).
    """

    def __init__(self, channels, w_dim, eps=1e-5):
        super().__init__()
        self.channels, self.w_dim, self.eps = channels, w_dim, eps
        self.style = Linear(w_dim, 2 * channels)
        self.style.bias.data[:channels] = 1.0
        self.style.bias.data[channels:] = 0.0

    def forward(self, x, w):
        style = self.style(w)
        scale, bias = style[:, :self.channels], style[:, self.channels:]
        return F.adain(x, scale, bias, eps=self.eps)

    def extra_repr(self):
        return f"channels={self.channels}, w_dim={self.w_dim}"
