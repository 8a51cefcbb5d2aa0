"""Optimizers: hand-computed SGD and Adam updates, parameter groups, exact resuming."""
import numpy as np
import pytest

import nn


def parameter(values, device="cpu", dtype=np.float64):
    return nn.Parameter(np.asarray(values, dtype=dtype)).to(device)


def set_grad(p, values):
    p.grad = nn.Tensor(np.asarray(values, dtype=p.dtype)).to(p.device)


GRADS = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.2], [-1.5, 0.0, 0.7], [0.2, 0.2, 0.2]]


def test_sgd_plain_step(device):
    p = parameter([1.0, 2.0, 3.0], device)
    optimizer = nn.optim.SGD([p], lr=0.1)
    set_grad(p, GRADS[0])
    optimizer.step()
    np.testing.assert_allclose(p.numpy(), [0.95, 2.1, 2.8])


def test_sgd_momentum_and_weight_decay_by_hand(device):
    p = parameter([1.0, 2.0, 3.0], device)
    optimizer = nn.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    expected, buf = np.array([1.0, 2.0, 3.0]), None
    for g in GRADS:
        set_grad(p, g)
        optimizer.step()
        d = np.array(g) + 0.01 * expected
        buf = d if buf is None else 0.9 * buf + d
        expected = expected - 0.1 * buf
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(p.grad.numpy(), GRADS[-1])  # the gradient itself is untouched


def adam_by_hand(p, grads, lr, beta1, beta2, eps, weight_decay=0.0):
    """The textbook formula with bias-corrected moments (Kingma & Ba, algorithm 1)."""
    p, m, v = np.array(p, dtype=np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        g = np.array(g) + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_hand_computed_steps(device, weight_decay):
    p = parameter([1.0, 2.0, 3.0], device)
    optimizer = nn.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-3, weight_decay=weight_decay)
    for step in range(1, len(GRADS) + 1):
        set_grad(p, GRADS[step - 1])
        optimizer.step()
        expected = adam_by_hand([1.0, 2.0, 3.0], GRADS[:step], 0.01, 0.8, 0.99, 1e-3, weight_decay)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    assert optimizer.state[0]["step"] == len(GRADS)


def test_adam_first_step_moves_each_element_by_lr():
    """With bias correction the first update is lr * g / (|g| + eps): about lr per element."""
    p = parameter(np.zeros(4))
    set_grad(p, [3.0, -0.001, 50.0, -2.0])
    nn.optim.Adam([p], lr=0.5, eps=1e-12).step()
    np.testing.assert_allclose(p.numpy(), [-0.5, 0.5, -0.5, 0.5])


def test_parameter_groups_have_their_own_learning_rates(device):
    a, b = parameter([1.0], device), parameter([1.0], device)
    optimizer = nn.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1, momentum=0.0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.1]
    assert optimizer.param_groups[1]["momentum"] == 0.0
    set_grad(a, [1.0]), set_grad(b, [1.0])
    optimizer.step()
    np.testing.assert_allclose([a.item(), b.item()], [0.5, 0.9])
    optimizer.param_groups[1]["lr"] = 0.2  # learning rates can be changed between steps
    optimizer.step()
    np.testing.assert_allclose([a.item(), b.item()], [0.0, 0.7])


def test_parameters_without_gradient_are_skipped():
    a, b = parameter([1.0]), parameter([1.0])
    optimizer = nn.optim.Adam([a, b], lr=0.1)
    set_grad(a, [1.0])
    optimizer.step()
    assert b.item() == 1.0 and 1 not in optimizer.state
    set_grad(b, [1.0])
    optimizer.step()
    assert optimizer.state[0]["step"] == 2 and optimizer.state[1]["step"] == 1
    np.testing.assert_allclose(b.item(), 0.9)  # b's first step is bias-corrected as a first step


def test_zero_grad_clears_gradients():
    p = parameter([1.0, 2.0])
    optimizer = nn.optim.SGD([p], lr=0.1)
    set_grad(p, [1.0, 1.0])
    optimizer.zero_grad()
    assert p.grad is None


def test_float32_stays_float32(device):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 1)).to(device)
    x = nn.Tensor(np.ones((2, 1, 3, 3), dtype=np.float32)).to(device)
    for optimizer in (nn.optim.Adam(model.parameters(), weight_decay=0.1),
                      nn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)):
        for _ in range(2):
            optimizer.zero_grad()
            model(x).mean().backward()
            optimizer.step()
        assert all(p.dtype == np.float32 for p in model.parameters())
        assert all(a.dtype == np.float32 for s in optimizer.state.values()
                   for a in s.values() if hasattr(a, "dtype"))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="empty"):
        nn.optim.Adam([])
    p = parameter([1.0])
    with pytest.raises(ValueError, match="twice"):
        nn.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        nn.optim.Adam([p], betas=(0.9, 1.0))


