"""nn.functional (imported as F): the layer-level operations, with PyTorch's names and defaults.

Most ops are compositions of the primitives in ops.py, so their gradients (and second
gradients, for gradient penalties) come for free. A few get a Function of their own because
that is much faster or numerically safer; their `backward` is still written with Tensor
operations, so it can be differentiated again.

On the GPU their element-wise parts run as fused kernels (the *_kernel functions here, through
nn.backend.elementwise: one launch each instead of one per operation); on the CPU the same
functions run as plain NumPy, the same operations in the same order.

Layout is NCHW. Reading order: linear, activations, normalisation, dropout, resampling,
joining and padding, losses, then the StyleGAN helpers (pixel norm, minibatch stddev).
"""
import numpy as np

from . import init, ops, plain
from .arguments import int_pair
from .backend import device_of, elementwise, get_array_module
from .conv import conv2d, conv_transpose2d  # noqa: F401  (re-exported: F.conv2d, F.conv_transpose2d)
from .ops import broadcast_to, concat, exp, log, sqrt, where  # noqa: F401  (re-exported)
from .tensor import Function, Tensor, array_of, is_grad_enabled

# ---- linear ------------------------------------------------------------------------------------


def linear(x, weight, bias=None):
    """y = x W^T + b, with weight W of shape (out, in), bias b of shape (out,) and x (..., in)."""
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight {weight.shape} expects {in_features}")
    lead_shape = x.shape[:-1]
    y = x.reshape(-1, in_features) @ weight.T
    if bias is not None:
        if bias.shape != (out_features,):
            raise ValueError(f"linear: bias shape {bias.shape} should be ({out_features},)")
        y = y + bias
    return y.reshape(lead_shape + (out_features,))


# ---- activations -------------------------------------------------------------------------------

class _ScaleBy(Function):
    """y = x * factor, for a constant array `factor` (a mask): dy/dx = factor.

    The backward is the same operation, so it can be differentiated again; the second
    derivative with respect to x is 0 (the factor does not depend on x).
    """

    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def backward(self, gy):
        return _ScaleBy(self.factor)(gy)


class _ReLU(Function):
    """y = max(x, 0); dy/dx = 1 where x > 0, else 0 (the mask, made with y: relu_kernel)."""

    def forward(self, x):
        y, self.mask = elementwise(get_array_module(x), relu_kernel)(x)
        return y

    def backward(self, gy):
        return _ScaleBy(self.mask)(gy)


def relu_kernel(x):
    """(y, mask) = (max(x, 0), 1 where x > 0 else 0): one kernel on the GPU."""
    return get_array_module(x).maximum(x, 0), (x > 0).astype(x.dtype)


class _LeakyReLU(Function):
    """y = x where x > 0, else negative_slope * x; dy/dx is 1 or negative_slope (the factor,
    made with y: leaky_relu_kernel)."""

    def __init__(self, negative_slope):
        self.negative_slope = negative_slope

    def forward(self, x):
        slope = x.dtype.type(self.negative_slope)
        y, self.factor = elementwise(get_array_module(x), leaky_relu_kernel)(
            x, slope, x.dtype.type(1.0 - self.negative_slope))
        return y

    def backward(self, gy):
        return _ScaleBy(self.factor)(gy)


def leaky_relu_kernel(x, slope, one_minus_slope):
    """(y, factor) = (x * factor, 1 where x > 0 else slope): one kernel on the GPU. The factor is
    mask * (1 - slope) + slope, cheaper on the CPU than xp.where (which branches per element and
    runs ~20x slower on random signs)."""
    factor = (x > 0).astype(x.dtype) * one_minus_slope + slope
    return x * factor, factor


class _Tanh(Function):
    """y = tanh(x); dy/dx = 1 - y^2 (written with the output Tensor, so it is differentiable)."""

    def forward(self, x):
        return get_array_module(x).tanh(x)

    def backward(self, gy):
        y = self.output()
        return gy * (1.0 - y * y)


