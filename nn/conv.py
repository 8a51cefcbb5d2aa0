"""2-D convolution and transposed convolution: im2col + one matrix product, col2im by slices.

Shapes follow PyTorch (NCHW): x (N, C, H, W), conv2d weight (O, C, kh, kw), conv_transpose2d
weight (C_in, C_out, kh, kw), bias (O,).

conv2d is a cross-correlation. With stride s, padding p and xp the zero-padded input,

    y[n, o, i, j] = b[o] + sum_{c, ky, kx} W[o, c, ky, kx] * xp[n, c, i*s + ky, j*s + kx]
    H_out = (H + 2p - kh) // s + 1

im2col turns this into ONE matrix product. Each row of the "columns" matrix holds the kh*kw*C
input values one output pixel sees:

    cols[(n, i, j), (ky, kx, c)] = xp[n, c, i*s + ky, j*s + kx]        (N*H_out*W_out, kh*kw*C)
    y[(n, i, j), o]              = cols @ Wmat.T,   Wmat[o, (ky, kx, c)] = W[o, c, ky, kx]

conv_transpose2d is the adjoint (the input-gradient) of conv2d: every input pixel scatters a
kh x kw patch into the output. The matrix product runs the other way, and col2im adds each
kernel offset's slice back into a zero-padded output:

    cols[(n, i, j), (ky, kx, o)] = sum_c x[n, c, i, j] * W[c, o, ky, kx]    (x_mat @ Wmat)
    out[n, o, i*s + ky, j*s + kx] += cols[(n, i, j), (ky, kx, o)]    for every (ky, kx)
    then crop p on each side:  H_out = (H - 1)*s - 2p + kh + output_padding

The col2im loop runs over the kh*kw kernel offsets only; each step is one strided slice add,
`out[:, ky : ky + s*H : s, kx : kx + s*W : s, :] += cols[:, :, :, ky, kx, :]`.

Why the arrays are channels-last (NHWC) inside
----------------------------------------------
Speed on a CPU is decided by memory traffic, not arithmetic. If x is stored channels-last, i.e.
memory order (n, y, x, c), then the window of one output pixel is kh rows of kw*C consecutive
floats, and `as_strided` can describe ALL windows as a 6-D view (n, i, j, ky, kx, c) without
copying anything; one `reshape` then copies it into `cols` with long contiguous runs. With NCHW
memory the same copy hops between channel planes and was measured 1.1-2.5x slower than PyTorch.
So, like PyTorch's `channels_last` memory format, this module keeps the public NCHW shape but
returns NCHW *views* of NHWC memory: `y_nhwc.transpose(0, 3, 1, 2)`. NumPy's element-wise ops
keep the memory order of their input, so the next layer again finds `x.transpose(0, 2, 3, 1)`
contiguous and uses it without a copy. Any other layout still works (it is copied once).

What else was measured (DCGAN-64 layers, batch 32, float32, benchmarks/bench_conv.py):
- The matrix products are ~75% of the time and run at NumPy's BLAS speed whichever way round
  they are written (cols @ W.T or (W @ cols.T).T: within 2% on one thread).
- Keeping the columns from forward for the weight gradient: no measurable gain (within noise),
  and it would hold ~60 MB per discriminator pass, so they are rebuilt in backward.
- Doing the work in blocks of a few samples (columns stay in cache): up to 14% faster on one
  thread, but up to 1.6x slower with two BLAS threads on a busy machine (more, smaller matrix
  products, each ending in a thread synchronisation), so not used.
- Reusing one column buffer between calls (no fresh pages): 4-10% on one thread; not worth a
  hidden global buffer in a teaching library.
- col2im by output phase (offsets with the same ky % s write to one contiguous buffer) or by
  batch chunks: no faster than the plain strided slice adds below.

Gradients (each written with these same differentiable ops, so double backprop works):

    conv2d:            gx = conv_transpose2d(gy, W)   gW = conv2d_weight_grad(x, gy)
    conv_transpose2d:  gx = conv2d(gy, W)             gW = conv2d_weight_grad(gy, x)
    conv2d_weight_grad(x, gy) = gW[o, c, ky, kx] = sum_{n,i,j} gy[n, o, i, j] xp[n, c, i*s+ky, j*s+kx]
                              = gy_mat.T @ cols  (one more matrix product on the same columns)
"""
import numpy as np

