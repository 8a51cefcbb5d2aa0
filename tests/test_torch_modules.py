"""Agreement with PyTorch (skipped when PyTorch is not installed): optimizers and BatchNorm2d,
and PyTorch state dicts loading into our layers with the same outputs."""
import numpy as np
import pytest

import nn


def same_parameters(shapes, seed):
    """The same starting values as our float32 Parameters and as torch tensors."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    return ours, theirs


def run_both(our_optimizer, torch_optimizer, ours, theirs, steps, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad = nn.Tensor(g)
            q.grad = torch.tensor(g)
        our_optimizer.step()
        torch_optimizer.step()
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings", [
    dict(lr=1e-3),
    dict(lr=2e-4, betas=(0.5, 0.999)),
    dict(lr=1e-2, betas=(0.0, 0.99), eps=1e-8, weight_decay=0.01),
])
def test_adam_matches_torch(settings):
    torch = pytest.importorskip("torch")
    ours, theirs = same_parameters([(4, 3), (3,), (2, 3, 3, 3)], seed=0)
    run_both(nn.optim.Adam(ours, **settings), torch.optim.Adam(theirs, **settings),
             ours, theirs, steps=6, seed=1)


def test_adam_parameter_groups_match_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = same_parameters([(5,), (2, 2)], seed=2)
    our_adam = nn.optim.Adam([{"params": ours[:1], "lr": 1e-2}, {"params": ours[1:]}], lr=1e-3)
    torch_adam = torch.optim.Adam([{"params": theirs[:1], "lr": 1e-2}, {"params": theirs[1:]}],
                                  lr=1e-3)
    run_both(our_adam, torch_adam, ours, theirs, steps=4, seed=3)


@pytest.mark.parametrize("settings", [dict(lr=0.1), dict(lr=0.05, momentum=0.9),
                                      dict(lr=0.05, momentum=0.5, weight_decay=0.1)])
def test_sgd_matches_torch(settings):
    torch = pytest.importorskip("torch")
    ours, theirs = same_parameters([(4, 3), (3,)], seed=4)
    run_both(nn.optim.SGD(ours, **settings), torch.optim.SGD(theirs, **settings),
             ours, theirs, steps=5, seed=5)


def test_batchnorm2d_matches_torch_in_training_and_eval():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.uniform(0.5, 2, 3).astype(np.float32)))
        theirs.bias.copy_(torch.tensor(rng.standard_normal(3).astype(np.float32)))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()
                          if k != "num_batches_tracked"})
    for step in range(3):
        x = (rng.standard_normal((4, 3, 5, 5)) * 3 + 1).astype(np.float32)
        upstream = rng.standard_normal(x.shape).astype(np.float32)
        x_ours, x_theirs = nn.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        np.testing.assert_allclose(y_ours.numpy(), y_theirs.detach().numpy(), atol=1e-5)
        y_ours.backward(nn.Tensor(upstream))
        y_theirs.backward(torch.tensor(upstream))
        np.testing.assert_allclose(x_ours.grad.numpy(), x_theirs.grad.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-5)
        ours.zero_grad(), theirs.zero_grad()
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name).numpy(),
                                       getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(nn.Tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), atol=1e-5)


def torch_pairs():
    torch = pytest.importorskip("torch")
    return [
        (nn.Linear(6, 4), torch.nn.Linear(6, 4), (3, 6)),
        (nn.Conv2d(2, 3, (3, 2), stride=2, padding=1), torch.nn.Conv2d(2, 3, (3, 2), 2, 1),
         (2, 2, 7, 6)),
        (nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1, output_padding=1),
         torch.nn.ConvTranspose2d(2, 3, 4, 2, 1, output_padding=1), (2, 2, 5, 5)),
        (nn.InstanceNorm2d(3, affine=True), torch.nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 4)),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2), (2, 3)),
    ]


def test_torch_state_dicts_load_into_our_layers_with_the_same_outputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for ours, theirs, shape in torch_pairs():
        assert [name for name, _ in ours.named_parameters()] == \
            [name for name, _ in theirs.named_parameters()]
        with torch.no_grad():
            for q in theirs.parameters():
                q.copy_(torch.tensor(rng.standard_normal(q.shape).astype(np.float32)))
        ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(ours(nn.Tensor(x)).numpy(),
                                   theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=type(ours).__name__)


def test_default_init_distributions_match_torch():
    """Same uniform ranges as PyTorch (compared through the standard deviation of many values)."""
    torch = pytest.importorskip("torch")
    nn.manual_seed(0), torch.manual_seed(0)
    pairs = [(nn.Linear(64, 512), torch.nn.Linear(64, 512)),
             (nn.Conv2d(4, 512, 3), torch.nn.Conv2d(4, 512, 3)),
             (nn.ConvTranspose2d(8, 512, 3), torch.nn.ConvTranspose2d(8, 512, 3))]
    for ours, theirs in pairs:
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            assert p.shape == tuple(q.shape)
            ratio = p.numpy().std() / q.detach().numpy().std()
            assert 0.9 < ratio < 1.1, (type(ours).__name__, name, ratio)