# ---- saving and resuming -------------------------------------------------------------------------

def make_training(seed, optimizer_class, device, **settings):
    nn.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.LeakyReLU(0.2),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).to(device)
    head = list(model.parameters())[-2:]
    body = list(model.parameters())[:-2]
    optimizer = optimizer_class([{"params": body}, {"params": head, "lr": 0.003}], **settings)
    return model, optimizer


def train_steps(model, optimizer, steps, first_seed, device):
    for step in range(first_seed, first_seed + steps):
        rng = np.random.default_rng(step)
        x = nn.Tensor(rng.standard_normal((4, 1, 4, 4)).astype(np.float32)).to(device)
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("optimizer_class, settings", [
    (nn.optim.Adam, dict(lr=0.01, betas=(0.5, 0.99))),
    (nn.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
])
def test_resuming_from_a_checkpoint_continues_bit_identically(tmp_path, device, optimizer_class,
                                                                settings):
    model, optimizer = make_training(0, optimizer_class, device, **settings)
    train_steps(model, optimizer, 3, 0, device)
    nn.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 3},
            tmp_path / "checkpoint.npz")
    train_steps(model, optimizer, 3, 3, device)  # the uninterrupted run

    resumed_model, resumed_optimizer = make_training(1, optimizer_class, device, lr=1.0)
    checkpoint = nn.load(tmp_path / "checkpoint.npz")
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert resumed_optimizer.param_groups[1]["lr"] == 0.003
    assert resumed_optimizer.param_groups[0]["lr"] == settings["lr"]
    train_steps(resumed_model, resumed_optimizer, 3, checkpoint["step"], device)
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_optimizer_state_dict_is_plain_and_a_copy():
    p = parameter([1.0, 2.0])
    optimizer = nn.optim.Adam([p], lr=0.1, betas=(0.0, 0.99))
    set_grad(p, [1.0, 1.0])
    optimizer.step()
    state = optimizer.state_dict()
    assert state["param_groups"] == [{"lr": 0.1, "betas": [0.0, 0.99], "eps": 1e-8,
                                      "weight_decay": 0.0, "params": [0]}]
    assert state["state"]["0"]["step"] == 1
    state["state"]["0"]["exp_avg"][...] = 99
    assert optimizer.state[0]["exp_avg"][0] != 99


def test_load_state_dict_refuses_a_different_model():
    a, b = parameter([1.0]), parameter([1.0, 2.0])
    saved = nn.optim.Adam([a]).state_dict()
    with pytest.raises(ValueError, match="sizes"):
        nn.optim.Adam([a, b]).load_state_dict(saved)
    optimizer = nn.optim.Adam([a])
    set_grad(a, [1.0])
    optimizer.step()
    with pytest.raises(ValueError, match="shape"):
        nn.optim.Adam([b]).load_state_dict(optimizer.state_dict())


def test_optimizer_state_follows_a_moved_model(device):
    p = nn.Parameter(np.array([1.0, 2.0], dtype=np.float32))
    module = nn.Module()
    module.p = p
    optimizer = nn.optim.Adam(module.parameters(), lr=0.1)
    set_grad(p, [1.0, 1.0])
    optimizer.step()
    module.double().to(device)
    set_grad(p, [1.0, 1.0])
    optimizer.step()
    assert p.dtype == np.float64 and p.device == device
    assert optimizer.state[0]["exp_avg"].dtype == np.float64
    np.testing.assert_allclose(p.numpy(), [0.8, 1.8], rtol=1e-6)


