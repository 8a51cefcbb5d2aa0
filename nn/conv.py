"""2-D convolution and transposed convolution as matrix products, on NumPy or CuPy arrays.

Shapes follow PyTorch (NCHW): x (N, C, H, W), conv2d weight (O, C, kh, kw), conv_transpose2d
weight (C_in, C_out, kh, kw), bias (O,). `xp` is always the array module (numpy or cupy).

conv2d is a cross-correlation. With stride s, padding p and x_pad the zero-padded input,

    y[n, o, i, j] = b[o] + sum_{c, ky, kx} W[o, c, ky, kx] * x_pad[n, c, i*s + ky, j*s + kx]
    H_out = (H + 2p - kh) // s + 1

conv_transpose2d is its adjoint (the gradient of conv2d with respect to its input): every input
pixel scatters a kh x kw patch into the output,

    out[n, o, i*s + ky - p, j*s + kx - p] += W[c, o, ky, kx] * x[n, c, i, j]
    H_out = (H - 1)*s - 2p + kh + output_padding

A training step needs three products per layer: the forward, the input gradient and the weight
gradient (conv2d_weight_grad below). Their arithmetic is fixed; what an implementation adds is
layout work (copies, padding, sums). The routes keep that small:

A. im2col, in blocks (conv2d forward and weight gradient; any stride). Copy the kh*kw*C input
   values each output pixel sees into one row of a "columns" matrix and multiply once:

       cols[(n, i, j), (ky, kx, c)] = x_pad[n, c, i*s + ky, j*s + kx]        (pixels, kh*kw*C)
       y[(n, i, j), o] = cols @ Wmat,          Wmat[(ky, kx, c), o] = W[o, c, ky, kx]
       gW[o, (ky, kx, c)] = gy.T @ cols        (gy as a (pixels, O) matrix)

   The columns are built for about BLOCK_PIXELS of them at a time (several images, or a band of
   rows of one image) into one reused buffer, and each block is multiplied at once, while it is
   still in the CPU's cache: the copy then costs a fraction of a round trip through memory.

B. Gathering on the phase grid (conv2d's input gradient = conv_transpose2d; kernel a multiple of
   the stride). Kernel row ky = s*ty + py: input row s*u + py gets the gradient of output rows
   u - ty, so each of the s*s "phases" (py, px) of the input is a stride-1 (kh/s x kw/s)
   convolution of gy on the grid of (u, v), and all phases use the same columns of gy:

       cols[(n, u, v), (ty', tx', o)] = gy[n, o, u - (th-1-ty'), v - (tw-1-tx')]  (th = kh/s)
       gx_pad[n, c, s*u + py, s*v + px] = (cols @ Wph)[(n, u, v), (py, px, c)]
       gWph = cols.T @ X,          X[(n, u, v), (py, px, c)] = x_pad[n, c, s*u + py, s*v + px]

   Wph[(ty', tx', o), (py, px, c)] = W[o, c, s*(th-1-ty') + py, s*(tw-1-tx') + px]. With stride
   1 this is the familiar "gx is a conv2d of gy with the flipped kernel" and X is x itself. gx
   and gW come from one set of columns (Conv2dGradients), built in blocks as in A. A strided
   grid has an extra row and column of half-padding when p is not a multiple of s: those
   products are wasted, (H/s + 1)^2 / (H/s)^2 of the useful ones.

C. Scattering (conv_transpose2d otherwise: kernel not a multiple of the stride, or an output
   much larger than its input, like DCGAN's 1x1 -> 4x4). One product P = x @ Wmat gives each
   input pixel its kh x kw x O patch, added into the output tap by tap:

       out[n, i*s + ky - p, j*s + kx - p, o] += P[(n, i, j), (ky, kx, o)]

   in s*s fused kernels, one per output phase (the taps that land on it, in the order of ky and
   kx), after a border of zeros around the patches: 4 launches for stride 2 instead of kh*kw
   slice adds (issue 22).

Which shapes take which route (forward, then the backward of both gradients):

    | shapes (benchmarks/bench_conv.py)       | forward | backward (gx and gW) | why |
    | --- | --- | --- | --- |
    | conv2d 3x3 stride 1 "same", any width   | A | B: gx, gW from one | no waste at stride 1; |
    |   (StyleGAN, VQ-VAE, prior: S64-W64b)   |   |   set of columns   |   columns serve twice |
    | conv2d 4x4 s2 at 32x32 (DCGAN D2)       | A | B | grid wastes 13%, C copies 4x more |
    | conv2d 4x4 s2 at 16x16, 8x8 (D3, D4)    | A | C (gx) + A (gW) | grid wastes 27%, 56% of the |
    |                                         |   |                 |   products; copies are cheap |
    | conv2d 1 -> 32/64 channels (D1)         | A | C + A | columns of gy (4*O per pixel) |
    |                                         |   |       |   cost more than C's 16*C     |
    | conv2d 4x4 -> 1x1 to one channel (D5)   | A | B | gy's columns are 16 floats a pixel |
    | conv_transpose2d 1x1 -> 4x4 (DCGAN G1)  | C | A, one im2col of gy | B: 16x the products |
    | conv_transpose2d 4x4 s2 to 8, 16 (G2-3) | C | A, one im2col of gy | grid wastes 56%, 27% |
    | conv_transpose2d 4x4 s2 to 32 (G4)      | B | A, one im2col of gy | grid wastes 13% |
    | conv_transpose2d to one channel (G5)    | C | A, one im2col of gy | like D1 |
    | kernel not a multiple of the stride     | A | C + A | B needs s to divide k |

    B or C is chosen per call by `_uses_gather`, an estimate of both costs (products plus floats
    copied, FLOPS_PER_FLOAT_COPIED apart); the rows above are what it picks. conv_transpose2d's
    backward with both gradients is conv2d(gy, W) and its weight gradient, one im2col of gy for
    both (ConvTranspose2dGradients). A backward wanting one gradient (a penalty's d D / d x) runs
    that one alone: ConvTranspose2d (B or C) or Conv2dWeightGrad (A).

Gradients, each written with these same differentiable ops so that double backprop works:

    conv2d:            gx = conv_transpose2d(gy, W)   gW = conv2d_weight_grad(x, gy)
    conv_transpose2d:  gx = conv2d(gy, W)             gW = conv2d_weight_grad(gy, x)
    conv2d_weight_grad(x, gy):
        gW[o, c, ky, kx] = sum_{n,i,j} gy[n, o, i, j] * x_pad[n, c, i*s + ky, j*s + kx]

Why the arrays are channels-last (NHWC) inside: on a CPU the time goes into memory traffic. With
channels-last memory the window of an output pixel is kh runs of kw*C consecutive floats, and all
windows are one `as_strided` view. So, like PyTorch's `channels_last` format, the public shape
stays NCHW but outputs are NCHW *views* of NHWC memory (`y_nhwc.transpose(0, 3, 1, 2)`);
element-wise NumPy ops keep that memory order, so the next layer finds `x.transpose(0, 2, 3, 1)`
contiguous. Any other layout works too (it is copied once). On the GPU (CuPy) every route runs as
one block: fewer, larger kernel launches. Measurements behind these choices: benchmarks/README.md.
Plain versions (a sum over kernel offsets, NCHW, primitive ops only): nn/plain/conv.py.
"""
import numpy as np