from .backend import get_array_module
from .tensor import Function


# ---- raw-array kernels (numpy or cupy, NCHW views of NHWC memory) --------------------------------

def _im2col(x, kernel, stride, padding, out_size):
    """cols[(n, i, j), (ky, kx, c)] = xp[n, c, i*sh + ky, j*sw + kx]   (a 2-D copy).

    x: (N, C, H, W) array of any memory layout; out_size: (H_out, W_out).
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, padding, out_size
    n, c, h, w = x.shape
    x = x.transpose(0, 2, 3, 1)                      # NHWC view (free when memory is NHWC)
    if ph or pw:
        padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
        padded[:, ph:ph + h, pw:pw + w, :] = x
        x = padded
    s_n, s_h, s_w, s_c = x.strides                   # in bytes
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(n, ho, wo, kh, kw, c),
        strides=(s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))
    return windows.reshape(n * ho * wo, kh * kw * c)  # the only big copy


def _col2im(cols, out_shape, stride, padding):
    """out[n, i*sh + ky, j*sw + kx, o] += cols[n, i, j, ky, kx, o], then crop the padding.

    cols: (N, H, W, kh, kw, O); out_shape: (H_out, W_out) after cropping. Returns NHWC.
    """
    xp = get_array_module(cols)
    n, h, w, kh, kw, o = cols.shape
    (sh, sw), (ph, pw), (ho, wo) = stride, padding, out_shape
    full_h = max((h - 1) * sh + kh, ph + ho)        # room for every patch and the output window
    full_w = max((w - 1) * sw + kw, pw + wo)
    out = xp.zeros((n, full_h, full_w, o), dtype=cols.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out[:, ky:ky + sh * h:sh, kx:kx + sw * w:sw, :] += cols[:, :, :, ky, kx, :]
    return out[:, ph:ph + ho, pw:pw + wo, :]


def _nhwc_matrix(x):
    """(N, C, H, W) -> (N*H*W, C), free when the memory is already channels-last."""
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _conv2d_forward(cols, weight, out_shape):
    """y = cols @ Wmat.T, returned as an NCHW view of NHWC memory. out_shape: (N, H_out, W_out)."""
    o = weight.shape[0]
    w_mat = weight.transpose(0, 2, 3, 1).reshape(o, -1)   # Wmat[o, (ky, kx, c)]: a tiny copy
    y = cols @ w_mat.T                                     # (N*H_out*W_out, O)
    return y.reshape(*out_shape, o).transpose(0, 3, 1, 2)


def _conv_transpose2d_forward(x, weight, stride, padding, output_padding):
    c, o, kh, kw = weight.shape
    n, _, h, w = x.shape
    out_size = _transpose_out_size(x.shape[2:], (kh, kw), stride, padding, output_padding)
    if stride == (1, 1) and padding[0] < kh and padding[1] < kw and out_size[0] <= h \
            and out_size[1] <= w:
        # With stride 1, scattering every input pixel's patch equals gathering a window around
        # every output pixel: a conv2d with the kernel flipped and its two channel axes swapped,
        #   y[n, o, a, b] = sum_{c, ky, kx} W[c, o, kh-1-ky, kw-1-kx] * xq[n, c, a + ky, b + kx],
        # xq = x zero-padded by kh-1-p. im2col + one product, no col2im. This is the input
        # gradient of every "same" conv (3x3, padding 1); when the output is larger than the
        # input (DCGAN's 1x1 -> 4x4) the gather would multiply mostly padding, so it scatters.
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)     # (O, C, kh, kw)
        pad = (kh - 1 - padding[0], kw - 1 - padding[1])
        cols = _im2col(x, (kh, kw), stride, pad, out_size)
        return _conv2d_forward(cols, flipped, (n, *out_size))
    w_mat = weight.transpose(0, 2, 3, 1).reshape(c, kh * kw * o)   # Wmat[c, (ky, kx, o)]
    cols = (_nhwc_matrix(x) @ w_mat).reshape(n, h, w, kh, kw, o)
    y = _col2im(cols, out_size, stride, padding)
    return y.transpose(0, 3, 1, 2)


def _conv2d_weight_grad(cols, gy, kernel):
    """gW[o, c, ky, kx] = sum_{n,i,j} gy[n, o, i, j] * cols[(n, i, j), (ky, kx, c)]."""
    o = gy.shape[1]
    gw = _nhwc_matrix(gy).T @ cols                                   # (O, (ky, kx, c))
    return gw.reshape(o, *kernel, -1).transpose(0, 3, 1, 2).copy()  # (O, C, kh, kw)


# ---- differentiable Functions ------------------------------------------------------------------
#
# Columns are not kept from forward to backward (measured: no gain, and they would hold
# memory for the whole graph). The one exception is inside ConvTranspose2d.backward, where both
# gradients multiply by the same im2col(gy): it is built once and handed to both Functions.

def _recovering_output_padding(x_shape, y_shape, kernel, stride, padding):
    """The output_padding that makes conv_transpose2d(y) exactly as large as x again.

    conv2d drops the last (H + 2p - kh) % s rows of the padded input; they must come back.
    """
    return tuple(xs - ((ys - 1) * s - 2 * p + k)
                 for xs, ys, k, s, p in zip(x_shape[2:], y_shape[2:], kernel, stride, padding))


class Conv2d(Function):
    """y = conv2d(x, W) (no bias). gx = conv_transpose2d(gy, W), gW = conv2d_weight_grad(x, gy)."""

    def __init__(self, stride, padding, columns=None):
        self.stride, self.padding = stride, padding
        self.columns = columns  # im2col(x), when the caller has it already

    def forward(self, x, weight):
        kernel = weight.shape[2:]
        out_size = _conv_out_size(x.shape[2:], kernel, self.stride, self.padding)
        cols = self.columns
        if cols is None:
            cols = _im2col(x, kernel, self.stride, self.padding, out_size)
        self.columns = None  # not kept for backward
        return _conv2d_forward(cols, weight, (x.shape[0], *out_size))

    def backward(self, gy):
        x, weight = self.inputs
        kernel = weight.shape[2:]
        gx = gw = None
        if self.needs_input_grad[0]:
            extra = _recovering_output_padding(x.shape, gy.shape, kernel, self.stride, self.padding)
            gx = ConvTranspose2d(self.stride, self.padding, extra)(gy, weight)
        if self.needs_input_grad[1]:
            gw = Conv2dWeightGrad(kernel, self.stride, self.padding)(x, gy)
        return gx, gw


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, W) (no bias). gx = conv2d(gy, W), gW = conv2d_weight_grad(gy, x)."""

    def __init__(self, stride, padding, output_padding):
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x, weight):
        return _conv_transpose2d_forward(x, weight, self.stride, self.padding, self.output_padding)

    def backward(self, gy):
        x, weight = self.inputs
        kernel = weight.shape[2:]
        columns = None
        if all(self.needs_input_grad):  # both gradients multiply by im2col(gy): build it once
            columns = _im2col(gy.data, kernel, self.stride, self.padding, x.shape[2:])
        gx = gw = None
        if self.needs_input_grad[0]:
            gx = Conv2d(self.stride, self.padding, columns)(gy, weight)
        if self.needs_input_grad[1]:  # gy is the "x" of a conv2d whose output is x: roles swap
            gw = Conv2dWeightGrad(kernel, self.stride, self.padding, columns)(gy, x)
        return gx, gw


