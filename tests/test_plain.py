"""nn.plain: every plain version gives the fast version's numbers (values, gradients, second
derivatives), on the same cases as tests/test_conv.py, and a whole DCGAN step with the plain
versions switched on gives the same losses, weights and optimizer state."""
import copy

import numpy as np
import pytest

import nn
from nn.backend import to_numpy
from nn.tensor import topological_order
from models import dcgan
from train_dcgan import train_step
from test_conv import (ALL_CASES, IDS, conv2d_loops, conv_transpose2d_loops, make_inputs, run)


def modules_in(y):
    """The modules defining the Functions in the graph that produced y: only "nn.ops" (the
    primitives) for a plain version; a fast one has Functions of its own (nn.conv, ...)."""
    return {type(f).__module__ for f in topological_order([y])}


def value_gradients_and_second_order(compute, inputs, upstream):
    """y = compute(*inputs), its gradients for `upstream`, and the gradients of their squared sum
    (second order), as NumPy arrays; and the modules of the Functions in y's and the gradients'
    graphs."""
    y = compute(*inputs)
    grads = nn.grad(y, inputs, upstream, create_graph=True)
    second = nn.grad(sum((g * g).sum() for g in grads), inputs, allow_unused=True)
    used = modules_in(y) | set().union(*(modules_in(g) for g in grads))
    arrays = [y] + list(grads) + [g for g in second if g is not None]
    return [t.numpy() for t in arrays], used


def assert_all_close(fast, plain, tolerance):
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)


# ---- convolutions -------------------------------------------------------------------------------

@pytest.mark.parametrize("case,transpose", ALL_CASES, ids=IDS)
def test_plain_conv_matches_the_loop_reference(case, transpose, device, rng):
    """Forward, against tests/test_conv.py's independent loops over output pixels."""
    x, w, b = make_inputs(case, transpose, device, rng, requires_grad=False)
    loops = conv_transpose2d_loops if transpose else conv2d_loops
    expected = loops(x.numpy(), w.numpy(), b.numpy(), *case[7:])
    plain = nn.plain.conv_transpose2d if transpose else nn.plain.conv2d
    y = plain(x, w, b, *case[7:])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case,transpose", ALL_CASES, ids=IDS)
def test_plain_conv_equals_the_fast_one(case, transpose, device, rng):
    """Output, gradients of x, W and b, and second derivatives agree to 1e-11 (float64); with the
    switch on, the graph holds primitive ops only."""
    x, w, b = make_inputs(case, transpose, device, rng)
    upstream = nn.Tensor(rng.standard_normal(run(case, transpose, x, w, b).shape)).to(device)

    def compute(x, w, b):
        return run(case, transpose, x, w, b)

    fast, used_fast = value_gradients_and_second_order(compute, [x, w, b], upstream)
    with nn.plain.on():
        plain, used_plain = value_gradients_and_second_order(compute, [x, w, b], upstream)
    assert "nn.conv" in used_fast and used_plain == {"nn.ops"}
    assert_all_close(fast, plain, 1e-11)


def test_plain_conv_keeps_float32(device, rng):
    x, w, b = make_inputs(ALL_CASES[1][0], False, device, rng, dtype=np.float32)
    with nn.plain.on():
        y = nn.functional.conv2d(x, w, b, stride=2, padding=1)
        gx, gw = nn.grad(y.sum(), [x, w])
    assert y.dtype == gx.dtype == gw.dtype == np.float32


def test_switch_is_scoped_and_nests():
    assert not nn.plain.enabled
    with nn.plain.on():
        assert nn.plain.enabled
        with nn.plain.on(False):
            assert not nn.plain.enabled
        assert nn.plain.enabled
    with pytest.raises(KeyError):
        with nn.plain.on():
            raise KeyError("an error inside the block")
    assert not nn.plain.enabled


# ---- normalisation ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 5)], ids=["NC", "NCHW"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_plain_batch_norm_equals_the_fast_one(shape, training, device, rng, monkeypatch):
    """Output, gradients of x, weight and bias, second derivatives (1e-10, float64), and the
    running statistics after the call (1e-12)."""
    calls = []
    monkeypatch.setattr(nn.plain, "batch_norm",
                        lambda *args: calls.append(1) or nn.plain.norms.batch_norm(*args))
    c = shape[1]
    x = nn.Tensor(rng.standard_normal(shape) * 3 + 1, requires_grad=True).to(device)
    weight, bias = (nn.Tensor(rng.standard_normal(c), requires_grad=True).to(device)
                    for _ in range(2))
    start_mean, start_var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    upstream = nn.Tensor(rng.standard_normal(shape)).to(device)
    results, stats = {}, {}
    for version in ("fast", "plain"):
        running = [nn.Tensor(start_mean.copy()).to(device), nn.Tensor(start_var.copy()).to(device)]

        def compute(x, weight, bias):
            return nn.functional.batch_norm(x, *running, weight, bias, training=training,
                                            momentum=0.3)

        with nn.plain.on(version == "plain"):
            results[version] = value_gradients_and_second_order(compute, [x, weight, bias],
                                                                upstream)
        stats[version] = [r.numpy() for r in running]
    assert len(calls) == 1 and results["plain"][1] == {"nn.ops"}
    if training:   # the fast version fuses the standardisation into a Function of its own
        assert "nn.functional" in results["fast"][1]
    assert_all_close(results["fast"][0], results["plain"][0], 1e-10)
    assert_all_close(stats["fast"], stats["plain"], 1e-12)
    if training:   # the statistics moved
        assert not np.allclose(stats["plain"][0], start_mean)


