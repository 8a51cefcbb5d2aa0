"""2-D convolution and transposed convolution as matrix products, on NumPy or CuPy arrays.

Shapes follow PyTorch (NCHW): x (N, C, H, W), conv2d weight (O, C, kh, kw), conv_transpose2d
weight (C_in, C_out, kh, kw), bias (O,).

conv2d is a cross-correlation. With stride s, padding p and xp the zero-padded input,

    y[n, o, i, j] = b[o] + sum_{c, ky, kx} W[o, c, ky, kx] * xp[n, c, i*s + ky, j*s + kx]
    H_out = (H + 2p - kh) // s + 1

conv_transpose2d is its adjoint (the gradient of conv2d with respect to its input): every input
pixel scatters a kh x kw patch into the output,

    out[n, o, i*s + ky - p, j*s + kx - p] += W[c, o, ky, kx] * x[n, c, i, j]
    H_out = (H - 1)*s - 2p + kh + output_padding

Two ways to turn the sum into matrix products
---------------------------------------------
1. im2col (any stride). Copy the kh*kw*C input values that each output pixel sees into one row of
   a "columns" matrix, then multiply once:

       cols[(n, i, j), (ky, kx, c)] = xp[n, c, i*s + ky, j*s + kx]        (N*H_out*W_out, kh*kw*C)
       y[(n, i, j), o] = cols @ Wmat.T,   Wmat[o, (ky, kx, c)] = W[o, c, ky, kx]

   The transposed convolution runs the product the other way and adds each kernel offset's slice
   back into the output ("col2im": kh*kw strided slice adds, no per-pixel loop).

2. Shifted products (stride 1). Flatten the zero-padded, channels-last image into rows,
   P[r] = xp[n, :, y, x] with r = (n*Hp + y)*Wp + x. The pixel that kernel offset (ky, kx) brings
   to the output at row r is then row r + ky*Wp + kx, so

       Y[r] = sum_{ky, kx} P[r + ky*Wp + kx] @ W[:, :, ky, kx].T          (one row per padded pixel)

   is kh*kw plain matrix products of contiguous slices of P: nothing is copied kh*kw times. Y holds
   an output at every padded position; the real outputs are the rows with y < H_out, x < W_out,
   and the rest (the last kh-1 rows and kw-1 columns of each image) is cropped away. It is used
   when the output fills at least half of the padded grid (SHIFTED_MIN_FILL), e.g. every 3x3
   "same" convolution of 8x8 or larger; im2col is used otherwise (stride 2, DCGAN's 4x4 -> 1x1).
   The weight gradient is the same sum read the other way: gW[:, :, ky, kx] = G.T @ P[off_k + ...],
   with G the upstream gradient placed on the padded grid (zeros at the cropped positions).

Why the arrays are channels-last (NHWC) inside: on a CPU the time goes into memory traffic. With
channels-last memory the window of an output pixel is kh runs of kw*C consecutive floats, all the
windows are one `as_strided` view, and every row of P above is one contiguous pixel. So, like
PyTorch's `channels_last` format, the public shape stays NCHW but outputs are NCHW *views* of NHWC
memory (`y_nhwc.transpose(0, 3, 1, 2)`); element-wise NumPy ops keep that memory order, so the next
layer finds `x.transpose(0, 2, 3, 1)` contiguous. Any other layout works too (it is copied once).
Measurements behind these choices are in benchmarks/README.md.

Gradients, each written with these same differentiable ops so that double backprop works:

    conv2d:            gx = conv_transpose2d(gy, W)   gW = conv2d_weight_grad(x, gy)
    conv_transpose2d:  gx = conv2d(gy, W)             gW = conv2d_weight_grad(gy, x)
    conv2d_weight_grad(x, gy) = gW[o, c, ky, kx] = sum_{n,i,j} gy[n, o, i, j] xp[n, c, i*s+ky, j*s+kx]

A stride-1 conv_transpose2d whose output is no larger than its input (the input gradient of a
"same" convolution) gathers instead of scattering: it is a conv2d with the kernel flipped and its
two channel axes swapped, padded by k-1-p, and takes the fast routes above.
"""
import numpy as np

from . import plain
from .backend import get_array_module
from .tensor import Function
from .arguments import int_pair

SHIFTED_MIN_FILL = 0.5   # shifted products when H_out*W_out >= this fraction of the padded grid


# ---- route 1: im2col + one matrix product (raw numpy/cupy arrays, NCHW views of NHWC memory) ------

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


