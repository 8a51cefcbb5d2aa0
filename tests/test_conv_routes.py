"""nn/conv.py's routes, each forced on odd sizes, strides and paddings: im2col in blocks (A),
gathering on the phase grid with both gradients from one set of columns (B), scattering (C).
Each is checked in float64 against the plain version (nn/plain/conv.py: values, gradients with a
random upstream gradient, second derivatives), against finite differences (first and second
order), and against PyTorch when it is installed."""
import numpy as np
import pytest

import nn
import nn.conv
from nn.tensor import topological_order
from test_conv import assert_matches_pytorch, make_inputs, run

# conv2d: (N, C_in, C_out, H, W, kh, kw, stride, padding)
CONV = [
    (2, 3, 4, 9, 7, 3, 3, 1, 1),                 # a 3x3 "same" conv, odd sizes
    (2, 2, 3, 7, 9, 4, 4, 2, 1),                 # DCGAN's D layer, odd sizes: rows dropped
    (1, 3, 2, 8, 6, 4, 4, 2, 0),                 # padding a multiple of the stride: no waste
    (2, 2, 2, 9, 8, 4, 2, (2, 1), (3, 0)),       # per-axis stride, padding larger than s
    (2, 3, 2, 7, 7, 3, 3, 3, 1),                 # stride 3 with a 3x3 kernel: one tap per phase
    (2, 2, 3, 6, 7, 3, 3, 2, 1),                 # kernel not a multiple of the stride: route C
    (1, 2, 2, 6, 5, 2, 3, 1, 0),                 # "valid", non-square kernel
    (2, 3, 2, 5, 4, 1, 1, 1, 0),                 # 1x1
    (2, 1, 4, 8, 8, 4, 4, 2, 1),                 # one input channel, like DCGAN's D1
]
# conv_transpose2d: (N, C_in, C_out, H, W, kh, kw, stride, padding, output_padding)
TRANSPOSE = [
    (2, 3, 2, 4, 3, 4, 4, 2, 1, 0),              # DCGAN's G layer
    (2, 2, 3, 3, 4, 4, 4, 2, 1, 1),              # output_padding
    (2, 3, 2, 1, 1, 4, 4, 1, 0, 0),              # 1x1 -> 4x4 (G1)
    (2, 2, 2, 5, 4, 3, 3, 1, 1, 0),              # the input gradient of a "same" conv
    (2, 2, 2, 6, 5, 2, 2, 1, 2, 0),              # padding >= kernel: the output is cropped
    (1, 2, 3, 3, 4, 4, 2, (2, 1), (1, 0), (1, 0)),
    (2, 2, 2, 3, 3, 3, 3, 3, 1, 2),              # stride 3, output_padding 2
]
CASES = [(c, False) for c in CONV] + [(c, True) for c in TRANSPOSE]
IDS = [("convT" if t else "conv") + "-".join(map(str, c)) for c, t in CASES]
# (route B where the kernel allows it, or never) x (blocks of one pixel row, of 7 pixels, one)
ROUTES = [("B", 1), ("B", 7), ("B", 10 ** 9), ("C", 1), ("C", 10 ** 9)]
ROUTE_IDS = [f"{route}-blocks{pixels}" for route, pixels in ROUTES]


@pytest.fixture(params=ROUTES, ids=ROUTE_IDS)
def route(request, monkeypatch):
    """Force route B (gather whenever the kernel is a multiple of the stride) or C (never), and
    the block size of the im2col blocks."""
    name, pixels = request.param
    monkeypatch.setattr(nn.conv, "BLOCK_PIXELS", pixels)
    if name == "B":
        def gather(in_size, out_size, weight_shape, stride, padding, with_weight_grad=False):
            return all(k % s == 0 for k, s in zip(weight_shape[2:], stride))
    else:
        def gather(*args, **kwargs):
            return False
    monkeypatch.setattr(nn.conv, "_uses_gather", gather)
    return name


def everything(case, transpose, x, w, b, upstream):
    """y, its gradients for x, W, b with the upstream gradient, and the gradients of the sum of
    their squares (second order), as NumPy arrays."""
    y = run(case, transpose, x, w, b)
    grads = nn.grad(y, [x, w, b], upstream, create_graph=True)
    second = nn.grad(sum((g * g).sum() for g in grads), [x, w, b], allow_unused=True)
    return [t.numpy() for t in [y, *grads, *(g for g in second if g is not None)]]


