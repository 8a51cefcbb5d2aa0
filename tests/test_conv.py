"""conv2d / conv_transpose2d: gradients (first and second order), a slow loop reference,
the adjoint identity, dtypes, memory layouts, errors, and agreement with PyTorch when installed."""
import numpy as np
import pytest

import nn
from nn.backend import to_numpy
from nn.conv import conv2d, conv_transpose2d
from conftest import tensor

# (N, C_in, C_out, H, W, kh, kw, stride, padding): batch > 1, channels > 1, non-square kernels
# and images, stride 1 and 2 (also per axis), padding 0 and 1, sizes where conv2d drops rows.
CONV_CASES = [
    (2, 3, 2, 5, 4, 3, 2, 1, 0),
    (2, 2, 3, 6, 5, 3, 3, 2, 1),
    (2, 2, 2, 6, 7, 4, 4, 2, 1),
    (2, 2, 2, 5, 6, 3, 2, (2, 1), (1, 0)),
    # stride 1 (the routes of each case: tests/test_conv_routes.py)
    (2, 3, 4, 9, 7, 3, 3, 1, 1),               # a 3x3 "same" conv, odd sizes
    (2, 3, 2, 7, 6, 3, 3, 1, 2),               # padding 2
    (1, 2, 3, 5, 8, 2, 3, 1, 0),               # batch 1, the PixelCNN's 2x3 vertical kernel
    (2, 2, 2, 4, 9, 1, 2, 1, 0),               # its 1x2 horizontal kernel
    (1, 2, 3, 16, 12, 4, 7, 1, (1, 3)),        # a 4x7 kernel, rectangular padding
]
# (N, C_in, C_out, H, W, kh, kw, stride, padding, output_padding)
TRANSPOSE_CASES = [
    (2, 3, 2, 3, 4, 3, 2, 1, 0, 0),
    (2, 2, 3, 3, 2, 3, 3, 2, 1, 1),
    (2, 2, 2, 3, 3, 4, 4, 2, 1, 0),
    (2, 3, 2, 1, 1, 4, 4, 1, 0, 0),            # DCGAN's first generator layer: 1x1 -> 4x4
    (2, 2, 2, 3, 2, 3, 2, (2, 1), (1, 0), (1, 0)),
    (2, 2, 3, 5, 4, 3, 2, 1, 1, 0),            # stride 1, output <= input: gathered
    (2, 3, 2, 6, 6, 3, 3, 1, 1, 0),            # the input gradient of a 3x3 'same' conv
    (2, 2, 2, 6, 5, 2, 2, 1, 2, 0),            # stride 1, padding >= kernel: output cropped
]


def make_inputs(case, transpose, device, rng, dtype=np.float64, requires_grad=True):
    n, c, o, h, w, kh, kw = case[:7]
    shapes = [(n, c, h, w), (c, o, kh, kw) if transpose else (o, c, kh, kw), (o,)]
    return [nn.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=requires_grad).to(device)
            for s in shapes]


def run(case, transpose, x, w, b):
    if transpose:
        return conv_transpose2d(x, w, b, stride=case[7], padding=case[8], output_padding=case[9])
    return conv2d(x, w, b, stride=case[7], padding=case[8])


ALL_CASES = [(c, False) for c in CONV_CASES] + [(c, True) for c in TRANSPOSE_CASES]
IDS = [("convT" if t else "conv") + "-".join(map(str, c)) for c, t in ALL_CASES]


# ---- reference: explicit loops over pixels ------------------------------------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else v