class Conv2dWeightGrad(Function):
    """gW = conv2d_weight_grad(x, gy): the weight gradient of conv2d, as a function of x and gy.

    It is linear in each argument, so its own gradients (needed for double backprop) are
    convolutions again, with ggW the upstream gradient of gW:
        d/dx  = conv_transpose2d(gy, ggW)       d/dgy = conv2d(x, ggW)
    """

    def __init__(self, kernel, stride, padding, columns=None):
        self.kernel, self.stride, self.padding = tuple(kernel), stride, padding
        self.columns = columns  # im2col(x), when the caller has it already

    def forward(self, x, gy):
        cols = self.columns
        if cols is None:
            cols = _im2col(x, self.kernel, self.stride, self.padding, gy.shape[2:])
        self.columns = None
        return _conv2d_weight_grad(cols, gy, self.kernel)

    def backward(self, ggw):
        x, gy = self.inputs
        gx = ggy = None
        if self.needs_input_grad[0]:
            extra = _recovering_output_padding(x.shape, gy.shape, self.kernel, self.stride,
                                               self.padding)
            gx = ConvTranspose2d(self.stride, self.padding, extra)(gy, ggw)
        if self.needs_input_grad[1]:
            ggy = Conv2d(self.stride, self.padding)(x, ggw)
        return gx, ggy