def _conv2d_weight_grad(cols, gy, kernel):
    """gW[o, c, ky, kx] = sum_{n,i,j} gy[n, o, i, j] * cols[(n, i, j), (ky, kx, c)]."""
    o = gy.shape[1]
    gw = _nhwc_matrix(gy).T @ cols                                   # (O, (ky, kx, c))
    return gw.reshape(o, *kernel, -1).transpose(0, 3, 1, 2).copy()  # (O, C, kh, kw)


# ---- route 2: shifted matrix products (stride 1) --------------------------------------------------

def _uses_shifted_products(in_size, kernel, stride, padding):
    """Stride 1 and an output covering at least SHIFTED_MIN_FILL of the padded grid."""
    if stride != (1, 1):
        return False
    grid = [n + 2 * p for n, p in zip(in_size, padding)]
    out = [g - k + 1 for g, k in zip(grid, kernel)]
    return out[0] * out[1] >= SHIFTED_MIN_FILL * grid[0] * grid[1]


def _padded_rows(x, kernel, padding):
    """P (N*Hp*Wp + tail, C): x zero-padded, channels-last, pixels flattened row after row, plus
    tail = (kh-1)*Wp + (kw-1) zero rows so that every offset's slice P[off : off + N*Hp*Wp] fits.
    Returns P and the padded grid (Hp, Wp)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    hp, wp = h + 2 * ph, w + 2 * pw
    rows = xp.zeros((n * hp * wp + (kh - 1) * wp + (kw - 1), c), dtype=x.dtype)
    grid = rows[:n * hp * wp].reshape(n, hp, wp, c)
    grid[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    return rows, (hp, wp)


def _shifted_conv2d(x, weight, padding):
    """Stride-1 conv2d: Y[r] = sum_{ky,kx} P[r + ky*Wp + kx] @ W[:, :, ky, kx].T, then crop.

    Returns y as an NCHW view of the (N, Hp, Wp, O) result, cropped to (H_out, W_out).
    """
    xp = get_array_module(x)
    o, _, kh, kw = weight.shape
    rows, (hp, wp) = _padded_rows(x, (kh, kw), padding)
    n = x.shape[0]
    r = n * hp * wp
    w_k = xp.ascontiguousarray(weight.transpose(2, 3, 1, 0))       # (kh, kw, C, O)
    y = rows[0:r] @ w_k[0, 0]                                        # offset (0, 0)
    product = xp.empty_like(y)
    for ky in range(kh):
        for kx in range(kw):
            if ky or kx:
                offset = ky * wp + kx
                xp.matmul(rows[offset:offset + r], w_k[ky, kx], out=product)
                y += product
    ho, wo = hp - kh + 1, wp - kw + 1
    return y.reshape(n, hp, wp, o)[:, :ho, :wo, :].transpose(0, 3, 1, 2)


def _shifted_weight_grad(x, gy, kernel, padding):
    """gW[:, :, ky, kx] = G.T @ P[off : off + R], off = ky*Wp + kx, with G the upstream gradient
    on the padded grid (zeros at the positions _shifted_conv2d crops away)."""
    xp = get_array_module(x)
    (kh, kw), (n, o, ho, wo) = kernel, gy.shape
    rows, (hp, wp) = _padded_rows(x, kernel, padding)
    r = n * hp * wp
    g = xp.zeros((r, o), dtype=gy.dtype)
    g.reshape(n, hp, wp, o)[:, :ho, :wo, :] = gy.transpose(0, 2, 3, 1)
    gw = xp.empty((kh, kw, o, x.shape[1]), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            offset = ky * wp + kx
            xp.matmul(g.T, rows[offset:offset + r], out=gw[ky, kx])
    return xp.ascontiguousarray(gw.transpose(2, 3, 0, 1))           # (O, C, kh, kw)


# ---- the three operations on raw arrays, each choosing its route -----------------------------------

def _conv2d_raw(x, weight, stride, padding, columns=None):
    kernel = weight.shape[2:]
    out_size = _conv_out_size(x.shape[2:], kernel, stride, padding)
    if columns is None and _uses_shifted_products(x.shape[2:], kernel, stride, padding):
        return _shifted_conv2d(x, weight, padding)
    if columns is None:
        columns = _im2col(x, kernel, stride, padding, out_size)
    return _conv2d_forward(columns, weight, (x.shape[0], *out_size))


def _conv_transpose2d_raw(x, weight, stride, padding, output_padding):
    c, o, kh, kw = weight.shape
    n, _, h, w = x.shape
    out_size = _transpose_out_size(x.shape[2:], (kh, kw), stride, padding, output_padding)
    if stride == (1, 1) and padding[0] < kh and padding[1] < kw and out_size[0] <= h \
            and out_size[1] <= w:
        # Scattering every input pixel's patch equals gathering a window around every output
        # pixel: y[n, o, a, b] = sum_{c, ky, kx} W[c, o, kh-1-ky, kw-1-kx] * xq[n, c, a+ky, b+kx]
        # with xq = x zero-padded by k-1-p. When the output is larger than the input (DCGAN's
        # 1x1 -> 4x4) the gather would multiply mostly padding, so that case scatters below.
        flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)     # (O, C, kh, kw)
        return _conv2d_raw(x, flipped, stride, (kh - 1 - padding[0], kw - 1 - padding[1]))
    w_mat = weight.transpose(0, 2, 3, 1).reshape(c, kh * kw * o)   # Wmat[c, (ky, kx, o)]
    cols = (_nhwc_matrix(x) @ w_mat).reshape(n, h, w, kh, kw, o)
    y = _col2im(cols, out_size, stride, padding)
    return y.transpose(0, 3, 1, 2)


def _conv2d_weight_grad_raw(x, gy, kernel, stride, padding, columns=None):
    if columns is None and _uses_shifted_products(x.shape[2:], kernel, stride, padding):
        return _shifted_weight_grad(x, gy, kernel, padding)
    if columns is None:
        columns = _im2col(x, kernel, stride, padding, gy.shape[2:])
    return _conv2d_weight_grad(columns, gy, kernel)


# ---- differentiable Functions ------------------------------------------------------------------
#
# Nothing is kept from forward to backward but the inputs (rebuilding columns costs less than
# holding them for the whole graph). The one exception is inside ConvTranspose2d.backward with the
# im2col route, where both gradients multiply by the same im2col(gy): it is built once, for both.

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
        columns, self.columns = self.columns, None       # not kept for backward
        return _conv2d_raw(x, weight, self.stride, self.padding, columns)

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
        return _conv_transpose2d_raw(x, weight, self.stride, self.padding, self.output_padding)

    def backward(self, gy):
        x, weight = self.inputs
        kernel = weight.shape[2:]
        columns = None
        if all(self.needs_input_grad) and not _uses_shifted_products(
                gy.shape[2:], kernel, self.stride, self.padding):
            # both gradients multiply by im2col(gy): build it once
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
        columns, self.columns = self.columns, None
        return _conv2d_weight_grad_raw(x, gy, self.kernel, self.stride, self.padding, columns)

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
    Plain version (a sum over kernel offsets, NCHW): nn/plain/conv.py conv2d.
    """
    _check_inputs("conv2d", x, weight, bias, channel_axis=1)
    stride, padding = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
    kernel = tuple(weight.shape[2:])
    out = _conv_out_size(x.shape[2:], kernel, stride, padding)
    if min(out) <= 0:
        raise ValueError(
            f"conv2d: output size would be {out[0]}x{out[1]} for input {x.shape[2]}x{x.shape[3]}, "
            f"kernel {kernel[0]}x{kernel[1]}, stride {stride}, padding {padding}; the padded "
            f"input must be at least as large as the kernel")
    if plain.enabled:                                  # with nn.plain.on()
        return plain.conv2d(x, weight, bias, stride, padding)
    return _add_bias(Conv2d(stride, padding)(x, weight), bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """2-D transposed convolution, like torch.nn.functional.conv_transpose2d (NCHW).

    x (N, C, H, W), weight (C, O, kh, kw), bias (O,) or None -> y (N, O, H_out, W_out),
        y[n, o, i*s + ky - p, j*s + kx - p] += W[c, o, ky, kx] * x[n, c, i, j]   (summed over all)
        H_out = (H - 1)*stride - 2*padding + kh + output_padding
    It is the gradient of conv2d with respect to its input. output_padding (< stride) adds rows
    and columns at the bottom/right, to pick among the input sizes a stride-s conv2d maps to H.
    Plain version (a sum over kernel offsets, NCHW): nn/plain/conv.py conv_transpose2d.
    """
    _check_inputs("conv_transpose2d", x, weight, bias, channel_axis=0)
    stride, padding = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
    output_padding = int_pair(output_padding, "output_padding", 0)
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
    if plain.enabled:                                  # with nn.plain.on()
        return plain.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    y = ConvTranspose2d(stride, padding, output_padding)(x, weight)
    return _add_bias(y, bias)