from . import plain
from .backend import elementwise, get_array_module
from .tensor import Function
from .arguments import int_pair

BLOCK_PIXELS = 1024         # CPU: columns are built and used about this many pixels at a time,
BLOCK_BYTES = 1 << 18       #      or more when they take fewer bytes than this (narrow layers)
FLOPS_PER_FLOAT_COPIED = 12  # a float copied costs about the time of 12 multiply-adds


# ---- layout helpers (raw numpy/cupy arrays) -----------------------------------------------------

def _nhwc(x):
    """(N, C, H, W) -> (N, H, W, C): a view, contiguous when the memory is channels-last."""
    return x.transpose(0, 2, 3, 1)


def _nchw(x):
    """(N, H, W, C) -> the (N, C, H, W) view the caller sees."""
    return x.transpose(0, 3, 1, 2)


def _extend(x, rows, cols):
    """x (N, H, W, C) with rows = (top, bottom) and cols = (left, right) added: zeros where the
    amount is positive, cropped where it is negative. A view of x when nothing is added."""
    (top, bottom), (left, right) = rows, cols
    n, h, w, c = x.shape
    x = x[:, max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0)]
    top, bottom, left, right = (max(v, 0) for v in (top, bottom, left, right))
    if not (top or bottom or left or right):
        return x
    xp = get_array_module(x)
    out = xp.zeros((n, top + x.shape[1] + bottom, left + x.shape[2] + right, c), dtype=x.dtype)
    out[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    return out


def _rows(a, where):
    """The pixels of block `where` of an (N, H, W, C) array as a (pixels, C) matrix: a view when
    the array is contiguous, as every output this module allocates and writes with out= is."""
    return a[where].reshape(-1, a.shape[-1])


class _SumOfProducts:
    """total = sum of a @ b over the blocks: the first product is the total, the others go
    through one scratch array (no allocation per block)."""

    def __init__(self):
        self.total = self.scratch = None

    def add(self, a, b):
        xp = get_array_module(a)
        if self.total is None:
            self.total = xp.matmul(a, b)
        else:
            if self.scratch is None:
                self.scratch = xp.empty_like(self.total)
            self.total += xp.matmul(a, b, out=self.scratch)


# ---- columns, built block by block --------------------------------------------------------------

def _blocks(n, h, w, xp, pixel_bytes=0):
    """Split n images of h x w output pixels into blocks of about BLOCK_PIXELS, or more pixels
    when their columns (pixel_bytes each) would take less than BLOCK_BYTES: several whole images,
    or a band of rows of one image. Yields (images, rows) slice pairs; a block's pixels are then
    contiguous in every (N, H, W, C) array. On the GPU one block: fewer, larger calls."""
    if xp is not np:
        yield slice(0, n), slice(0, h)
        return
    rows = max(1, max(BLOCK_PIXELS, BLOCK_BYTES // max(pixel_bytes, 1)) // w)
    if rows >= h:
        images = rows // h
        for i in range(0, n, images):
            yield slice(i, min(i + images, n)), slice(0, h)
    else:
        for i in range(n):
            for r in range(0, h, rows):
                yield slice(i, i + 1), slice(r, min(r + rows, h))


def _column_blocks(x, kernel, stride, out_size):
    """im2col, one block of output pixels at a time. x (N, Hp, Wp, C) is already padded.

        cols[(n, i, j), (ky, kx, c)] = x[n, i*sh + ky, j*sw + kx, c]      (block pixels, kh*kw*C)

    Yields (where, cols) with `where` the block's (images, rows) slices. cols lives in one buffer
    that the next block overwrites: use it before asking for the next. Built and used block by
    block, the columns stay in the CPU's cache instead of making a round trip through memory.
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    n, _, _, c = x.shape
    depth = kh * kw * c
    s_n, s_h, s_w, s_c = x.strides                          # in bytes
    windows = xp.lib.stride_tricks.as_strided(
        x, shape=(n, ho, wo, kh, kw, c), strides=(s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))
    buffer = None
    for where in _blocks(n, ho, wo, xp, depth * x.itemsize):
        block = windows[where]
        if buffer is None:                                  # the first block is the largest
            buffer = xp.empty(block.size, dtype=x.dtype)
        cols = buffer[:block.size].reshape(block.shape)
        cols[...] = block                                   # the copy: kh runs of kw*C floats
        yield where, cols.reshape(-1, depth)


# ---- route A: conv2d forward and weight gradient, im2col (any stride) ---------------------------

def _conv2d_nhwc(x, weight, stride, padding, b=None):
    """y[(n, i, j), o] = cols @ Wmat,   Wmat[(ky, kx, c), o] = W[o, c, ky, kx].   x, y: NHWC.

    When b (NHWC, y's size) is given, also gWb = conv2d_weight_grad(x, b) from the same columns
    (conv_transpose2d's backward needs both): returns (y, gWb).
    """
    xp = get_array_module(x)
    o, c, kh, kw = weight.shape
    (ph, pw), n = padding, x.shape[0]
    ho, wo = _conv_out_size(x.shape[1:3], (kh, kw), stride, padding)
    x_pad = _extend(x, (ph, ph), (pw, pw))
    w_mat = weight.transpose(0, 2, 3, 1).reshape(o, -1).T   # a small copy, read transposed
    y = xp.empty((n, ho, wo, o), dtype=x.dtype)
    if b is not None:
        b, gw = xp.ascontiguousarray(b), _SumOfProducts()
    for where, cols in _column_blocks(x_pad, (kh, kw), stride, (ho, wo)):
        xp.matmul(cols, w_mat, out=_rows(y, where))
        if b is not None:
            gw.add(_rows(b, where).T, cols)
    return y if b is None else (y, _from_columns_order(gw.total, (kh, kw)))


def _weight_grad_nhwc(x, gy, kernel, stride, padding):
    """gW[o, c, ky, kx] = sum_{n,i,j} gy[n, i, j, o] * cols[(n, i, j), (ky, kx, c)],
    summed block by block: gWmat += gy_block.T @ cols_block.   x, gy: NHWC."""
    xp = get_array_module(x)
    (ph, pw), gy = padding, xp.ascontiguousarray(gy)
    x_pad = _extend(x, (ph, ph), (pw, pw))
    gw = _SumOfProducts()
    for where, cols in _column_blocks(x_pad, kernel, stride, gy.shape[1:3]):
        gw.add(_rows(gy, where).T, cols)
    return _from_columns_order(gw.total, kernel)


def _from_columns_order(gw, kernel):
    """gWmat[o, (ky, kx, c)] -> gW (O, C, kh, kw), contiguous."""
    gw = gw.reshape(gw.shape[0], *kernel, -1)
    return get_array_module(gw).ascontiguousarray(gw.transpose(0, 3, 1, 2))


# ---- route B: conv2d input gradient (conv_transpose2d) by gathering, kh % sh == kw % sw == 0 ----
#
# Kernel row ky = sh*ty + py splits the padded input rows into sh phases py. In phase py, input row
# sh*u + py receives from output rows i = u - ty, ty = 0 .. th-1 (th = kh/sh): a stride-1 th x tw
# convolution of gy on the "phase grid" of u. One set of columns of gy on that grid serves all
# sh*sw phases at once (they only use different weights) and also the weight gradient:
#
#     cols[(n, u, v), (ty', tx', o)] = gy[n, u - (th-1-ty'), v - (tw-1-tx'), o]   (zero outside)
#     G = cols @ Wph,     Wph[(ty', tx', o), (py, px, c)] = W[o, c, sh*(th-1-ty') + py, ...]
#     gx_pad[n, sh*u + py, sw*v + px, c] = G[(n, u, v), (py, px, c)]            (depth to space)
#     gWph = cols.T @ X,  X[(n, u, v), (py, px, c)] = x_pad[n, sh*u + py, sw*v + px, c]
#
# With stride 1 this is the familiar "gx is a conv2d of gy with the flipped kernel" and X is x
# itself. The grid covers u = ph//sh .. ceil((ph + H)/sh) - 1, the rows that hold input pixels;
# when ph is not a multiple of sh, its first and last rows are half padding (computed, dropped).

def _uses_gather(in_size, out_size, weight_shape, stride, padding, with_weight_grad=False):
    """Route B or C for conv2d's input gradient (= conv_transpose2d), by their estimated cost per
    pixel of gy in multiply-adds, F = FLOPS_PER_FLOAT_COPIED for each float copied:

        B: waste * (kh*kw*C*O + F * (2*th*tw*O + sh*sw*C [+ sh*sw*C for X]))
        C: kh*kw*C*O + F * (4*kh*kw*C [+ 2*kh*kw*C for the im2col of the weight gradient])

    waste = phase-grid pixels / gy pixels; [...] when the weight gradient comes along. B needs
    kh % sh == kw % sw == 0.
    """
    o, c, kh, kw = weight_shape
    (sh, sw), (u0, u1), (v0, v1) = stride, *_phase_grid(in_size, stride, padding)
    if kh % sh or kw % sw:
        return False
    waste = (u1 - u0) * (v1 - v0) / (out_size[0] * out_size[1])
    phases, taps, extra = sh * sw, kh * kw // (sh * sw), int(with_weight_grad)
    copied = 2 * taps * o + (1 + extra) * phases * c
    gather = waste * (kh * kw * c * o + FLOPS_PER_FLOAT_COPIED * copied)
    scatter = kh * kw * c * o + FLOPS_PER_FLOAT_COPIED * (4 + 2 * extra) * kh * kw * c
    return gather <= scatter


def _phase_grid(in_size, stride, padding):
    """(start, stop) of the grid rows u and columns v that hold input pixels."""
    return [(p // s, -(-(p + n) // s)) for n, s, p in zip(in_size, stride, padding)]


def _phase_weights(weight, stride):
    """Wph[(ty', tx', o), (py, px, c)] = W[o, c, sh*(th-1-ty') + py, sw*(tw-1-tx') + px]."""
    o, c, kh, kw = weight.shape
    (sh, sw) = stride
    w = weight.reshape(o, c, kh // sh, sh, kw // sw, sw)[:, :, ::-1, :, ::-1, :]
    return w.transpose(2, 4, 0, 3, 5, 1).reshape(kh * kw // (sh * sw) * o, sh * sw * c)


def _from_phase_weights(matrix, weight_shape, stride):
    """The inverse of _phase_weights: W (O, C, kh, kw) from Wph."""
    o, c, kh, kw = weight_shape
    (sh, sw) = stride
    w = matrix.reshape(kh // sh, kw // sw, o, sh, sw, c)[::-1, ::-1]
    return w.transpose(2, 5, 0, 3, 1, 4).reshape(o, c, kh, kw).copy()


def _gy_on_phase_grid(gy, kernel, stride, grid):
    """gy (N, Ho, Wo, O) extended so that a stride-1 th x tw window at grid row u starts at gy
    row u - (th-1): rows u0-(th-1) .. u1-1 and likewise for the columns."""
    (u0, u1), (v0, v1) = grid
    th, tw = kernel[0] // stride[0], kernel[1] // stride[1]
    return _extend(gy, (th - 1 - u0, u1 - gy.shape[1]), (tw - 1 - v0, v1 - gy.shape[2]))


def _x_on_phase_grid(x, stride, padding, grid):
    """X (N, U, V, sh*sw*C): x_pad[n, sh*u + py, sw*v + px, c] at grid pixel (u, v)."""
    xp = get_array_module(x)
    (sh, sw), (ph, pw), ((u0, u1), (v0, v1)) = stride, padding, grid
    n, h, w, c = x.shape
    x = _extend(x, (ph - sh * u0, sh * u1 - ph - h), (pw - sw * v0, sw * v1 - pw - w))
    phases = x.reshape(n, u1 - u0, sh, v1 - v0, sw, c).transpose(0, 1, 3, 2, 4, 5)
    return xp.ascontiguousarray(phases).reshape(n, u1 - u0, v1 - v0, sh * sw * c)


def _scatter_phases(gx, g, where, grid, stride, padding):
    """gx[n, sh*u + py - ph, sw*v + px - pw, c] = g[(n, u, v), (py, px, c)] for the block's grid
    rows, each phase a strided copy; pixels in the padding are dropped."""
    (sh, sw), (ph, pw), ((u0, _), (v0, v1)) = stride, padding, grid
    images, rows = where
    g = g.reshape(-1, rows.stop - rows.start, v1 - v0, sh, sw, gx.shape[3])
    for py in range(sh):
        src_u, dst_a = _inside(u0 + rows.start, rows.stop - rows.start, sh, py - ph, gx.shape[1])
        for px in range(sw):
            src_v, dst_b = _inside(v0, v1 - v0, sw, px - pw, gx.shape[2])
            gx[images, dst_a, dst_b] = g[:, src_u, src_v, py, px]


def _inside(first, count, step, offset, size):
    """Grid rows first .. first+count-1 land on rows step*u + offset: (the slice of the grid
    rows, the slice of the target rows) for those that fall inside 0 .. size-1."""
    base = step * first + offset
    lo, hi = max(0, -(base // step)), min(count, -(-(size - base) // step))
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    return slice(lo, hi), slice(base + step * lo, base + step * (hi - 1) + 1, step)


def _gather_input_grad(gy, weight, stride, padding, in_size, x=None):
    """gx = conv_transpose2d(gy, W) as the input gradient of conv2d(x, W) for x of in_size, and,
    when x is given, also gW = conv2d_weight_grad(x, gy) from the same columns. NHWC arrays."""
    xp = get_array_module(gy)
    o, c, kh, kw = weight.shape
    grid = _phase_grid(in_size, stride, padding)
    (u0, u1), (v0, v1) = grid
    gy_ext = _gy_on_phase_grid(gy, (kh, kw), stride, grid)
    w_phase = _phase_weights(weight, stride)
    gx = xp.empty((gy.shape[0], *in_size, c), dtype=gy.dtype)
    strided, phases = stride != (1, 1), None
    if x is not None:
        x_grid, gw = _x_on_phase_grid(x, stride, padding, grid), _SumOfProducts()
    t = (kh // stride[0], kw // stride[1])
    for where, cols in _column_blocks(gy_ext, t, (1, 1), (u1 - u0, v1 - v0)):
        if strided:
            if phases is None:                                  # the first block is the largest
                phases = xp.empty(cols.shape[0] * w_phase.shape[1], dtype=gy.dtype)
            g = phases[:cols.shape[0] * w_phase.shape[1]].reshape(cols.shape[0], -1)
            _scatter_phases(gx, xp.matmul(cols, w_phase, out=g), where, grid, stride, padding)
        else:
            xp.matmul(cols, w_phase, out=_rows(gx, where))
        if x is not None:
            gw.add(cols.T, _rows(x_grid, where))
    if x is None:
        return gx
    return gx, _from_phase_weights(gw.total, weight.shape, stride)


# ---- route C: conv_transpose2d by scattering (col2im), for any stride ---------------------------

def _scatter_conv_transpose(x, weight, stride, padding, out_size):
    """out[n, i*sh + ky - ph, j*sw + kx - pw, o] += (x_rows @ Wmat)[(n, i, j), (ky, kx, o)],
    Wmat[c, (ky, kx, o)] = W[c, o, ky, kx]: one product, then for each output phase (py, px)
    the sum of its taps ky = py, py + sh, ..., kx = px, px + sw, ... (tap_sum_kernel: one kernel
    per phase on the GPU), in the order of ky, then kx. The patches get th - 1 rows and tw - 1
    columns of zeros on each side (th, tw: the most taps of a phase), so that every tap covers
    its phase's whole grid; adding those zeros changes no bit. NHWC."""
    xp = get_array_module(x)
    c, o, kh, kw = weight.shape
    n, h, w, _ = x.shape
    (sh, sw), (ph, pw), (ho, wo) = stride, padding, out_size
    th, tw = -(-kh // sh), -(-kw // sw)
    w_mat = weight.transpose(0, 2, 3, 1).reshape(c, kh * kw * o)
    patches = (x.reshape(n * h * w, c) @ w_mat).reshape(n, h, w, kh * kw * o)
    patches = _extend(patches, (th - 1, th - 1), (tw - 1, tw - 1)).reshape(
        n, h + 2 * th - 2, w + 2 * tw - 2, kh, kw, o)
    full = xp.zeros((n, max((h - 1) * sh + kh, ph + ho), max((w - 1) * sw + kw, pw + wo), o),
                    dtype=x.dtype)                   # room for every patch and the output window
    for py in range(sh):
        for px in range(sw):
            rows, cols = range(py, kh, sh), range(px, kw, sw)       # the phase's taps
            if not (rows and cols):
                continue
            grid_h, grid_w = h + len(rows) - 1, w + len(cols) - 1   # its grid, in full
            taps = [patches[:, th - 1 - a:th - 1 - a + grid_h, tw - 1 - b:tw - 1 - b + grid_w,
                            ky, kx] for a, ky in enumerate(rows) for b, kx in enumerate(cols)]
            phase = full[:, py:py + sh * grid_h:sh, px:px + sw * grid_w:sw]
            elementwise(xp, tap_sum_kernel)(phase, *taps)
    return full[:, ph:ph + ho, pw:pw + wo]


def tap_sum_kernel(out, *taps):
    """out += tap, for each tap in order, in place: one kernel on the GPU."""
    for tap in taps:
        out += tap


def _conv_transpose2d_nhwc(x, weight, stride, padding, out_size):
    """conv_transpose2d(x, W): gathered (route B) where _uses_gather estimates it cheaper,
    scattered (route C) otherwise. x NHWC, W (C_in, C_out, kh, kw)."""
    if _uses_gather(out_size, x.shape[1:3], weight.shape, stride, padding):
        # conv_transpose2d(x, W) is the input gradient of a conv2d with weight W (O=C_in, C=C_out)
        return _gather_input_grad(x, weight, stride, padding, out_size)
    return _scatter_conv_transpose(x, weight, stride, padding, out_size)


# ---- differentiable Functions -------------------------------------------------------------------
#
# Each forward computes from its inputs only; nothing is kept from forward to backward but the
# inputs (rebuilding columns costs less than holding them for the whole graph). When a backward
# needs both gradients, one Function with two outputs computes both from one set of columns.

def _recovering_output_padding(x_shape, y_shape, kernel, stride, padding):
    """The output_padding that makes conv_transpose2d(y) exactly as large as x again.

    conv2d drops the last (H + 2p - kh) % s rows of the padded input; they must come back.
    """
    return tuple(xs - ((ys - 1) * s - 2 * p + k)
                 for xs, ys, k, s, p in zip(x_shape[2:], y_shape[2:], kernel, stride, padding))


class Conv2d(Function):
    """y = conv2d(x, W) (no bias). gx = conv_transpose2d(gy, W), gW = conv2d_weight_grad(x, gy):
    together (Conv2dGradients) when both are wanted and gathering pays, else the one wanted."""

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, weight):
        return _nchw(_conv2d_nhwc(_nhwc(x), weight, self.stride, self.padding))

    def backward(self, gy):
        x, weight = self.inputs
        kernel, args = weight.shape[2:], (self.stride, self.padding)
        need_x, need_w = self.needs_input_grad
        if need_x and need_w and _uses_gather(x.shape[2:], gy.shape[2:], weight.shape, *args,
                                              with_weight_grad=True):
            return Conv2dGradients(*args)(x, gy, weight)
        gx = gw = None
        if need_x:
            extra = _recovering_output_padding(x.shape, gy.shape, kernel, *args)
            gx = ConvTranspose2d(*args, extra)(gy, weight)
        if need_w:
            gw = Conv2dWeightGrad(kernel, *args)(x, gy)
        return gx, gw


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, W) (no bias). gx = conv2d(gy, W), gW = conv2d_weight_grad(gy, x):
    together (ConvTranspose2dGradients, one im2col of gy) when both are wanted."""

    def __init__(self, stride, padding, output_padding):
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x, weight):
        out_size = _transpose_out_size(x.shape[2:], weight.shape[2:], self.stride, self.padding,
                                       self.output_padding)
        return _nchw(_conv_transpose2d_nhwc(_nhwc(x), weight, self.stride, self.padding,
                                            out_size))

    def backward(self, gy):
        x, weight = self.inputs
        args = (self.stride, self.padding)
        need_x, need_w = self.needs_input_grad
        if need_x and need_w:
            return ConvTranspose2dGradients(*args)(x, gy, weight)
        gx = Conv2d(*args)(gy, weight) if need_x else None
        gw = Conv2dWeightGrad(weight.shape[2:], *args)(gy, x) if need_w else None  # roles swap
        return gx, gw


class Conv2dWeightGrad(Function):
    """gW = conv2d_weight_grad(x, gy): the weight gradient of conv2d, as a function of x and gy.

    It is linear in each argument, so its own gradients (needed for double backprop) are
    convolutions again, with ggW the upstream gradient of gW:
        d/dx  = conv_transpose2d(gy, ggW)       d/dgy = conv2d(x, ggW)
    """

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = tuple(kernel), stride, padding

    def forward(self, x, gy):
        return _weight_grad_nhwc(_nhwc(x), _nhwc(gy), self.kernel, self.stride, self.padding)

    def backward(self, ggw):
        x, gy = self.inputs
        args = (self.stride, self.padding)
        gx = ggy = None
        if self.needs_input_grad[0]:
            extra = _recovering_output_padding(x.shape, gy.shape, self.kernel, *args)
            gx = ConvTranspose2d(*args, extra)(gy, ggw)
        if self.needs_input_grad[1]:
            ggy = Conv2d(*args)(x, ggw)
        return gx, ggy


class Conv2dGradients(Function):
    """(gx, gW) = (conv_transpose2d(gy, W), conv2d_weight_grad(x, gy)), conv2d's two gradients
    from one set of columns of gy on the phase grid (route B). With ggx, ggW their upstream
    gradients, its own gradients are those of the two Functions it fuses:
        d/dx = conv_transpose2d(gy, ggW)     d/dgy = conv2d(ggx, W) + conv2d(x, ggW)
        d/dW = conv2d_weight_grad(ggx, gy)
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, gy, weight):
        gx, gw = _gather_input_grad(_nhwc(gy), weight, self.stride, self.padding, x.shape[2:],
                                    x=_nhwc(x))
        return _nchw(gx), gw

    def backward(self, ggx, ggw):
        x, gy, weight = self.inputs
        args = (self.stride, self.padding)
        need_x, need_gy, need_w = self.needs_input_grad
        dx = dgy = dw = None
        if need_x:
            extra = _recovering_output_padding(x.shape, gy.shape, weight.shape[2:], *args)
            dx = ConvTranspose2d(*args, extra)(gy, ggw)
        if need_gy:
            dgy = Conv2d(*args)(ggx, weight) + Conv2d(*args)(x, ggw)
        if need_w:
            dw = Conv2dWeightGrad(weight.shape[2:], *args)(ggx, gy)
        return dx, dgy, dw


class ConvTranspose2dGradients(Function):
    """(gx, gW) = (conv2d(gy, W), conv2d_weight_grad(gy, x)), conv_transpose2d's two gradients
    from one im2col of gy (route A). Its own gradients, with ggx, ggW upstream:
        d/dx = conv2d(gy, ggW)     d/dgy = conv_transpose2d(ggx, W) + conv_transpose2d(x, ggW)
        d/dW = conv2d_weight_grad(gy, ggx)
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, gy, weight):
        gx, gw = _conv2d_nhwc(_nhwc(gy), weight, self.stride, self.padding, b=_nhwc(x))
        return _nchw(gx), gw

    def backward(self, ggx, ggw):
        x, gy, weight = self.inputs
        args = (self.stride, self.padding)
        need_x, need_gy, need_w = self.needs_input_grad
        dx = dgy = dw = None
        if need_x:
            dx = Conv2d(*args)(gy, ggw)
        if need_gy:
            extra = _recovering_output_padding(gy.shape, x.shape, weight.shape[2:], *args)
            dgy = ConvTranspose2d(*args, extra)(ggx, weight) + ConvTranspose2d(*args, extra)(x, ggw)
        if need_w:
            dw = Conv2dWeightGrad(weight.shape[2:], *args)(gy, ggx)
        return dx, dgy, dw


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
        y[n, o, i, j] = b[o] + sum_{c, ky, kx} W[o, c, ky, kx] * x_pad[n, c, i*s + ky, j*s + kx]
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
