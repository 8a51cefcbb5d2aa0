"""conv2d and conv_transpose2d as the formulas read them: a sum over the kernel offsets.

Plain version of nn/conv.py, which computes the same numbers with im2col in blocks, gathering on
the phase grid or scattering, on channels-last memory. Here everything is NCHW and every step is
a primitive op of nn/ops.py (pad, strided slice, transpose, reshape, matmul, add), so the
gradients, and their gradients, come from those ops' backward: nothing here has a backward of
its own.

conv2d. Pad x to x_pad. Kernel offset (ky, kx) sees the strided slice
x_pad[:, :, ky + s*i, kx + s*j] for all output pixels (i, j) at once, a (N, C, H_out, W_out)
array, and mixes its channels with the (O, C) matrix W[:, :, ky, kx]; the output is the sum of those kh*kw terms:

    y[n, o, i, j] = b[o] + sum_{ky, kx} sum_c W[o, c, ky, kx] * x_pad[n, c, i*s + ky, j*s + kx]

conv_transpose2d. Offset (ky, kx) mixes the input's channels with W[:, :, ky, kx] and adds the
result into every s-th pixel of a large output, starting at (ky, kx); the padding is cropped last:

    full[n, o, i*s + ky, j*s + kx] += sum_c W[c, o, ky, kx] * x[n, c, i, j]
    y = full[:, :, p : p + H_out, p : p + W_out] + b[o]
"""
from .. import ops
from ..arguments import int_pair


def mix_channels(x, matrix):
    """y[n, o, i, j] = sum_c matrix[o, c] * x[n, c, i, j]: a 1x1 convolution as one matmul."""
    n, c, h, w = x.shape
    pixels = x.transpose(0, 2, 3, 1).reshape(n * h * w, c)     # one row per pixel
    y = pixels @ matrix.T                                        # (N*H*W, O)
    return y.reshape(n, h, w, matrix.shape[0]).transpose(0, 3, 1, 2)


def add_up(terms):
    """terms[0] + terms[1] + ... (one Add per term, no extra zero)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Plain conv2d (fast version: nn/conv.py conv2d). x (N, C, H, W), weight (O, C, kh, kw)."""
    (sh, sw), (ph, pw) = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
    o, _, kh, kw = weight.shape
    h_out = (x.shape[2] + 2 * ph - kh) // sh + 1
    w_out = (x.shape[3] + 2 * pw - kw) // sw + 1
    x_pad = ops.Pad(((0, 0), (0, 0), (ph, ph), (pw, pw)), 0)(x) if ph or pw else x
    terms = []
    for ky in range(kh):
        for kx in range(kw):
            window = x_pad[:, :, ky:ky + sh * (h_out - 1) + 1:sh, kx:kx + sw * (w_out - 1) + 1:sw]
            terms.append(mix_channels(window, weight[:, :, ky, kx]))
    y = add_up(terms)
    return y if bias is None else y + bias.reshape(1, o, 1, 1)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Plain conv_transpose2d (fast version: nn/conv.py conv_transpose2d). weight (C, O, kh, kw)."""
    (sh, sw), (ph, pw) = int_pair(stride, "stride", 1), int_pair(padding, "padding", 0)
    extra_h, extra_w = int_pair(output_padding, "output_padding", 0)
    n, _, h, w = x.shape
    _, o, kh, kw = weight.shape
    full = (n, o, (h - 1) * sh + kh + extra_h, (w - 1) * sw + kw + extra_w)
    terms = []
    for ky in range(kh):
        for kx in range(kw):
            patch = mix_channels(x, weight[:, :, ky, kx].T)                # (N, O, H, W)
            every_s_th = (slice(None), slice(None), slice(ky, ky + sh * (h - 1) + 1, sh),
                          slice(kx, kx + sw * (w - 1) + 1, sw))
            terms.append(ops.ScatterAdd(every_s_th, full)(patch))           # zeros elsewhere
    y = add_up(terms)[:, :, ph:full[2] - ph, pw:full[3] - pw]
    return y if bias is None else y + bias.reshape(1, o, 1, 1)