class _Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so it never overflows;
    dy/dx = y (1 - y)."""

    def forward(self, x):
        return elementwise(get_array_module(x), sigmoid_kernel)(x, x.dtype.type(0.5))

    def backward(self, gy):
        y = self.output()
        return gy * y * (1.0 - y)


class _Softplus(Function):
    """y = log(1 + exp(beta x)) / beta, computed as (max(z, 0) + log1p(exp(-|z|))) / beta with
    z = beta x (never overflows); dy/dx = sigmoid(beta x)."""

    def __init__(self, beta):
        self.beta = beta

    def forward(self, x):
        xp = get_array_module(x)
        z = x * self.beta if self.beta != 1 else x
        y = elementwise(xp, softplus_kernel)(z)
        if self.beta != 1:
            y *= 1.0 / self.beta
        return y

    def backward(self, gy):
        x, = self.inputs
        z = x * self.beta if self.beta != 1 else x
        return gy * sigmoid(z)


def softplus_kernel(z):
    """y = log1p(exp(-|z|)) + max(z, 0) = log(1 + e^z), never overflowing: one kernel on the GPU."""
    xp = get_array_module(z)
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0)


def sigmoid_kernel(x, half):
    """y = tanh(x * 0.5) * 0.5 + 0.5 (half = 0.5 in x's dtype): one kernel on the GPU."""
    return get_array_module(x).tanh(x * half) * half + half


def relu(x):
    """y = max(x, 0)."""
    return _ReLU()(x)


def leaky_relu(x, negative_slope=0.01):
    """y = x for x > 0, negative_slope * x otherwise."""
    return _LeakyReLU(negative_slope)(x)


def tanh(x):
    """y = tanh(x) = (e^x - e^-x) / (e^x + e^-x)."""
    return _Tanh()(x)


def sigmoid(x):
    """y = 1 / (1 + e^-x)."""
    return _Sigmoid()(x)


def softplus(x, beta=1):
    """y = log(1 + e^(beta x)) / beta, a smooth ReLU (stable for large |x|)."""
    return _Softplus(beta)(x)


# ---- normalisation -----------------------------------------------------------------------------

class _Standardize(Function):
    """x_hat = (x - mean) / sqrt(var + eps), mean and biased variance over `axes` (per slice).

    One fused pass instead of ~10 small ops: batch norm is on the DCGAN's hot path. The batch
    statistics stay available as `.mean` and `.var` (raw arrays) for running averages.

    Backward, with M the number of values per slice and averages over `axes`:
        gx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)
    For a plain backward the saved x_hat and variance are used: two sums over raw arrays and
    one kernel (standardize_grad_kernel). When the backward itself is being recorded
    (create_graph=True), x_hat and 1/std are rebuilt from x with primitive ops, so that the
    formula above is differentiable with respect to x as well.
    On the GPU the forward is two reductions and two kernels (_batch_statistics,
    standardize_kernel).
    """

    def __init__(self, axes, eps):
        self.axes, self.eps = axes, eps

    def forward(self, x):
        self.mean, self.var, centred = _batch_statistics(x, self.axes)
        return elementwise(get_array_module(x), standardize_kernel)(
            centred, self.var, x.dtype.type(self.eps))

    def backward(self, g):
        x, = self.inputs
        if not is_grad_enabled():  # a plain backward: raw arrays, the saved x_hat and 1/std
            g, x_hat = g.data, self.output().data
            sum_g = g.sum(axis=self.axes, keepdims=True)
            sum_g_x_hat = (g * x_hat).sum(axis=self.axes, keepdims=True)
            inv_count = g.dtype.type(1.0 / (g.size // sum_g.size))
            return Tensor(elementwise(get_array_module(g), standardize_grad_kernel)(
                g, x_hat, sum_g, sum_g_x_hat, self.var, g.dtype.type(self.eps), inv_count))
        x_hat, inv_std = _standardize_composed(x, self.axes, self.eps)   # create_graph=True
        mean_g = g.mean(axis=self.axes, keepdims=True)
        mean_g_x_hat = (g * x_hat).mean(axis=self.axes, keepdims=True)
        return (g - mean_g - x_hat * mean_g_x_hat) * inv_std


def standardize_kernel(centred, var, eps):
    """x_hat = centred * (1 / sqrt(var + eps)): one kernel on the GPU."""
    return centred * (1.0 / get_array_module(var).sqrt(var + eps))


def standardize_grad_kernel(g, x_hat, sum_g, sum_g_x_hat, var, eps, inv_count):
    """gx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps), each mean a sum times
    1/M = inv_count (_Standardize's backward, the sums given): one kernel on the GPU."""
    inv_std = 1.0 / get_array_module(var).sqrt(var + eps)
    return (g - sum_g * inv_count - x_hat * (sum_g_x_hat * inv_count)) * inv_std


def _batch_statistics(x, axes):
    """mean and biased variance of a raw array over `axes` (kept as size-1 axes), and x - mean:
    two reductions and a fused kernel (centre_kernel)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred, squared = elementwise(get_array_module(x), centre_kernel)(x, mean)
    return mean, squared.mean(axis=axes, keepdims=True), centred


def centre_kernel(x, mean):
    """(x - mean, (x - mean)^2): one kernel on the GPU."""
    centred = x - mean
    return centred, get_array_module(x).square(centred)


def _standardize_composed(x, axes, eps):
    """x_hat and 1/sqrt(var + eps) as compositions of primitives (differentiable twice)."""
    centred = x - x.mean(axis=axes, keepdims=True)
    inv_std = (centred * centred).mean(axis=axes, keepdims=True) + eps
    inv_std = inv_std ** -0.5
    return centred * inv_std, inv_std


def _per_channel(value, x, name):
    """A (C,) tensor reshaped to broadcast over x's channel axis: (1, C) or (1, C, 1, 1)."""
    channels = x.shape[1]
    if value.shape != (channels,):
        raise ValueError(f"{name} has shape {value.shape}, expected ({channels},) for an input "
                         f"of shape {x.shape}")
    return value.reshape((1, channels) + (1,) * (x.ndim - 2))


def _update_running_stat(running, batch_value, momentum, x, value_scale=1.0):
    """running <- (1 - momentum) * running + momentum * batch_value * value_scale, in place, no
    gradient (value_scale = 1 is exact: the same bits as without it)."""
    array = array_of(running)
    if device_of(array) != x.device:
        raise ValueError(f"batch_norm: running statistics are on {device_of(array)} but the input "
                         f"is on {x.device}; move the module with .to()")
    if array.shape != (x.shape[1],):
        raise ValueError(f"batch_norm: running statistic of shape {array.shape}, expected "
                         f"({x.shape[1]},)")
    value = batch_value.reshape(array.shape)
    elementwise(get_array_module(array), running_average_kernel)(
        array, value, value.dtype.type(value_scale), value.dtype.type(momentum),
        array.dtype.type(1.0 - momentum))


def running_average_kernel(running, value, value_scale, momentum, one_minus_momentum):
    """running = running * (1 - momentum) + momentum * (value * value_scale), in place: one
    kernel on the GPU (value_scale turns the biased variance into the unbiased one)."""
    running *= one_minus_momentum
    running += momentum * (value * value_scale)


class _BatchNorm(Function):
    """Batch norm in training with its affine map, y = weight * x_hat + bias, as ONE Function:

        x_hat = (x - mean) / sqrt(var + eps)      (batch mean and biased variance per channel)

    Written as primitive ops it made ~20 passes over the activations (and as many temporaries)
    on the DCGAN's hot path; fused it is ~3x faster (benchmarks/README.md). With M values per
    channel and sums over the batch (and H, W) axes, the backward is (Ioffe & Szegedy 2015, sec. 3)

        g_bias = sum(g)      g_weight = sum(g * x_hat)
        g_x    = weight / sqrt(var + eps) * (g - g_bias / M - x_hat * g_weight / M)

    computed on the saved x_hat for a plain backward (two sums and one kernel,
    batch_norm_grad_kernel), and on Tensors rebuilt from x with primitive ops when the backward
    itself is recorded (create_graph=True), so that it is differentiable again. The forward is
    two reductions and two kernels on the GPU (_batch_statistics, batch_norm_kernel). The batch
    statistics stay available as `.mean` and `.var` for the running averages.
    """

    def __init__(self, axes, eps):
        self.axes, self.eps = axes, eps

    def forward(self, x, weight, bias):
        self.mean, self.var, centred = _batch_statistics(x, self.axes)
        channel = (1, -1) + (1,) * (x.ndim - 2)
        self.x_hat, y = elementwise(get_array_module(x), batch_norm_kernel)(
            centred, self.var, x.dtype.type(self.eps), weight.reshape(channel),
            bias.reshape(channel))
        return y

    def backward(self, g):
        x, weight, _ = self.inputs
        if is_grad_enabled():  # create_graph=True: keep the dependence on x and weight
            x_hat, inv_std = _standardize_composed(x, self.axes, self.eps)
            g_x, g_weight, g_bias = _batch_norm_backward(g, x_hat, inv_std, weight, self.axes)
            return g_x, g_weight, g_bias
        g, channel = g.data, (1, -1) + (1,) * (g.ndim - 2)      # a plain backward: raw arrays
        g_bias = g.sum(axis=self.axes)
        g_weight = (g * self.x_hat).sum(axis=self.axes)
        g_x = elementwise(get_array_module(g), batch_norm_grad_kernel)(
            g, self.x_hat, g_bias.reshape(channel), g_weight.reshape(channel),
            weight.data.reshape(channel), self.var, g.dtype.type(self.eps),
            g.dtype.type(1.0 / (g.size // g.shape[1])))
        return Tensor(g_x), Tensor(g_weight), Tensor(g_bias)


def batch_norm_kernel(centred, var, eps, weight, bias):
    """(x_hat, y) = (centred / sqrt(var + eps), x_hat * weight + bias): one kernel on the GPU."""
    x_hat = centred * (1.0 / get_array_module(var).sqrt(var + eps))
    return x_hat, x_hat * weight + bias


def batch_norm_grad_kernel(g, x_hat, g_bias, g_weight, weight, var, eps, inv_count):
    """g_x = (g - g_bias / M - x_hat * g_weight / M) * weight / sqrt(var + eps), with
    1/M = inv_count (_batch_norm_backward's g_x, the sums given): one kernel on the GPU."""
    inv_std = 1.0 / get_array_module(var).sqrt(var + eps)
    return (g - g_bias * inv_count - x_hat * (g_weight * inv_count)) * (weight * inv_std)


def _batch_norm_backward(g, x_hat, inv_std, weight, axes):
    """(g_x, g_weight, g_bias) of _BatchNorm; works on arrays and on Tensors alike."""
    count = g.size // g.shape[1]
    channel = (1, -1) + (1,) * (g.ndim - 2)
    g_bias = g.sum(axis=axes)                                   # sum(g)
    g_weight = (g * x_hat).sum(axis=axes)                       # sum(g * x_hat)
    g_x = (g - (g_bias * (1.0 / count)).reshape(channel)
           - x_hat * (g_weight * (1.0 / count)).reshape(channel)) * (weight.reshape(channel) * inv_std)
    return g_x, g_weight, g_bias


class _SyncBatchNorm(Function):
    """_BatchNorm for one process of a data-parallel run: the statistics are those of the GLOBAL
    batch, every process's share together (experiment/distributed.py), so that N processes
    compute what one process computes on the whole batch. all_sum(array) sums an array over the
    processes (one MPI Allreduce). With M values per channel in the global batch:

        forward    mean = all_sum(sum x) / M,   var = all_sum(sum (x - mean)^2) / M
        backward   g_x = weight / sqrt(var + eps) * (g - all_sum(sum g) / M
                                                      - x_hat * all_sum(sum g x_hat) / M)

    (Ioffe & Szegedy's backward, with its two sums over the global batch: 2 all-reduces forward,
    1 backward, of C + 1 or 2C numbers.) g_weight = sum g x_hat and g_bias = sum g stay this
    process's sums: the optimizer's gradient average (distributed.averaging) combines them as
    every other gradient. Each process's loss is the mean over its own share, so its g is N times
    the one-process g of its rows, and so are its g_x and sums; the average divides N back out.
    No double backward (create_graph=True): the critics with a gradient penalty have no batch norm.
    """

    def __init__(self, axes, eps, all_sum):
        self.axes, self.eps, self.all_sum = axes, eps, all_sum

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        channel = (1, -1) + (1,) * (x.ndim - 2)
        local = x.size // x.shape[1]
        sums = self.all_sum(xp.concatenate([x.sum(axis=self.axes),
                                            xp.asarray([local], dtype=x.dtype)]))
        self.count = int(round(float(sums[-1])))     # M (a host read: one number per layer)
        self.mean = (sums[:-1] / self.count).reshape(channel)
        x_hat = x - self.mean
        self.var = (self.all_sum(xp.square(x_hat).sum(axis=self.axes)) / self.count).reshape(channel)
        self.inv_std = 1.0 / xp.sqrt(self.var + self.eps)
        x_hat *= self.inv_std
        self.x_hat = x_hat
        return x_hat * weight.reshape(channel) + bias.reshape(channel)

    def backward(self, g):
        if is_grad_enabled():
            raise RuntimeError("synchronised batch norm has no double backward (create_graph=True)")
        _, weight, _ = self.inputs
        xp = get_array_module(g.data)
        g, channel, count = g.data, (1, -1) + (1,) * (g.ndim - 2), self.count
        g_bias = g.sum(axis=self.axes)                               # this process's sum g
        g_weight = (g * self.x_hat).sum(axis=self.axes)              # and sum g x_hat
        every = self.all_sum(xp.concatenate([g_bias, g_weight]))     # the global batch's
        c = len(g_bias)
        g_x = (g - (every[:c] * (1.0 / count)).reshape(channel)
               - self.x_hat * (every[c:] * (1.0 / count)).reshape(channel)) \
            * (weight.data.reshape(channel) * self.inv_std)
        return Tensor(g_x), Tensor(g_weight), Tensor(g_bias)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, all_sum=None):
    """Batch normalisation over (N,) or (N, H, W) for inputs (N, C) or (N, C, H, W):

        y = weight * (x - mean) / sqrt(var + eps) + bias      (per channel)

    training=True: mean and the biased variance of this batch normalise x; the running
    statistics (Tensors or arrays of shape (C,), may be None) are updated in place with
    running = (1 - momentum) * running + momentum * batch statistic, using the UNBIASED
    variance for running_var (as PyTorch does).
    training=False: the running statistics normalise x.
    all_sum: in training, the statistics of the global batch of a data-parallel run
    (_SyncBatchNorm; all_sum(array) sums an array over its processes); needs weight and bias.
    Plain version (mean, variance and division as primitive ops): nn/plain/norms.py batch_norm.
    """
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm expects (N, C) or (N, C, H, W) input, got shape {x.shape}")
    if training and all_sum is not None:
        if weight is None or bias is None:
            raise ValueError("synchronised batch_norm needs weight and bias (affine=True)")
        _per_channel(weight, x, "batch_norm weight")
        _per_channel(bias, x, "batch_norm bias")
        normalise = _SyncBatchNorm((0,) if x.ndim == 2 else (0, 2, 3), eps, all_sum)
        y = normalise(x, weight, bias)
        _update_running_stats(normalise, x, running_mean, running_var, momentum, normalise.count)
        return y
    if plain.enabled:                                  # with nn.plain.on()
        return plain.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    if training and weight is not None and bias is not None:   # the usual case: one Function
        _per_channel(weight, x, "batch_norm weight")                  # shape checks
        _per_channel(bias, x, "batch_norm bias")
        normalise = _BatchNorm(axes, eps)
        y = normalise(x, weight, bias)
        _update_running_stats(normalise, x, running_mean, running_var, momentum)
        return y
    if training:
        standardize = _Standardize(axes, eps)
        x_hat = standardize(x)
        _update_running_stats(standardize, x, running_mean, running_var, momentum)
    else:
        x_hat = _batch_norm_eval(x, running_mean, running_var, eps)
    if weight is not None:
        x_hat = x_hat * _per_channel(weight, x, "batch_norm weight")
    if bias is not None:
        x_hat = x_hat + _per_channel(bias, x, "batch_norm bias")
    return x_hat


def _update_running_stats(normalise, x, running_mean, running_var, momentum, count=None):
    """Fold the batch statistics `normalise` computed into the running averages (if given);
    `count`: the values per channel they came from (x's own unless given)."""
    count = x.size // x.shape[1] if count is None else count
    if count < 2:
        raise ValueError(f"batch_norm in training needs more than 1 value per channel, got "
                         f"input shape {x.shape}")
    if running_mean is not None:
        _update_running_stat(running_mean, normalise.mean, momentum, x)
    if running_var is not None:
        _update_running_stat(running_var, normalise.var, momentum, x, count / (count - 1))


def _batch_norm_eval(x, running_mean, running_var, eps):
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm with training=False needs running_mean and running_var")
    xp = get_array_module(x.data)
    mean = array_of(running_mean).astype(x.dtype, copy=False)
    inv_std = 1.0 / xp.sqrt(array_of(running_var).astype(x.dtype, copy=False) + eps)
    mean = _per_channel(Tensor(mean), x, "running_mean")
    inv_std = _per_channel(Tensor(inv_std), x, "running_var")
    return (x - mean) * inv_std


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    """Instance normalisation of (N, C, H, W): each sample and channel separately,

        y = weight * (x - mean_hw) / sqrt(var_hw + eps) + bias

    with the mean and biased variance over H and W; weight and bias (C,) are optional.
    Plain version (primitive ops): nn/plain/norms.py instance_norm.
    """
    if x.ndim != 4:
        raise ValueError(f"instance_norm expects (N, C, H, W) input, got shape {x.shape}")
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"instance_norm needs more than 1 pixel per channel, got {x.shape}")
    if plain.enabled:                                  # with nn.plain.on()
        return plain.instance_norm(x, weight, bias, eps)
    y = _Standardize((2, 3), eps)(x)
    if weight is not None:
        y = y * _per_channel(weight, x, "instance_norm weight")
    if bias is not None:
        y = y + _per_channel(bias, x, "instance_norm bias")
    return y


def adain(x, scale, bias, eps=1e-5):
    """Adaptive instance normalisation (StyleGAN): a per-sample style for each channel,

        y = scale[:, :, None, None] * (x - mean_hw) / sqrt(var_hw + eps) + bias[:, :, None, None]

    x (N, C, H, W); scale and bias (N, C); mean and biased variance over H and W.
    """
    if x.ndim != 4:
        raise ValueError(f"adain expects (N, C, H, W) input, got shape {x.shape}")
    n, c = x.shape[:2]
    for name, value in (("scale", scale), ("bias", bias)):
        if value.shape != (n, c):
            raise ValueError(f"adain: {name} has shape {value.shape}, expected ({n}, {c}) for "
                             f"an input of shape {x.shape}")
    y = _Standardize((2, 3), eps)(x)
    return y * scale.reshape(n, c, 1, 1) + bias.reshape(n, c, 1, 1)


# ---- dropout -----------------------------------------------------------------------------------

_gpu_generators = {}  # GPU number -> its one cuRAND generator, made on first use


def _gpu_generator(xp, seed):
    """This GPU's one random generator, reseeded with `seed` (a non-negative int).

    A cuRAND Philox generator: counter-based, so reseeding it costs nothing, unlike creating a
    generator (which allocates and initialises random states on the GPU)."""
    device = xp.cuda.get_device_id()
    if device not in _gpu_generators:
        make = xp.random.RandomState          # imports cupy.cuda.curand too
        _gpu_generators[device] = make(method=xp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
    generator = _gpu_generators[device]
    generator.seed(np.uint64(seed))
    return generator


def _uniform(shape, dtype, xp, rng=None):
    """U[0, 1) values of `shape` on xp's device, from one generator per device.

    rng=None draws from nn.init's shared generator (seeded by nn.manual_seed, saved by
    nn.get_rng_state); an int is a seed (the same seed, the same values); a NumPy Generator is
    drawn from. On the CPU the values come from that NumPy generator itself. On the GPU it gives
    one seed for the GPU's one generator, so the NumPy generator's state still decides every
    value and a checkpoint of it resumes exactly. A cupy.random Generator is drawn from as it is.
    A generator of a data-parallel run (experiment/distributed.py's Dealing) draws the values of
    the global batch, N times as many rows, and keeps this process's rows (`for_global_batch`),
    on either device.
    """
    if rng is None:
        rng = init.default_generator()
    if hasattr(rng, "for_global_batch"):
        whole = np.random.Generator(rng.bit_generator)          # the same bits, drawn plainly
        return rng.for_global_batch(shape, lambda shape: _uniform(shape, dtype, xp, whole))
    if xp is np:
        if isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(int(rng))
        return rng.random(shape, dtype=dtype)
    if isinstance(rng, np.random.Generator):
        rng = int(rng.integers(2 ** 63))
    if isinstance(rng, (int, np.integer)):
        return _gpu_generator(xp, int(rng)).random_sample(shape, dtype=dtype)
    return rng.random(shape, dtype=dtype)


def standard_normal(shape, dtype, xp, rng):
    """N(0, 1) values of `shape` on xp's device, decided by the NumPy Generator `rng` as _uniform's
    are: on the CPU drawn from `rng` itself; on the GPU by the GPU's one cuRAND generator,
    reseeded with one integer drawn from `rng` (nothing crosses from the host but that seed). So
    `rng`'s state, saved in a checkpoint, decides the values on both devices and a resumed run
    draws what the uninterrupted run drew (StyleGAN's per-layer noise, models/stylegan.py). A
    Dealing generator (experiment/distributed.py) draws the global batch and keeps this
    process's rows of the first axis, as in _uniform."""
    if hasattr(rng, "for_global_batch"):
        whole = np.random.Generator(rng.bit_generator)          # the same bits, drawn plainly
        return rng.for_global_batch(shape, lambda shape: standard_normal(shape, dtype, xp, whole))
    if xp is np:
        return rng.standard_normal(shape, dtype=dtype)
    return _gpu_generator(xp, int(rng.integers(2 ** 63))).standard_normal(shape, dtype=dtype)


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout: y = x * mask / (1 - p), mask[i] = 0 with probability p, else 1.

    In eval (training=False) or with p = 0 it returns x unchanged. `rng` picks the random
    source (see _uniform): None for nn.init's shared generator (so nn.manual_seed makes masks
    repeatable), an int seed (the same seed gives the same mask: reproducible, as in tests), or
    a generator. The mask is drawn on x's device.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return _Dropout(_uniform(x.shape, x.dtype, get_array_module(x.data), rng), p)(x)


class _Dropout(Function):
    """y = x * mask, mask = (uniform >= p) / (1 - p), both made by one kernel (dropout_kernel);
    dy/dx = mask, so the backward is _ScaleBy(mask), like _LeakyReLU's."""

    def __init__(self, uniform, p):
        self.uniform, self.p = uniform, p

    def forward(self, x):
        scalar = x.dtype.type
        y, self.mask = elementwise(get_array_module(x), dropout_kernel)(
            x, self.uniform, scalar(self.p), scalar(1.0 / (1.0 - self.p)))
        self.uniform = None
        return y

    def backward(self, gy):
        return _ScaleBy(self.mask)(gy)


def dropout_kernel(x, uniform, p, scale):
    """(y, mask) = (x * mask, (uniform >= p) * scale), scale = 1 / (1 - p): one GPU kernel."""
    mask = (uniform >= p).astype(x.dtype) * scale
    return x * mask, mask


# ---- resampling --------------------------------------------------------------------------------

class _UpsampleNearest(Function):
    """y[n, c, i, j] = x[n, c, i // sh, j // sw]: every pixel copied into an sh x sw block.
    Its gradient sums gy over each block, which is _SumPool; and _SumPool's gradient is this."""

    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        (sh, sw), (n, c, h, w) = self.factor, x.shape
        y = get_array_module(x).empty((n, h, sh, w, sw, c), dtype=x.dtype)   # channels-last
        y[...] = x.transpose(0, 2, 3, 1)[:, :, None, :, None, :]
        return y.reshape(n, h * sh, w * sw, c).transpose(0, 3, 1, 2)

    def backward(self, gy):
        return _SumPool(self.factor)(gy)


class _SumPool(Function):
    """y[n, c, i, j] = sum of x over the sh x sw block at (i*sh, j*sw) (non-overlapping blocks;
    H and W multiples of the block). Its gradient copies gy into each block: _UpsampleNearest."""

    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        (sh, sw), x = self.factor, x.transpose(0, 2, 3, 1)       # channels-last view
        offsets = [x[:, a::sh, b::sw] for a in range(sh) for b in range(sw)]  # strided slices
        if len(offsets) == 1:
            return offsets[0].copy().transpose(0, 3, 1, 2)
        y = elementwise(get_array_module(x), sum_kernel)(*offsets)
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        return _UpsampleNearest(self.factor)(gy)


def sum_kernel(first, *others):
    """first + others[0] + others[1] + ..., added in that order: one kernel on the GPU."""
    total = first
    for other in others:
        total = total + other
    return total


def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor s:
    y[n, c, i, j] = x[n, c, i // s, j // s]. Its gradient sums gy over each s x s block."""
    if not isinstance(scale_factor, (int, np.integer)) or scale_factor < 1:
        raise ValueError(f"upsample_nearest needs a positive integer scale_factor, got "
                         f"{scale_factor!r}")
    if x.ndim != 4:
        raise ValueError(f"upsample_nearest expects (N, C, H, W) input, got shape {x.shape}")
    s = int(scale_factor)
    return _UpsampleNearest((s, s))(x)


def avg_pool2d(x, kernel_size, stride=None):
    """Average of each kh x kw window of (N, C, H, W), windows `stride` apart (default: the
    kernel size, i.e. non-overlapping). No padding; leftover rows/columns are dropped
    (PyTorch's floor mode): H_out = (H - kh) // stride + 1."""
    if x.ndim != 4:
        raise ValueError(f"avg_pool2d expects (N, C, H, W) input, got shape {x.shape}")
    kh, kw = int_pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else int_pair(stride, "stride", 1)
    n, c, h, w = x.shape
    if h < kh or w < kw:
        raise ValueError(f"avg_pool2d: kernel {(kh, kw)} is larger than the input {x.shape}")
    h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
    if (sh, sw) == (kh, kw):  # non-overlapping windows: the sum of each block, / its size
        if (h, w) != (h_out * kh, w_out * kw):
            x = x[:, :, :h_out * kh, :w_out * kw]
        return _SumPool((kh, kw))(x) * (1.0 / (kh * kw))
    # overlapping windows: add up one strided slice per kernel offset (i, j)
    offsets = [x[:, :, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]
               for i in range(kh) for j in range(kw)]
    total = offsets[0]
    for window in offsets[1:]:
        total = total + window
    return total * (1.0 / (kh * kw))


# ---- joining and padding -----------------------------------------------------------------------

def pad(x, padding, value=0):
    """Constant padding in PyTorch's order: `padding` lists (before, after) pairs starting from
    the LAST axis, e.g. (left, right) or (left, right, top, bottom) for NCHW images."""
    padding = tuple(int(p) for p in padding)
    if len(padding) % 2 or len(padding) > 2 * x.ndim:
        raise ValueError(f"pad: padding {padding} must have an even length of at most "
                         f"{2 * x.ndim} for an input of shape {x.shape}")
    if any(p < 0 for p in padding):
        raise ValueError(f"pad: negative padding {padding} is not supported")
    widths = [(0, 0)] * x.ndim
    for k in range(len(padding) // 2):
        widths[x.ndim - 1 - k] = (padding[2 * k], padding[2 * k + 1])
    return ops.Pad(tuple(widths), value)(x)


cat = concat   # F.concat (torch.cat) is ops.concat, imported above; torch's name for it too


def stack(tensors, axis=0):
    """Join same-shaped tensors along a NEW axis (torch.stack)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shape = tensors[0].shape
    if any(t.shape != shape for t in tensors):
        raise ValueError(f"stack needs tensors of one shape, got {[t.shape for t in tensors]}")
    axis = int(axis) % (len(shape) + 1)
    new_shape = shape[:axis] + (1,) + shape[axis:]
    return concat([t.reshape(new_shape) for t in tensors], axis)


# ---- softmax and losses ------------------------------------------------------------------------

class _LogSoftmax(Function):
    """y = x - log(sum(exp(x))) along `axis`, computed as (x - m) - log(sum(exp(x - m))) with
    m = max(x) so that exp never overflows; gx = gy - softmax(x) * sum(gy) with
    softmax = exp(y) (the output Tensor, so the backward is differentiable)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        y = x - x.max(axis=self.axis, keepdims=True)
        y -= xp.log(xp.exp(y).sum(axis=self.axis, keepdims=True))
        return y

    def backward(self, gy):
        softmax_x = exp(self.output())
        return gy - softmax_x * gy.sum(axis=self.axis, keepdims=True)


def log_softmax(x, axis=1):
    """log(softmax(x)) along `axis`, stable via log-sum-exp."""
    return _LogSoftmax(int(axis) % x.ndim)(x)


def softmax(x, axis=1):
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `axis` (= exp(log_softmax(x)))."""
    return exp(log_softmax(x, axis))


_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_loss_args(name, input, target, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    target = ops.as_tensor(target, input)
    if target.shape != input.shape:
        raise ValueError(f"{name}: target shape {target.shape} differs from input shape "
                         f"{input.shape}")
    return target


def mse_loss(input, target, reduction="mean"):
    """Mean squared error: mean((input - target)^2) (or the sum, or per element with "none")."""
    target = _check_loss_args("mse_loss", input, target, reduction)
    difference = input - target
    return _reduce(difference * difference, reduction)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] for logits x, written stably as
    softplus(x) - x t = max(x, 0) - x t + log1p(exp(-|x|))."""
    target = _check_loss_args("binary_cross_entropy_with_logits", logits, target, reduction)
    return _reduce(softplus(logits) - logits * target, reduction)


def _class_indices(target, logits):
    """Check `target` (integer class per position) against logits (N, C, ...); return an
    integer array on the logits' device."""
    target = array_of(target)
    if not hasattr(target, "dtype"):
        target = np.asarray(target)
    if device_of(target) != logits.device:
        raise ValueError(f"cross_entropy: target is on {device_of(target)} but logits are on "
                         f"{logits.device}")
    expected = (logits.shape[0],) + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"cross_entropy: target shape {target.shape} should be {expected} for "
                         f"logits of shape {logits.shape}")
    if target.dtype.kind == "f":
        if not bool((target == target.round()).all()):
            raise ValueError("cross_entropy: target must hold integer class indices")
        target = target.astype(np.int64)
    elif target.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: target must hold integer class indices, got "
                         f"{target.dtype}")
    classes = logits.shape[1]
    on_cpu = device_of(target) == "cpu"      # on the GPU see cross_entropy: no waiting for it
    if on_cpu and target.size and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(f"cross_entropy: target values must lie in [0, {classes})")
    return target


def cross_entropy(logits, target, reduction="mean"):
    """Softmax cross-entropy: -log softmax(logits)[target] at every position, averaged over
    all N (x H x W) positions by default. logits (N, C) with target (N,), or (N, C, H, W)
    with target (N, H, W); targets are integer class indices.

    A target outside [0, C) is a ValueError on the CPU. On the GPU, checking that would make the
    CPU wait for the GPU at every call, so such positions give a nan loss instead (like a CUDA
    device-side assert in PyTorch, the error shows later; run.record stops training on it)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got "
                         f"{reduction!r}")
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy expects logits (N, C) or (N, C, H, W), got {logits.shape}")
    target = _class_indices(target, logits)
    xp = get_array_module(logits.data)
    log_probs = log_softmax(logits, axis=1)
    # pick log_probs[n, target[n, i, j], i, j]: one index array per axis, broadcast together
    positions = [xp.arange(size).reshape((-1,) + (1,) * (target.ndim - 1 - k))
                 for k, size in enumerate(target.shape)]
    picked = log_probs[(positions[0], target) + tuple(positions[1:])]
    if device_of(target) == "gpu":
        picked = where((target >= 0) & (target < logits.shape[1]), picked, float("nan"))
    return _reduce(-picked, reduction)


# ---- StyleGAN helpers ----------------------------------------------------------------------------

def pixel_norm(x, eps=1e-8):
    """Pixel-wise feature normalisation (ProGAN/StyleGAN): each feature vector (axis 1) is
    scaled to unit root-mean-square: y = x / sqrt(mean(x^2 over axis 1) + eps)."""
    return x / sqrt((x * x).mean(axis=1, keepdims=True) + eps)


def minibatch_stddev(x, group_size=4):
    """Minibatch standard deviation (ProGAN/StyleGAN) for (N, C, H, W) input.

    Samples are split into groups of G = min(group_size, N) (sample n is in group n mod N/G).
    In each group: the standard deviation over the G samples of every feature,
    sqrt(var + 1e-8), averaged over C, H, W into one number, which is appended to each
    sample of the group as an extra feature map: output (N, C + 1, H, W).
    """
    if x.ndim != 4:
        raise ValueError(f"minibatch_stddev expects (N, C, H, W) input, got shape {x.shape}")
    n, c, h, w = x.shape
    group = min(group_size, n)
    if n % group:
        raise ValueError(f"minibatch_stddev: batch size {n} must be divisible by the group size "
                         f"{group}")
    groups = n // group
    grouped = x.reshape(group, groups, c, h, w)
    std = sqrt(grouped.var(axis=0) + 1e-8)  # (groups, C, H, W)
    per_group = std.mean(axis=(1, 2, 3))  # (groups,)
    feature = broadcast_to(per_group.reshape(1, groups, 1, 1, 1), (group, groups, 1, h, w))
    return concat([x, feature.reshape(n, 1, h, w)], axis=1)