# ---- argument checking --------------------------------------------------------------------------

def _as_pair(value, name, minimum):
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


def _conv_out_size(size, kernel, stride, padding):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def _transpose_out_size(size, kernel, stride, padding, output_padding):
    return tuple((n - 1) * s - 2 * p + k + op
                 for n, k, s, p, op in zip(size, kernel, stride, padding, output_padding))


def _check_inputs(name, x, weight, bias, channel_axis):
    if x.ndim != 4:
        raise ValueError(f"{name}: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{name}: weight must be 4-D, got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[channel_axis]:
        raise ValueError(
            f"{name}: input has {x.shape[1]} channels but the weight of shape "
            f"{tuple(weight.shape)} expects {weight.shape[channel_axis]} input channels")
    out_channels = weight.shape[1 - channel_axis]
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{name}: bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    for other, label in ((weight, "weight"), (bias, "bias")):
        if other is not None and other.dtype != x.dtype:
            raise TypeError(f"{name}: input is {x.dtype} but {label} is {other.dtype}; convert "
                            f"one of them (.float() / .double(), module.to(dtype=...))")


def _add_bias(y, bias):
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


# ---- public functions ---------------------------------------------------------------------------

def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation, like torch.nn.functional.conv2d (NCHW).

    x (N, C, H, W), weight (O, C, kh, kw), bias (O,) or None -> y (N, O, H_out, W_out),
        y[n, o, i, j] = b[o] + sum_{c, ky, kx} W[o, c, ky, kx] * xp[n, c, i*s + ky, j*s + kx]
        H_out = (H + 2*padding - kh) // stride + 1
    stride and padding are ints or (h, w) pairs.
    """
    _check_inputs("conv2d", x, weight, bias, channel_axis=1)
    stride, padding = _as_pair(stride, "stride", 1), _as_pair(padding, "padding", 0)
    kernel = tuple(weight.shape[2:])
    out = _conv_out_size(x.shape[2:], kernel, stride, padding)
    if min(out) <= 0:
        raise ValueError(
            f"conv2d: output size would be {out[0]}x{out[1]} for input {x.shape[2]}x{x.shape[3]}, "
            f"kernel {kernel[0]}x{kernel[1]}, stride {stride}, padding {padding}; the padded "
            f"input must be at least as large as the kernel")
    return _add_bias(Conv2d(stride, padding)(x, weight), bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """2-D transposed convolution, like torch.nn.functional.conv_transpose2d (NCHW).

    x (N, C, H, W), weight (C, O, kh, kw), bias (O,) or None -> y (N, O, H_out, W_out),
        y[n, o, i*s + ky - p, j*s + kx - p] += W[c, o, ky, kx] * x[n, c, i, j]   (summed over all)
        H_out = (H - 1)*stride - 2*padding + kh + output_padding
    It is the gradient of conv2d with respect to its input. output_padding (< stride) adds rows
    and columns at the bottom/right, to pick among the input sizes a stride-s conv2d maps to H.
    """
    _check_inputs("conv_transpose2d", x, weight, bias, channel_axis=0)
    stride, padding = _as_pair(stride, "stride", 1), _as_pair(padding, "padding", 0)
    output_padding = _as_pair(output_padding, "output_padding", 0)
    if any(op >= s for op, s in zip(output_padding, stride)):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than stride {stride}")
    kernel = tuple(weight.shape[2:])
    out = _transpose_out_size(x.shape[2:], kernel, stride, padding, output_padding)
    if min(out) <= 0:
        raise ValueError(
            f"conv_transpose2d: output size would be {out[0]}x{out[1]} for input "
            f"{x.shape[2]}x{x.shape[3]}, kernel {kernel[0]}x{kernel[1]}, stride {stride}, "
            f"padding {padding}, output_padding {output_padding}; reduce the padding")
    y = ConvTranspose2d(stride, padding, output_padding)(x, weight)
    return _add_bias(y, bias)