def conv2d_loops(x, w, b, stride, padding):
    """y[n, o, i, j] = b[o] + sum over the window of x_pad * W, one output pixel at a time."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    x_pad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    x_pad[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = x_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]        # (n, c, kh, kw)
            y[:, :, i, j] = np.einsum("nckl,ockl->no", window, w) + b
    return y


def conv_transpose2d_loops(x, w, b, stride, padding, output_padding):
    """Every input pixel adds W[c] * x[n, c, i, j] into a kh x kw patch of the (padded) output."""
    (sh, sw), (ph, pw), (oh, ow) = _pair(stride), _pair(padding), _pair(output_padding)
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    full = np.zeros((n, o, (h - 1) * sh + kh + oh, (wd - 1) * sw + kw + ow))
    for i in range(h):
        for j in range(wd):
            patch = np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
            full[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += patch
    ho, wo = full.shape[2] - 2 * ph, full.shape[3] - 2 * pw
    return full[:, :, ph:ph + ho, pw:pw + wo] + b[None, :, None, None]


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("case,transpose", ALL_CASES, ids=IDS)
def test_forward_matches_loop_reference(case, transpose, layout, device, rng):
    x, w, b = make_inputs(case, transpose, "cpu", rng, requires_grad=False)
    data = x.data
    if layout == "nhwc":        # the layout conv outputs have: NCHW view of channels-last memory
        data = np.ascontiguousarray(data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "strided":   # a non-contiguous slice
        data = np.repeat(data, 2, axis=3)[:, :, :, ::2]
    if transpose:
        expected = conv_transpose2d_loops(x.data, w.data, b.data, *case[7:])
    else:
        expected = conv2d_loops(x.data, w.data, b.data, *case[7:])
    y = run(case, transpose, nn.Tensor(data).to(device), w.to(device), b.to(device))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


# ---- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case,transpose", ALL_CASES, ids=IDS)
def test_gradcheck(case, transpose, device, rng):
    x, w, b = make_inputs(case, transpose, device, rng)
    assert nn.gradcheck(lambda x, w, b: run(case, transpose, x, w, b), [x, w, b])


GRADGRAD_CASES = [(CONV_CASES[1], False), (CONV_CASES[3], False), (CONV_CASES[4], False),
                  (CONV_CASES[6], False), (TRANSPOSE_CASES[1], True), (TRANSPOSE_CASES[4], True),
                  (TRANSPOSE_CASES[6], True)]


@pytest.mark.parametrize("case,transpose", GRADGRAD_CASES,
                         ids=[("convT" if t else "conv") + "-".join(map(str, c))
                              for c, t in GRADGRAD_CASES])
def test_gradgradcheck(case, transpose, device, rng):
    """Second derivatives, e.g. for gradient penalties. The first-order gradient of W is
    Conv2dWeightGrad, so its backward is checked here too."""
    x, w, b = make_inputs(case, transpose, device, rng)
    assert nn.gradgradcheck(lambda x, w, b: run(case, transpose, x, w, b), [x, w, b])


def test_gradient_penalty_path(device, rng):
    """d/dW of |d conv(x, W)/dx|^2, as WGAN-GP needs, against finite differences."""
    x, w, _ = make_inputs(CONV_CASES[2], False, device, rng)

    def penalty(x, w):
        y = conv2d(x, w, stride=2, padding=1)
        gx, = nn.grad((y * y).sum(), [x], create_graph=True)
        return (gx * gx).sum()

    assert nn.gradcheck(penalty, [x, w])


@pytest.mark.parametrize("stride,padding,size", [(1, 0, 6), (2, 1, 7), (2, 1, 8), (3, 2, 9)])
def test_conv_transpose_is_the_adjoint_of_conv(stride, padding, size, device, rng):
    """<conv2d(x, W), y> == <x, conv_transpose2d(y, W)> with the output_padding that restores x."""
    x = tensor(rng.standard_normal((2, 3, size, size + 1)), device)
    w = tensor(rng.standard_normal((4, 3, 3, 4)), device)
    cx = conv2d(x, w, stride=stride, padding=padding)
    y = tensor(rng.standard_normal(cx.shape), device)
    extra = [(n + 2 * padding - k) % stride for n, k in zip(x.shape[2:], w.shape[2:])]
    ty = conv_transpose2d(y, w, stride=stride, padding=padding, output_padding=extra)
    assert ty.shape == x.shape
    left, right = float((cx * y).sum().item()), float((x * ty).sum().item())
    assert abs(left - right) <= 1e-10 * max(1.0, abs(left))


# ---- dtypes and layout ---------------------------------------------------------------------------

@pytest.mark.parametrize("case,transpose", [ALL_CASES[1], ALL_CASES[-2]], ids=["conv", "convT"])
def test_float32_stays_float32(case, transpose, device, rng):
    x, w, b = make_inputs(case, transpose, device, rng, dtype=np.float32)
    y = run(case, transpose, x, w, b)
    assert y.dtype == np.float32
    gx, gw, gb = nn.grad(y, [x, w, b], nn.Tensor(np.ones(y.shape, np.float32)).to(device),
                         create_graph=True)
    assert gx.dtype == gw.dtype == gb.dtype == np.float32
    ggw, = nn.grad((gx * gx).sum(), [w])              # through Conv2dWeightGrad's backward too
    assert ggw.dtype == np.float32


def test_conv2d_output_is_channels_last_memory(device, rng):
    """The output is an NCHW view of NHWC memory, so the next layer's im2col reads whole runs."""
    x, w, b = make_inputs(CONV_CASES[1], False, device, rng)
    y = conv2d(x, w, stride=2, padding=1)
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous


# ---- errors -----------------------------------------------------------------------------------

def test_channel_mismatch_names_both_numbers():
    x, w = nn.Tensor(np.zeros((1, 3, 5, 5))), nn.Tensor(np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="3 channels.*expects 4"):
        conv2d(x, w)
    with pytest.raises(ValueError, match="3 channels.*expects 2"):
        conv_transpose2d(x, w)


def test_bad_sizes_and_arguments():
    x = nn.Tensor(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="output size would be 0x0"):
        conv2d(x, nn.Tensor(np.zeros((1, 2, 4, 4))))
    with pytest.raises(ValueError, match="output_padding .* must be smaller than stride"):
        conv_transpose2d(x, nn.Tensor(np.zeros((2, 1, 3, 3))), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output size would be"):
        conv_transpose2d(x, nn.Tensor(np.zeros((2, 1, 1, 1))), padding=2)
    with pytest.raises(ValueError, match="bias must have shape"):
        conv2d(x, nn.Tensor(np.zeros((3, 2, 1, 1))), bias=nn.Tensor(np.zeros(2)))
    with pytest.raises(ValueError, match="4-D"):
        conv2d(nn.Tensor(np.zeros((2, 3, 3))), nn.Tensor(np.zeros((1, 2, 1, 1))))
    with pytest.raises(ValueError, match="stride"):
        conv2d(x, nn.Tensor(np.zeros((1, 2, 1, 1))), stride=0)
    with pytest.raises(TypeError, match="float32 but weight is float64"):
        conv2d(nn.Tensor(np.zeros((1, 2, 3, 3), np.float32)), nn.Tensor(np.zeros((1, 2, 1, 1))))


def test_mixed_devices_are_an_error():
    if not nn.gpu_available():
        pytest.skip("needs CuPy and a CUDA device")
    x = nn.Tensor(np.zeros((1, 2, 5, 5)))
    w = nn.Tensor(np.zeros((3, 2, 3, 3))).to("gpu")
    with pytest.raises(RuntimeError, match="two devices"):
        conv2d(x, w)


# ---- agreement with PyTorch (skipped without it) -----------------------------------------------

@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("case,transpose", ALL_CASES, ids=IDS)
def test_matches_pytorch(case, transpose, dtype, tolerance, device, rng):
    pytest.importorskip("torch")
    assert_matches_pytorch(case, transpose, dtype, tolerance, device, rng)


def assert_matches_pytorch(case, transpose, dtype, tolerance, device, rng):
    """Output and the gradients of x, W and b for a random upstream gradient agree with PyTorch
    (tests/test_conv_routes.py runs it with each route forced)."""
    import torch
    x, w, b = make_inputs(case, transpose, device, rng, dtype=dtype)
    y = run(case, transpose, x, w, b)
    upstream = rng.standard_normal(y.shape).astype(dtype)
    y.backward(nn.Tensor(upstream).to(device))

    tx, tw, tb = (torch.tensor(t.numpy(), requires_grad=True) for t in (x, w, b))
    if transpose:
        ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride=case[7], padding=case[8],
                                                  output_padding=case[9])
    else:
        ty = torch.nn.functional.conv2d(tx, tw, tb, stride=case[7], padding=case[8])
    ty.backward(torch.tensor(upstream))
    for ours, theirs in [(y, ty), (x.grad, tx.grad), (w.grad, tw.grad), (b.grad, tb.grad)]:
        theirs = theirs.detach().numpy()
        assert ours.dtype == dtype and ours.shape == theirs.shape
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(to_numpy(ours.data), theirs, rtol=0, atol=tolerance * scale)