def test_plain_instance_norm_equals_the_fast_one(device, rng):
    x = nn.Tensor(rng.standard_normal((3, 2, 4, 5)), requires_grad=True).to(device)
    weight, bias = (nn.Tensor(rng.standard_normal(2), requires_grad=True).to(device)
                    for _ in range(2))
    upstream = nn.Tensor(rng.standard_normal(x.shape)).to(device)
    fast, used_fast = value_gradients_and_second_order(nn.functional.instance_norm,
                                                       [x, weight, bias], upstream)
    with nn.plain.on():
        plain, used_plain = value_gradients_and_second_order(nn.functional.instance_norm,
                                                             [x, weight, bias], upstream)
    assert "nn.functional" in used_fast and used_plain == {"nn.ops"}
    assert_all_close(fast, plain, 1e-10)


# ---- Adam ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_plain_adam_equals_the_fast_one(dtype, tolerance, weight_decay, device, rng,
                                        monkeypatch):
    """Five steps with changing gradients: the same parameters and state (m, v, t); float32
    stays float32 even with NumPy float64 hyperparameters (as a loaded state dict gives)."""
    start = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in start] for _ in range(5)]
    calls = []
    monkeypatch.setattr(nn.plain, "adam_update",
                        lambda *args: calls.append(1) or nn.plain.optim.adam_update(*args))
    finals = {}
    for version in ("fast", "plain"):
        params = [nn.Parameter(p.copy()).to(device) for p in start]
        opt = nn.optim.Adam(params, lr=np.float64(0.01), betas=(np.float64(0.8), 0.99),
                            weight_decay=weight_decay)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = nn.Tensor(g).to(device)
            with nn.plain.on(version == "plain"):
                opt.step()
        assert all(p.dtype == dtype for p in params)
        state = opt.state_dict()["state"]
        finals[version] = [p.numpy() for p in params] + [
            s[key] for s in state.values() for key in ("exp_avg", "exp_avg_sq")]
        assert [s["step"] for s in state.values()] == [5, 5]
    assert len(calls) == 5 * len(start)          # the plain update ran, once per parameter
    assert all(a.dtype == dtype for a in finals["plain"])
    assert_all_close(finals["fast"], finals["plain"], tolerance)


# ---- a whole DCGAN training step ----------------------------------------------------------------

def test_dcgan_training_steps_equal_with_the_plain_versions(device, rng):
    """Two DCGAN steps (16x16, batch 4, float64) from the same weights: the same losses (1e-10)
    and the same weights, batch-norm statistics and Adam state afterwards (1e-9)."""
    nn.manual_seed(0)
    G = dcgan.init_weights(dcgan.Generator(16, 8, 4))
    D = dcgan.init_weights(dcgan.Discriminator(16, 4))
    real = nn.Tensor(rng.uniform(-1, 1, (4, 1, 16, 16))).to(device)
    zs = [nn.Tensor(rng.standard_normal((4, 8))).to(device) for _ in range(2)]
    results = {}
    for version in ("fast", "plain"):
        g, d = copy.deepcopy(G).double().to(device), copy.deepcopy(D).double().to(device)
        opt_g = nn.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = nn.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        with nn.plain.on(version == "plain"), nn.profile() as prof:
            losses = [train_step(g, d, opt_g, opt_d, real, z) for z in zs]
        ops = {row["op"] for row in prof.rows}
        assert ("Conv2d" in ops) == (version == "fast")     # the switch reached every layer
        state = [a for opt in (opt_g, opt_d) for s in opt.state_dict()["state"].values()
                 for a in (s["exp_avg"], s["exp_avg_sq"])]
        values = [[to_numpy(step[k]) for k in sorted(step)] for step in losses]   # device 0-d
        results[version] = (np.array(values),
                            [to_numpy(a) for m in (g, d) for a in m.state_dict().values()] + state)
    np.testing.assert_allclose(results["plain"][0], results["fast"][0], rtol=1e-10, atol=1e-10)
    assert_all_close(results["fast"][1], results["plain"][1], 1e-9)
    before = [to_numpy(a) for a in G.state_dict().values()]
    after = results["plain"][1][:len(before)]
    assert not all(np.allclose(a, b) for a, b in zip(after, before))    # G did learn something
