"""StyleGAN model tests: shapes while growing, equalised learning rate, truncation, style mixing,
fade-in, and the gradient penalties' weight gradients against finite differences (float64)."""
import functools
import math

import numpy as np
import pytest

import nn
import nn.functional as F
from models import stylegan as sg
from models.stylegan_layers import EqualConv2d, EqualLinear, blur
from models.stylegan_losses import (Loss, discriminator_loss, interpolates, r1_penalty,
                                    wgan_gradient_penalty)
from settings.stylegan import Schedule

TINY = dict(z_dim=8, w_dim=8, mapping_layers=8, fmap_base=64, fmap_max=8)


def tiny_generator(image_size=32, device="cpu", seed=0, blur=False, skip=False):
    return sg.Generator(image_size, seed=seed, blur=blur, skip=skip, **TINY).to(device)


def tiny_discriminator(image_size=32, device="cpu", seed=1, blur=False):
    return sg.Discriminator(image_size, TINY["fmap_base"], TINY["fmap_max"], seed=seed,
                            blur=blur).to(device)


def latent(n, device, seed=0, dim=8):
    z = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return nn.Tensor(z).to(device)


def noise_for(batch, resolution, device, seed=0):
    return sg.make_noise(batch, resolution, np.random.default_rng(seed),
                         like=nn.Tensor(np.zeros(1, np.float32)).to(device))


# ---- shapes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_shapes_at_every_resolution(device, alpha):
    G, D = tiny_generator(device=device), tiny_discriminator(device=device)
    z = latent(4, device)
    with nn.no_grad():
        for r in (8, 16, 32):
            image = G(z, r, alpha)
            assert image.shape == (4, 1, r, r) and image.dtype == np.float32
            assert image.device == device
            score = D(image, r, alpha)
            assert score.shape == (4, 1) and score.dtype == np.float32


def test_style_layer_count_and_widths():
    assert [sg.num_style_layers(r) for r in (4, 8, 16, 64)] == [2, 4, 6, 10]
    assert sg.channel_widths(64, 512, 64) == {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}


# ---- equalised learning rate ---------------------------------------------------------------------

def reference_conv(x, w, b):
    """'Same' cross-correlation with explicit loops over the kernel (float64 NumPy)."""
    k = w.shape[-1]
    p = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    h, wd = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for dy in range(k):
        for dx in range(k):
            window = padded[:, :, dy:dy + h, dx:dx + wd]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, dy, dx])
    return out + b[None, :, None, None]


def test_equalised_linear_scales_as_specified():
    rng = np.random.default_rng(0)
    layer = EqualLinear(400, 300, gain=math.sqrt(2), lrmul=0.01, bias_init=0.5, rng=rng)
    stored = layer.weight.numpy()
    assert abs(stored.std() - 100.0) < 2.0                     # N(0, (1/lrmul)^2)
    expected_scale = math.sqrt(2) / math.sqrt(400) * 0.01
    np.testing.assert_allclose(layer.runtime_weight().numpy(), stored * expected_scale, rtol=1e-6)
    x = rng.standard_normal((5, 400)).astype(np.float32)
    y = layer(nn.Tensor(x)).numpy()
    np.testing.assert_allclose(y, x @ (stored * expected_scale).T + 0.5, rtol=1e-4, atol=1e-4)
    assert abs(np.std(stored * expected_scale) - math.sqrt(2 / 400)) < 0.003  # He at run time


