"""The DCGAN model: shapes at every image size, the paper's initialisation, agreement with the
PyTorch example's architecture, one training step, and sampling from a checkpoint."""
import numpy as np
import pytest

import nn
import settings.dcgan
from models import dcgan
from train_dcgan import train_step


def build(size, width=4, nz=8, seed=0):
    nn.manual_seed(seed)
    return dcgan.init_weights(dcgan.Generator(size, nz, width)), \
        dcgan.init_weights(dcgan.Discriminator(size, width))


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_at_every_image_size(size):
    G, D = build(size, width=2)
    z = nn.Tensor(np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32))
    images = G(z)
    assert images.shape == (2, 1, size, size) and images.dtype == np.float32
    assert np.abs(images.numpy()).max() <= 1.0                       # tanh output
    logits = D(images)
    assert logits.shape == (2,) and logits.dtype == np.float32
    # one stride-2 layer per doubling: 4x4 -> size takes log2(size) - 2 upsampling layers
    transposed = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == int(np.log2(size)) - 1


def test_widths_follow_the_pytorch_example_and_cap_at_8x():
    assert dcgan.widths(64, 64) == [(4, 512), (8, 256), (16, 128), (32, 64)]
    assert [c for _, c in dcgan.widths(256, 8)] == [64, 64, 64, 32, 16, 8]
    with pytest.raises(ValueError, match="power of two"):
        dcgan.widths(48, 8)


def test_parameter_counts_match_the_pytorch_example():
    """ngf = ndf = 64, nz = 100, one channel: the PyTorch DCGAN example has these counts."""
    G, D = build(64, width=64, nz=100)
    assert sum(p.size for p in G.parameters()) == 3_574_656
    assert sum(p.size for p in D.parameters()) == 2_763_520