def test_update_average_moves_weights_and_copies_batch_norm_statistics(device):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(device)
    average = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(device)
    before = average[0].weight.numpy().copy()
    x = np.random.default_rng(0).standard_normal((4, 1, 5, 5)).astype(np.float32)
    model(nn.Tensor(x).to(device))                               # training mode: stats move
    nn.optim.update_average(average, model, beta=0.75)
    expected = 0.75 * before + 0.25 * model[0].weight.numpy()
    np.testing.assert_allclose(average[0].weight.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert average[0].weight.dtype == np.float32
    np.testing.assert_array_equal(average[1].running_mean.numpy(), model[1].running_mean.numpy())
    assert np.abs(model[1].running_mean.numpy()).max() > 0       # the statistics really moved


# ---- the GPU's fused kernels (cupy.fuse), counted on the CuPy stand-in ---------------------------

def adam_parameters(device, dtype, shapes=((3, 4), (5,), (2, 3, 3, 3))):
    """Parameters of a few shapes on `device`, and their gradients for 6 steps (NumPy)."""
    rng = np.random.default_rng(0)
    params = [parameter(rng.standard_normal(shape), device, dtype) for shape in shapes]
    grads = [[rng.standard_normal(shape) for shape in shapes] for _ in range(6)]
    return params, grads


def adam_steps(params, grads, plain=False, **settings):
    """Adam over `params` for every step of `grads`; with plain=True under nn.plain.on()."""
    optimizer = nn.optim.Adam(params, **settings)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            set_grad(p, g)
        with nn.plain.on(plain):
            optimizer.step()
    return [p.numpy() for p in params]


ADAM = dict(lr=0.01, betas=(0.5, 0.99), eps=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_fused_adam_equals_the_plain_adam_over_several_steps(cupy_standin, weight_decay):
    """The GPU's one-kernel Adam (adam_kernel under cupy.fuse, float32) against the 4-line plain
    version (nn/plain/optim.py) in float64, over 6 steps: float32 rounding apart, the same."""
    params, grads = adam_parameters("gpu", np.float32)
    fused = adam_steps(params, grads, weight_decay=weight_decay, **ADAM)
    reference_params, _ = adam_parameters("cpu", np.float64)
    reference = adam_steps(reference_params, grads, plain=True, weight_decay=weight_decay, **ADAM)
    for found, expected in zip(fused, reference):
        assert found.dtype == np.float32
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
    assert cupy_standin._standin.counters()["by_kind"].get("fuse:adam_kernel", 0) == 6 * 3


def test_the_adam_kernel_computes_the_cpu_paths_bits():
    """adam_kernel run as a plain function (what cupy.fuse does with NumPy arrays) does the CPU
    path's operations in the same order: the same float32 bits."""
    params, grads = adam_parameters("cpu", np.float32)
    cpu_path = adam_steps(params, grads, **ADAM)
    p = np.asarray(adam_parameters("cpu", np.float32)[0][0].data)
    m, v = np.zeros_like(p), np.zeros_like(p)
    beta1, beta2 = ADAM["betas"]
    for t, step_grads in enumerate(grads, start=1):
        f = np.float32
        nn.optim.adam_kernel(p, step_grads[0].astype(np.float32), m, v, f(beta1), f(1 - beta1),
                             f(beta2), f(1 - beta2), f(ADAM["lr"] / (1 - beta1 ** t)),
                             f(np.sqrt(1 - beta2 ** t)), f(ADAM["eps"]))
    np.testing.assert_array_equal(p, cpu_path[0])


@pytest.mark.parametrize("weight_decay, per_parameter", [(0.0, 1), (0.1, 2)])
def test_adam_on_the_gpu_launches_at_most_two_kernels_per_parameter(cupy_standin, weight_decay,
                                                                      per_parameter):
    """Issue 22's target: at most 2 launches per parameter per step (it was 13): one fused
    kernel, and one more for the weight decay when there is one."""
    params, grads = adam_parameters("gpu", np.float32)
    optimizer = nn.optim.Adam(params, weight_decay=weight_decay, **ADAM)
    for step_grads in grads[:2]:
        for p, g in zip(params, step_grads):
            set_grad(p, g)
        with cupy_standin._standin.counting() as counts:
            optimizer.step()                  # the first step also makes m and v (2 fills each)
    assert counts.launches == per_parameter * len(params), \
        f"Adam launched {counts.launches} kernels for {len(params)} parameters: {counts.by_kind}"
    assert counts.host_reads == 0 and counts.host_to_device == 0


def test_the_average_of_g_is_one_kernel_per_parameter_on_the_gpu(cupy_standin):
    rng = np.random.default_rng(1)
    model, average = (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)) for _ in range(2))
    for p in list(model.parameters()) + list(average.parameters()):
        p.data[...] = rng.standard_normal(p.shape)
    expected = [a.numpy() + (p.numpy() - a.numpy()) * np.float32(1 - 0.9)
                for a, p in zip(average.parameters(), model.parameters())]
    model.to("gpu"), average.to("gpu")
    with cupy_standin._standin.counting() as counts:
        nn.optim.update_average(average, model, beta=0.9)
    assert counts.launches == 4, f"{counts.launches} launches for 4 parameters: {counts.by_kind}"
    for found, want in zip(average.parameters(), expected):
        np.testing.assert_array_equal(found.numpy(), want)       # NumPy's bits: one formula