def test_equalised_conv_scales_as_specified():
    rng = np.random.default_rng(1)
    layer = EqualConv2d(6, 5, 3, gain=1.0, rng=rng)
    stored = layer.weight.numpy().astype(np.float64)
    assert abs(stored.std() - 1.0) < 0.15
    scale = 1.0 / math.sqrt(6 * 3 * 3)
    np.testing.assert_allclose(layer.runtime_weight().numpy(), stored * scale, rtol=1e-6)
    layer.bias.data[...] = rng.standard_normal(5)
    x = rng.standard_normal((2, 6, 7, 7)).astype(np.float32)
    expected = reference_conv(x.astype(np.float64), stored * scale, layer.bias.numpy())
    np.testing.assert_allclose(layer(nn.Tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_mapping_network_uses_learning_rate_multiplier():
    mapping = sg.MappingNetwork(32, 32, num_layers=8, lrmul=0.01, rng=np.random.default_rng(0))
    for i in range(8):
        layer = mapping.layers[i]
        assert layer.lrmul == 0.01
        assert layer.scale == pytest.approx(math.sqrt(2) / math.sqrt(32) * 0.01)
        assert 60 < layer.weight.numpy().std() < 140


def test_style_scale_starts_at_one():
    """The AdaIN scale is (affine(w) + 1): with the zero bias it stays near 1, not near 0."""
    G = tiny_generator()
    w = G.mapping(latent(64, "cpu"))
    style = G.synthesis.blocks[8].layer0.style
    s = style.affine(w).numpy()[:, :style.channels] + 1.0
    assert 0.3 < s.mean() < 1.7


# ---- truncation, style mixing, fade-in -----------------------------------------------------------

def test_truncation_psi_zero_gives_the_average_w_image(device):
    G = tiny_generator(device=device)
    w_avg = G.mean_w(n=256)
    noise = noise_for(3, 16, device)
    with nn.no_grad():
        truncated = G(latent(3, device), 16, noise=noise, w_avg=w_avg, psi=0.0).numpy()
        w_avg_batch = nn.Tensor(np.repeat(w_avg.numpy(), 3, axis=0)).to(device)
        expected = G.synthesis([w_avg_batch] * 6, 16, noise=noise).numpy()
        untruncated = G(latent(3, device), 16, noise=noise).numpy()
    np.testing.assert_allclose(truncated, expected, atol=1e-5)
    assert not np.allclose(untruncated, truncated, atol=1e-3)


def test_truncation_psi_one_changes_nothing():
    ws = [nn.Tensor(np.full((2, 3), 4.0, np.float32))] * 2
    w_avg = nn.Tensor(np.zeros((1, 3), np.float32))
    assert all(np.allclose(t.numpy(), 4.0) for t in sg.truncate(ws, w_avg, 1.0))
    assert all(np.allclose(t.numpy(), 2.0) for t in sg.truncate(ws, w_avg, 0.5))


@pytest.mark.parametrize("crossover", [1, 3, 5])
def test_style_mixing_changes_only_the_layers_after_the_crossover(device, crossover):
    G = tiny_generator(device=device)
    noise = noise_for(2, 16, device)
    with nn.no_grad():
        w, w_mix = G.mapping(latent(2, device, 0)), G.mapping(latent(2, device, 1))
        plain, mixed = [], []
        G.synthesis(sg.layer_styles(w, 6), 16, noise=noise, features=plain)
        G.synthesis(sg.layer_styles(w, 6, w_mix, crossover), 16, noise=noise, features=mixed)
    assert len(plain) == len(mixed) == 6
    for i in range(6):
        same = np.allclose(plain[i].numpy(), mixed[i].numpy(), atol=1e-6)
        assert same == (i < crossover), f"layer {i}, crossover {crossover}"


def test_fade_in_at_alpha_zero_is_the_upsampled_previous_output(device):
    G, D = tiny_generator(device=device), tiny_discriminator(device=device)
    z = latent(4, device)
    noise = noise_for(4, 16, device)
    with nn.no_grad():
        previous = G(z, 8, 1.0, noise=noise[:4])
        faded = G(z, 16, 0.0, noise=noise)
        halfway = G(z, 16, 0.5, noise=noise)
        new = G(z, 16, 1.0, noise=noise)
        np.testing.assert_allclose(faded.numpy(), F.upsample_nearest(previous, 2).numpy(),
                                   atol=1e-6)
        np.testing.assert_allclose(halfway.numpy(), (faded.numpy() + new.numpy()) / 2, atol=1e-5)
        assert not np.allclose(new.numpy(), faded.numpy(), atol=1e-3)
        # D at alpha 0 sees only the downsampled image through the previous resolution's path
        image = nn.Tensor(np.random.default_rng(2).standard_normal((4, 1, 16, 16))
                          .astype(np.float32)).to(device)
        np.testing.assert_allclose(D(image, 16, 0.0).numpy(),
                                   D(F.avg_pool2d(image, 2), 8, 1.0).numpy(), atol=1e-5)


def test_real_images_are_faded_like_the_generator():
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    at16 = x.reshape(2, 1, 16, 2, 16, 2).mean(axis=(3, 5))
    coarse = at16.reshape(2, 1, 8, 2, 8, 2).mean(axis=(3, 5)).repeat(2, 2).repeat(2, 3)
    np.testing.assert_allclose(sg.fade_real_images(x, 16, 1.0), at16, atol=1e-6)
    np.testing.assert_allclose(sg.fade_real_images(x, 16, 0.0), coarse, atol=1e-6)
    np.testing.assert_allclose(sg.fade_real_images(x, 16, 0.25), 0.75 * coarse + 0.25 * at16,
                               atol=1e-6)
    assert sg.fade_real_images(x, 16, 0.5).dtype == np.float32


def test_schedule_grows_and_fades_in_by_images_shown():
    schedule = Schedule(32, [24, 40], fade_images=16, batch_size=8)   # 8x8, 16x16, 32x32
    assert schedule.resolutions == [8, 16, 32] and schedule.starts == [0, 3, 8]
    assert [schedule.at(step) for step in range(10)] == [
        (8, 1.0), (8, 1.0), (8, 1.0), (16, 0.0), (16, 0.5), (16, 1.0), (16, 1.0), (16, 1.0),
        (32, 0.0), (32, 0.5)]
    assert schedule.at(1000) == (32, 1.0)

def test_parameters_at_leaves_out_unused_resolutions():
    G, D = tiny_generator(), tiny_discriminator()
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    g16, d16 = ids(sg.parameters_at(G, 16)), ids(sg.parameters_at(D, 16))
    assert id(G.synthesis.blocks[32].layer0.conv.weight) not in g16
    assert id(G.synthesis.blocks[8].to_image.weight) in g16          # used while 16x16 fades in
    assert id(G.synthesis.blocks[4].to_image.weight) not in g16
    assert id(G.mapping.layers[7].weight) in g16
    assert id(D.blocks[32].from_image.weight) not in d16 and id(D.blocks[8].from_image.weight) in d16
    assert id(D.blocks[8].conv0.weight) in d16 and id(D.score.weight) in d16


def test_average_generator_moves_towards_the_model():
    G, G_ema = tiny_generator(seed=0), tiny_generator(seed=5)
    before = G_ema.mapping.layers[0].weight.numpy().copy()
    nn.optim.update_average(G_ema, G, beta=0.75)
    target = G.mapping.layers[0].weight.numpy().copy()
    np.testing.assert_allclose(G_ema.mapping.layers[0].weight.numpy(),
                               0.75 * before + 0.25 * target, rtol=1e-5, atol=1e-4)
    G_ema.load_state_dict(G.state_dict())            # how train_stylegan.py starts the average
    np.testing.assert_array_equal(G_ema.mapping.layers[0].weight.numpy(), target)
    G.mapping.layers[0].weight.data += 1.0                # a copy, not shared arrays
    np.testing.assert_array_equal(G_ema.mapping.layers[0].weight.numpy(), target)


# ---- the [1, 2, 1] blur ------------------------------------------------------------------------------

def test_blur_is_the_separable_1_2_1_filter_with_zero_padding():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    k = np.array([1.0, 2.0, 1.0]) / 4
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = sum(k[a] * k[b] * padded[:, :, a:a + 5, b:b + 6] for a in range(3) for b in range(3))
    np.testing.assert_allclose(blur(nn.Tensor(x)).numpy(), expected, rtol=1e-12)
    flat = blur(nn.Tensor(np.ones((1, 1, 5, 5)))).numpy()
    assert flat[0, 0, 2, 2] == 1.0 and flat[0, 0, 0, 0] == pytest.approx(9 / 16)


def test_blur_gradients_first_and_second_order(device):
    x = nn.Tensor(np.random.default_rng(1).standard_normal((2, 2, 4, 5)), requires_grad=True)
    x = x.to(device)
    assert nn.gradcheck(blur, [x])
    assert nn.gradgradcheck(lambda t: blur(t) ** 2, [x])


def test_blur_removes_the_nearest_upsampling_grid(device):
    """A checkerboard (the worst grid) is flattened in the interior: its [1,2,1] response is 0."""
    board = np.indices((8, 8)).sum(axis=0) % 2 * 2.0 - 1.0
    out = blur(nn.Tensor(board[None, None]).to(device)).numpy()[0, 0]
    np.testing.assert_allclose(out[1:-1, 1:-1], 0.0, atol=1e-12)


def test_blur_setting_reaches_both_networks():
    G, D = tiny_generator(image_size=16, blur=True), tiny_discriminator(image_size=16, blur=True)
    blocks = G.synthesis.blocks
    assert blocks[8].layer0.blur_after_conv and not blocks[4].layer0.blur_after_conv
    assert D.blocks[16].blur_before_conv1
    G, D = tiny_generator(image_size=16), tiny_discriminator(image_size=16)
    assert not G.synthesis.blocks[8].layer0.blur_after_conv and not D.blocks[16].blur_before_conv1


# ---- losses and gradient penalties ------------------------------------------------------------------

def float64_discriminator(device, blur=False):
    D = sg.Discriminator(8, fmap_base=8, fmap_max=2, seed=3, blur=blur).to(device).double()
    x = np.random.default_rng(4).standard_normal((4, 1, 8, 8))
    return D, x


@pytest.mark.parametrize("blur", [False, True], ids=["plain", "blur"])
def test_r1_penalty_weight_gradient_matches_finite_differences(device, blur):
    D, x = float64_discriminator(device, blur)
    reals = nn.Tensor(x, requires_grad=True).to(device)
    reals.requires_grad = True
    params = list(D.parameters())
    assert nn.gradcheck(lambda: r1_penalty(D(reals, 8), reals, gamma=10.0), [], params=params,
                        atol=1e-6, rtol=1e-4)


def test_wgan_gradient_penalty_weight_gradient_matches_finite_differences(device):
    D, x = float64_discriminator(device)
    fakes = np.random.default_rng(5).standard_normal(x.shape)
    x_hat = interpolates(nn.Tensor(x).to(device).data, nn.Tensor(fakes).to(device).data,
                         np.random.default_rng(6))
    assert x_hat.dtype == np.float64 and x_hat.requires_grad
    params = list(D.parameters())
    critic = functools.partial(D, resolution=8, alpha=1.0)
    assert nn.gradcheck(lambda: wgan_gradient_penalty(critic, x_hat, weight=10.0), [],
                        params=params, atol=1e-6, rtol=1e-4)


def test_penalty_is_the_squared_input_gradient():
    """R1 = gamma/2 * (mean over samples of the summed squared input gradient)."""
    D, x = float64_discriminator("cpu")
    reals = nn.Tensor(x, requires_grad=True)
    gradient, = nn.grad(D(reals, 8).sum(), [reals])
    expected = 5.0 * (gradient.numpy() ** 2).sum(axis=(1, 2, 3)).mean()
    assert r1_penalty(D(reals, 8), reals, gamma=10.0).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("loss", ["ns-r1", "wgan-gp"])
def test_lazy_regularisation_adds_the_penalty_times_k(loss):
    D = tiny_discriminator(image_size=8)
    rng = np.random.default_rng(0)
    reals, fakes = (rng.standard_normal((4, 1, 8, 8)).astype(np.float32) for _ in range(2))
    critic = functools.partial(D, resolution=8, alpha=1.0)
    plain, log = discriminator_loss(critic, reals, fakes, Loss(loss), regularise=False)
    lazy, lazy_log = discriminator_loss(critic, reals, fakes, Loss(loss, reg_every=4),
                                        regularise=True, rng=np.random.default_rng(1))
    assert "penalty" not in log and lazy_log["penalty"] > 0
    assert lazy.item() == pytest.approx(plain.item() + 4 * lazy_log["penalty"], rel=1e-4)


# ---- the design options of issue 21: skip synthesis, the strided critic ---------------------------

def test_a_new_resolution_of_the_skip_generator_starts_as_the_smooth_upsampling_of_the_last():
    """Its to-image layer starts at zero, so at any alpha the image at 16x16 is the image at 8x8
    upsampled smoothly: a new resolution adds detail, it does not replace the image."""
    G = tiny_generator(image_size=16, skip=True)
    assert np.all(G.synthesis.blocks[16].to_image.weight.numpy() == 0)
    assert np.any(G.synthesis.blocks[8].to_image.weight.numpy() != 0)   # the first two: drawn
    z = latent(4, "cpu")
    with nn.no_grad():
        at8 = G(z, 8, noise=noise_for(4, 8, "cpu"))
        for alpha in (0.3, 1.0):
            at16 = G(z, 16, alpha, noise=noise_for(4, 16, "cpu"))
            np.testing.assert_allclose(at16.numpy(), sg.smooth_upsample(at8).numpy(), atol=1e-6)


def test_the_skip_generator_is_gradient_checked_while_fading_in(device):
    G = sg.Generator(16, z_dim=4, w_dim=4, mapping_layers=1, fmap_base=16, fmap_max=2,
                     skip=True).to(device).double()
    for p in G.parameters():                    # the late to-image layers too (they start at 0)
        p.data = p.data + nn.Tensor(np.random.default_rng(1).normal(0, 0.3, p.shape)).to(device).data
    z = nn.Tensor(np.random.default_rng(2).standard_normal((4, 4)), requires_grad=True).to(device)
    z.requires_grad = True
    noise = [nn.Tensor(n.data.astype(np.float64)).to(device) for n in noise_for(4, 16, device)]
    assert nn.gradcheck(lambda z: G(z, 16, 0.5, noise), [z], params=list(G.parameters()),
                        atol=1e-6, rtol=1e-4)


def test_the_skip_generator_trains_every_to_image_layer_up_to_its_resolution():
    G = tiny_generator(image_size=32, skip=True)
    trained = {id(p) for p in sg.parameters_at(G, 32)}
    assert all(id(G.synthesis.blocks[r].to_image.weight) in trained for r in (4, 8, 16, 32))
    P = tiny_generator(image_size=32)
    plain = {id(p) for p in sg.parameters_at(P, 32)}
    assert id(P.synthesis.blocks[4].to_image.weight) not in plain
    assert id(P.synthesis.blocks[32].to_image.weight) in plain


@pytest.mark.parametrize("mbstd", [0, 4])
def test_the_strided_critic_scales_low_resolutions_up_and_is_gradient_checked(device, mbstd):
    nn.manual_seed(0)
    D = sg.StridedCritic(16, ndf=2, dropout=0.4, mbstd_group=mbstd).to(device).double().eval()
    x = nn.Tensor(np.random.default_rng(3).uniform(-1, 1, (4, 1, 8, 8)), requires_grad=True)
    x = x.to(device)
    x.requires_grad = True
    with nn.no_grad():
        low, high = D(x, 8), D(F.upsample_nearest(x, scale_factor=2), 16)
    np.testing.assert_array_equal(low.numpy(), high.numpy())          # 8x8 is seen at 16x16
    assert low.shape == (4, 1)
    assert nn.gradcheck(lambda x: D(x, 8), [x], params=list(D.parameters()), atol=1e-6,
                        rtol=1e-4)
    if mbstd:
        same = nn.Tensor(np.repeat(x.numpy()[:1], 4, axis=0)).to(device)   # a collapsed batch
        spread = D.features(same)
        assert float(F.minibatch_stddev(spread, 4).numpy()[:, -1].max()) < 1e-3


def test_the_non_saturating_loss_alone_adds_no_penalty():
    D = tiny_discriminator(image_size=8)
    rng = np.random.default_rng(0)
    reals, fakes = (rng.standard_normal((4, 1, 8, 8)).astype(np.float32) for _ in range(2))
    critic = functools.partial(D, resolution=8, alpha=1.0)
    with_r1, log_r1 = discriminator_loss(critic, reals, fakes, Loss("ns-r1"), regularise=True)
    alone, log = discriminator_loss(critic, reals, fakes, Loss("ns"), regularise=True)
    assert "penalty" not in log and log_r1["penalty"] > 0
    assert alone.item() == pytest.approx(float(log_r1["d_loss"]), rel=1e-6)


def test_g_widths_replace_the_channel_rule_at_the_named_resolutions_only():
    plain, wide = tiny_generator(), sg.Generator(32, seed=0, widths={16: 7}, **TINY)
    assert wide.widths[16] == 7 and {r: w for r, w in wide.widths.items() if r != 16} == \
        {r: w for r, w in plain.widths.items() if r != 16}
    assert wide.synthesis.blocks[16].to_image.weight.shape[1] == 7
    assert wide.synthesis.blocks[32].layer0.conv.weight.shape[1] == 7


def test_the_tanh_output_is_tanh_of_the_linear_image_and_is_gradient_checked(device):
    small = dict(z_dim=4, w_dim=4, mapping_layers=1, fmap_base=16, fmap_max=2, skip=True)
    G = sg.Generator(16, tanh=True, **small).to(device).double()
    linear = sg.Generator(16, **small).to(device).double()
    for p, q in zip(G.parameters(), linear.parameters()):   # the same, and no constant maps
        p.data = p.data + nn.Tensor(np.random.default_rng(1).normal(0, 0.5, p.shape)).to(device).data
        q.data = p.data.copy()
    z = nn.Tensor(np.random.default_rng(2).standard_normal((4, 4)), requires_grad=True).to(device)
    z.requires_grad = True
    noise = [nn.Tensor(n.data.astype(np.float64)).to(device) for n in noise_for(4, 16, device)]
    plain = linear(z, 16, 1.0, noise).numpy()
    assert np.abs(plain).max() > 1.5                          # tanh has something to bound
    np.testing.assert_allclose(G(z, 16, 1.0, noise).numpy(), np.tanh(plain), rtol=1e-12)
    assert nn.gradcheck(lambda z: G(z, 16, 1.0, noise), [z], params=list(G.parameters()),
                        atol=1e-6, rtol=1e-4)