def test_batch_norm_placement_follows_the_paper():
    """No batch norm on G's output layer nor on D's input layer (Radford et al. section 3)."""
    G, D = build(64)
    g_layers, d_layers = list(G.main), list(D.main)
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(g_layers[-2], nn.ConvTranspose2d)
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)
    assert d_layers[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3


def test_initialisation_is_normal_0_002_and_batch_norm_scale_near_1():
    G, D = build(64, width=32, nz=100)
    conv = np.concatenate([m.weight.numpy().ravel() for m in list(G.modules()) + list(D.modules())
                           if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(conv.mean()) < 1e-3 and conv.std() == pytest.approx(0.02, rel=0.02)
    scales = np.concatenate([m.weight.numpy() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    shifts = np.concatenate([m.bias.numpy() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.mean() == pytest.approx(1.0, abs=0.01) and scales.std() == pytest.approx(0.02, rel=0.2)
    assert np.all(shifts == 0)
    assert all(p.dtype == np.float32 for p in G.parameters())


def torch_twins(G, D, size, width, nz):
    """The PyTorch example's G and D for these sizes, holding copies of our weights."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    c = [channels for _, channels in dcgan.widths(size, width)]
    g_layers = [tnn.ConvTranspose2d(nz, c[0], 4, 1, 0, bias=False), tnn.BatchNorm2d(c[0]), tnn.ReLU()]
    for a, b in zip(c, c[1:]):
        g_layers += [tnn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), tnn.BatchNorm2d(b), tnn.ReLU()]
    g_layers += [tnn.ConvTranspose2d(c[-1], 1, 4, 2, 1, bias=False), tnn.Tanh()]
    c = c[::-1]
    d_layers = [tnn.Conv2d(1, c[0], 4, 2, 1, bias=False), tnn.LeakyReLU(0.2)]
    for a, b in zip(c, c[1:]):
        d_layers += [tnn.Conv2d(a, b, 4, 2, 1, bias=False), tnn.BatchNorm2d(b), tnn.LeakyReLU(0.2)]
    d_layers += [tnn.Conv2d(c[-1], 1, 4, 1, 0, bias=False), tnn.Flatten(0)]
    tG, tD = tnn.Sequential(*g_layers), tnn.Sequential(*d_layers)
    for ours, theirs in ((G.main, tG), (D.main, tD)):
        own = ours.state_dict()
        assert list(own) == [k for k in theirs.state_dict() if "num_batches" not in k]
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in own.items()}, strict=False)
    return tG, tD


def assert_same_weights(ours, theirs, atol):
    for key, value in ours.main.state_dict().items():
        np.testing.assert_allclose(value, theirs.state_dict()[key].numpy(), atol=atol, err_msg=key)


def test_forward_equals_the_pytorch_architecture_with_the_same_weights():
    G, D = build(32, width=4, nz=8)
    tG, tD = torch_twins(G, D, 32, 4, 8)
    import torch
    z = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    ours_images = G(nn.Tensor(z))
    theirs_images = tG(torch.from_numpy(z).reshape(4, 8, 1, 1))
    np.testing.assert_allclose(ours_images.numpy(), theirs_images.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(D(ours_images).numpy(), tD(theirs_images).detach().numpy(), atol=2e-5)


def test_training_steps_equal_the_pytorch_example():
    """Several train_step calls give the weights (and losses) of the same steps in PyTorch."""
    G, D = build(32, width=4, nz=8)
    tG, tD = torch_twins(G, D, 32, 4, 8)
    import torch
    import torch.nn.functional as tF
    adam = dict(lr=2e-4, betas=(0.5, 0.999))
    opt_g, opt_d = nn.optim.Adam(G.parameters(), **adam), nn.optim.Adam(D.parameters(), **adam)
    t_opt_g, t_opt_d = torch.optim.Adam(tG.parameters(), **adam), torch.optim.Adam(tD.parameters(), **adam)
    rng = np.random.default_rng(0)
    ones, zeros = torch.ones(6), torch.zeros(6)
    for _ in range(5):
        real = rng.uniform(-1, 1, (6, 1, 32, 32)).astype(np.float32)
        z = rng.standard_normal((6, 8)).astype(np.float32)
        losses = train_step(G, D, opt_g, opt_d, nn.Tensor(real), nn.Tensor(z))
        fake = tG(torch.from_numpy(z).reshape(6, 8, 1, 1))                 # the PyTorch example
        loss_d = (tF.binary_cross_entropy_with_logits(tD(torch.from_numpy(real)), ones)
                  + tF.binary_cross_entropy_with_logits(tD(fake.detach()), zeros))
        t_opt_d.zero_grad()
        loss_d.backward()
        t_opt_d.step()
        loss_g = tF.binary_cross_entropy_with_logits(tD(fake), ones)
        t_opt_g.zero_grad()
        loss_g.backward()
        t_opt_g.step()
        assert losses["loss_d"] == pytest.approx(loss_d.item(), abs=1e-5)
        assert losses["loss_g"] == pytest.approx(loss_g.item(), abs=1e-5)
    assert_same_weights(G, tG, atol=1e-6)
    assert_same_weights(D, tD, atol=1e-6)


def test_one_training_step_updates_both_networks_and_reports_finite_losses():
    G, D = build(16)
    opt_g = nn.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = nn.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g0 = [p.numpy().copy() for p in G.parameters()]
    d0 = [p.numpy().copy() for p in D.parameters()]
    rng = np.random.default_rng(0)
    real = nn.Tensor(rng.uniform(-1, 1, (4, 1, 16, 16)).astype(np.float32))
    z = nn.Tensor(rng.standard_normal((4, 8)).astype(np.float32))
    losses = train_step(G, D, opt_g, opt_d, real, z)
    assert set(losses) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in losses.values())
    # at initialisation D is undecided: both losses are near their chance values 2 ln 2 and ln 2
    assert losses["loss_d"] == pytest.approx(2 * np.log(2), abs=0.3)
    assert losses["loss_g"] == pytest.approx(np.log(2), abs=0.3)
    assert all(not np.array_equal(a, p.numpy()) for a, p in zip(g0, G.parameters()))
    assert all(not np.array_equal(a, p.numpy()) for a, p in zip(d0, D.parameters()))
    assert all(p.dtype == np.float32 for p in list(G.parameters()) + list(D.parameters()))


def test_generate_uses_running_statistics_and_leaves_the_model_unchanged():
    G, _ = build(16)
    before = G.state_dict()
    z = np.random.default_rng(0).standard_normal((5, 8))
    first = dcgan.generate(G, z, batch_size=2)
    assert first.shape == (5, 1, 16, 16) and first.dtype == np.float32
    assert G.training                                           # mode restored
    for key, value in G.state_dict().items():
        np.testing.assert_array_equal(value, before[key])       # running stats untouched
    np.testing.assert_allclose(first, dcgan.generate(G, z), rtol=1e-4, atol=1e-7)  # chunks


def test_sample_from_a_checkpoint_dict_is_seeded():
    G, _ = build(16)
    checkpoint = {"config": dict(image_size=16, nz=8, ngf=4, ndf=4, dropout=0.4),
                  "generator_ema": G.state_dict()}
    a = settings.dcgan.sample(checkpoint, 3, seed=1, device="cpu")
    b = settings.dcgan.sample(checkpoint, 3, seed=1, device="cpu")
    c = settings.dcgan.sample(checkpoint, 3, seed=2, device="cpu")
    with nn.no_grad():
        z = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
        np.testing.assert_allclose(a, dcgan.generate(G, z), rtol=1e-6)     # G_ema of the dict
    assert a.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