@pytest.mark.parametrize("case,transpose", CASES, ids=IDS)
def test_route_equals_the_plain_version(case, transpose, route, device, rng):
    x, w, b = make_inputs(case, transpose, device, rng)
    upstream = nn.Tensor(rng.standard_normal(run(case, transpose, x, w, b).shape)).to(device)
    fast = everything(case, transpose, x, w, b, upstream)
    with nn.plain.on():
        plain = everything(case, transpose, x, w, b, upstream)
    assert len(fast) == len(plain) == 6      # y, gx, gW, gb, and second order for x and W
    for a, expected in zip(fast, plain):
        assert a.shape == expected.shape
        np.testing.assert_allclose(a, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case,transpose", CASES, ids=IDS)
def test_route_gradcheck(case, transpose, route, device, rng):
    x, w, b = make_inputs(case, transpose, device, rng)
    assert nn.gradcheck(lambda x, w, b: run(case, transpose, x, w, b), [x, w, b])


@pytest.mark.parametrize("case,transpose", CASES, ids=IDS)
def test_route_gradgradcheck(case, transpose, route, device, rng):
    """Second order, as WGAN-GP and R1 need: differentiates Conv2dGradients /
    ConvTranspose2dGradients (both gradients at once) and their backward."""
    x, w, b = make_inputs(case, transpose, device, rng)
    assert nn.gradgradcheck(lambda x, w, b: run(case, transpose, x, w, b), [x, w, b])


@pytest.mark.parametrize("needed", ["x", "w"])
@pytest.mark.parametrize("case,transpose", [CASES[1], CASES[len(CONV)]], ids=["conv", "convT"])
def test_one_gradient_alone_second_order(case, transpose, needed, route, device, rng):
    """A penalty differentiates one gradient only (d D / d x): the single-gradient Functions,
    ConvTranspose2d and Conv2dWeightGrad, differentiated again."""
    x, w, b = make_inputs(case, transpose, device, rng)

    def one_gradient(x, w, b):
        y = run(case, transpose, x, w, b)
        upstream = nn.Tensor(np.linspace(-1, 1, y.size).reshape(y.shape)).to(device)
        g, = nn.grad(y, [x if needed == "x" else w], upstream, create_graph=True)
        return g
    assert nn.gradcheck(one_gradient, [x, w, b])


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("case,transpose", CASES, ids=IDS)
def test_route_matches_pytorch(case, transpose, dtype, tolerance, route, device, rng):
    pytest.importorskip("torch")
    assert_matches_pytorch(case, transpose, dtype, tolerance, device, rng)


@pytest.mark.parametrize("case,transpose", [CASES[1], CASES[4], CASES[len(CONV)]],
                         ids=["conv-s2", "conv-s3", "convT-s2"])
def test_route_keeps_float32(case, transpose, route, device, rng):
    x, w, b = make_inputs(case, transpose, device, rng, dtype=np.float32)
    y = run(case, transpose, x, w, b)
    gx, gw = nn.grad(y, [x, w], nn.Tensor(np.ones(y.shape, np.float32)).to(device),
                     create_graph=True)
    ggx, ggw = nn.grad((gx * gx).sum() + (gw * gw).sum(), [x, w])
    assert {t.dtype for t in (y, gx, gw, ggx, ggw)} == {np.dtype(np.float32)}


# ---- which route a shape takes ------------------------------------------------------------------

def test_both_gradients_come_from_one_function(device, rng):
    """conv2d's backward with both gradients wanted is one Conv2dGradients on route B, the two
    single Functions on route C (kernel not a multiple of the stride)."""
    def functions_in_backward(case):
        x, w, _ = make_inputs(case, False, device, rng)
        y = nn.conv.conv2d(x, w, stride=case[7], padding=case[8])
        gx, gw = nn.grad(y.sum(), [x, w], create_graph=True)
        return {type(f).__name__ for f in topological_order([gx, gw])}
    assert "Conv2dGradients" in functions_in_backward(CONV[0])
    single = functions_in_backward(CONV[5])
    assert {"ConvTranspose2d", "Conv2dWeightGrad"} <= single
    assert "Conv2dGradients" not in single


@pytest.mark.parametrize("layer,expected", [
    # (in_size, gy size, weight (O, C, kh, kw), stride, padding, with the weight gradient)
    (((64, 64), (64, 64), (64, 64, 3, 3), (1, 1), (1, 1), True), True),     # 3x3 "same"
    (((64, 64), (64, 64), (8, 16, 3, 3), (1, 1), (1, 1), True), True),      # narrow
    (((32, 32), (16, 16), (128, 64, 4, 4), (2, 2), (1, 1), True), True),    # DCGAN D2
    (((64, 64), (32, 32), (64, 1, 4, 4), (2, 2), (1, 1), True), False),     # D1: C = 1
    (((16, 16), (8, 8), (256, 128, 4, 4), (2, 2), (1, 1), True), False),    # D3: 27% waste
    (((4, 4), (1, 1), (100, 512, 4, 4), (1, 1), (0, 0), False), False),     # G1: 1x1 -> 4x4
    (((8, 8), (4, 4), (512, 256, 4, 4), (2, 2), (1, 1), False), False),     # G2: a 5x5 grid
    (((16, 16), (8, 8), (3, 3, 3, 3), (2, 2), (1, 1), True), False),        # k % s != 0
])
def test_route_choice(layer, expected):
    assert nn.conv._uses_gather(*layer[:5], with_weight_grad=layer[5]) is expected


@pytest.mark.parametrize("n,h,w,pixels", [(3, 5, 4, 1), (3, 5, 4, 7), (3, 5, 4, 20),
                                          (3, 5, 4, 45), (2, 3, 3, 10 ** 9)])
def test_blocks_cover_every_pixel_once(n, h, w, pixels, monkeypatch):
    monkeypatch.setattr(nn.conv, "BLOCK_PIXELS", pixels)
    seen = np.zeros((n, h, w), dtype=int)
    for images, rows in nn.conv._blocks(n, h, w, np):
        seen[images, rows] += 1
        block = seen[images, rows]
        assert block.size <= max(pixels, w) or rows == slice(0, h)
    assert (seen == 1).all()


@pytest.mark.parametrize("first,count,step,offset,size", [
    (0, 5, 2, -1, 8), (0, 5, 2, 0, 8), (3, 2, 2, -1, 8), (4, 1, 2, -1, 8), (0, 3, 3, -1, 7),
    (2, 4, 1, -2, 3)])
def test_inside_keeps_the_rows_that_land_inside(first, count, step, offset, size):
    grid_rows, target_rows = nn.conv._inside(first, count, step, offset, size)
    expected = [(i, step * (first + i) + offset) for i in range(count)
                if 0 <= step * (first + i) + offset < size]
    got = list(zip(range(count)[grid_rows], range(size)[target_rows]))
    assert got == expected
