"""VQ-VAE: the vector quantiser (lookup, straight-through gradient, losses, EMA, restarts), shapes."""
import argparse

import numpy as np
import pytest

import nn
import settings.vqvae
from models import vqvae
from settings.rules import SettingsError
from models.vqvae import VQVAE, VectorQuantizer, code_counts, perplexity


def quantizer(device, ema=False, num_codes=6, code_dim=3, dtype=np.float64):
    nn.manual_seed(0)
    vq = VectorQuantizer(num_codes, code_dim, ema=ema).to(device, dtype)
    codebook = np.random.default_rng(1).standard_normal((num_codes, code_dim))
    vq.codebook.data[...] = nn.backend.to_device(codebook, device)
    if ema:
        vq.ema_sum.data[...] = vq.codebook.data
    return vq


def latents(device, shape=(2, 3, 4, 5), seed=2, requires_grad=True):
    array = np.random.default_rng(seed).standard_normal(shape)
    return nn.Tensor(array, requires_grad=requires_grad).to(device)


def test_picks_the_true_nearest_code(device):
    vq = quantizer(device, num_codes=17, code_dim=5)
    flat = np.random.default_rng(3).standard_normal((300, 5))
    codes = nn.backend.to_numpy(vq.nearest_codes(nn.backend.to_device(flat, device)))
    codebook = vq.codebook.numpy()
    brute_force = np.array([np.argmin([np.sum((z - e) ** 2) for e in codebook]) for z in flat])
    np.testing.assert_array_equal(codes, brute_force)


def test_forward_value_is_the_chosen_code(device):
    vq = quantizer(device)
    out = vq(latents(device))
    quantized = out["quantized"].numpy().transpose(0, 2, 3, 1)    # (N, h, w, D)
    codes = nn.backend.to_numpy(out["codes"])                      # on the device: read them
    np.testing.assert_allclose(quantized, vq.codebook.numpy()[codes], atol=1e-12)
    assert out["codes"].shape == (2, 4, 5)


def test_straight_through_gradient_equals_upstream(device):
    vq = quantizer(device)
    z = latents(device)
    upstream = np.random.default_rng(4).standard_normal(z.shape)
    vq(z)["quantized"].backward(nn.Tensor(upstream).to(device))
    np.testing.assert_allclose(z.grad.numpy(), upstream, rtol=0, atol=1e-12)


def test_straight_through_gradient_reaches_the_encoder():
    nn.manual_seed(0)
    model = VQVAE(channels=8, res_channels=4, n_res_blocks=1, num_codes=8, code_dim=4, ema=True)
    x = nn.Tensor(np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32))
    reconstruction, _ = model(x)
    ((reconstruction - x) ** 2).mean().backward()      # reconstruction loss only
    for name, parameter in model.encoder.named_parameters():
        assert parameter.grad is not None and np.abs(parameter.grad.numpy()).sum() > 0, name


def test_codebook_loss_gradient(device):
    """|sg(z) - e|^2 as a function of the codebook: gradcheck, and no gradient to z."""
    vq = quantizer(device)
    z = latents(device)
    nn.gradcheck(lambda z: vq(z)["codebook_loss"], [latents(device, requires_grad=False)],
                 params=[vq.codebook])
    vq(z)["codebook_loss"].backward()
    assert z.grad is None or np.abs(z.grad.numpy()).max() == 0


def test_commitment_loss_gradient(device):
    """|z - sg(e)|^2 as a function of z: gradcheck, and no gradient to the codebook."""
    vq = quantizer(device)
    nn.gradcheck(lambda z: vq(z)["commitment_loss"], [latents(device)])
    vq.codebook.grad = None
    vq(latents(device))["commitment_loss"].backward()
    assert vq.codebook.grad is None or np.abs(vq.codebook.grad.numpy()).max() == 0


def test_total_quantizer_loss_is_codebook_plus_beta_commitment(device):
    vq = quantizer(device)
    out = vq(latents(device))
    z = latents(device).numpy().transpose(0, 2, 3, 1)
    squared = ((z - vq.codebook.numpy()[nn.backend.to_numpy(out["codes"])]) ** 2).mean()
    np.testing.assert_allclose(out["loss"].item(), squared * (1 + 0.25), rtol=1e-10)


def test_ema_update_formula(device):
    vq = quantizer(device, ema=True, num_codes=4, code_dim=2)
    old_count, old_sum = vq.ema_count.numpy().copy(), vq.ema_sum.numpy().copy()
    flat = np.random.default_rng(5).standard_normal((10, 2))
    codes = np.array([0, 0, 1, 1, 1, 3, 3, 3, 3, 0])        # code 2 unused
    vq.restart_threshold = -1.0                             # no restarts in this test
    vq.update(nn.backend.to_device(flat, device), nn.backend.to_device(codes, device),
              np.random.default_rng(0))

    d, eps = 0.99, 1e-5
    counts = np.bincount(codes, minlength=4)
    sums = np.stack([flat[codes == k].sum(axis=0) for k in range(4)])
    count = d * old_count + (1 - d) * counts
    total = d * old_sum + (1 - d) * sums
    smoothed = (count + eps) / (count.sum() + 4 * eps) * count.sum()
    np.testing.assert_allclose(vq.ema_count.numpy(), count, rtol=1e-12)
    np.testing.assert_allclose(vq.ema_sum.numpy(), total, rtol=1e-12)
    np.testing.assert_allclose(vq.codebook.numpy(), total / smoothed[:, None], rtol=1e-12)
    # starting from N = 1, m = e, an unused code barely moves (only the tiny smoothing)
    np.testing.assert_allclose(vq.codebook.numpy()[2], old_sum[2], rtol=1e-4)


def test_dead_code_restart_changes_only_dead_codes(device):
    for ema in (False, True):
        vq = quantizer(device, ema=ema, num_codes=8)
        xp = nn.backend.array_module_for(device)
        vq.usage.data[...] = xp.asarray([5.0, 0.2, 3.0, 0.0, 9.0, 0.9, 1.0, 2.0])
        before = vq.codebook.numpy().copy()
        flat = np.random.default_rng(6).standard_normal((50, 3))
        restarted = vq.restart_dead_codes(nn.backend.to_device(flat, device),
                                          np.random.default_rng(0))
        after = vq.codebook.numpy()
        dead = [1, 3, 5]
        assert restarted == 3
        alive = [k for k in range(8) if k not in dead]
        np.testing.assert_array_equal(after[alive], before[alive])
        for k in dead:   # each dead code now sits exactly on one of the recent encoder outputs
            assert np.any(np.all(flat == after[k], axis=1)), k
            assert not np.allclose(after[k], before[k])
        assert np.all(vq.usage.numpy()[dead] >= vq.restart_threshold)
        if ema:
            np.testing.assert_array_equal(vq.ema_sum.numpy()[dead], after[dead])


def test_usage_statistics():
    assert perplexity(np.array([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity(np.array([0, 7, 0, 0])) == pytest.approx(1.0)
    np.testing.assert_array_equal(code_counts(np.array([[0, 2], [2, 2]]), 4), [1, 0, 3, 0])


def test_vqvae_shapes_and_dtype(device):
    nn.manual_seed(0)
    model = VQVAE(channels=8, res_channels=4, n_res_blocks=1, downsamples=2, num_codes=8,
                  code_dim=4).to(device)
    x = nn.Tensor(np.zeros((3, 1, 32, 32), np.float32)).to(device)
    reconstruction, vq = model(x)
    assert reconstruction.shape == (3, 1, 32, 32) and reconstruction.dtype == np.float32
    assert vq["codes"].shape == (3, 8, 8)
    codes = model.encode(x)
    np.testing.assert_array_equal(nn.backend.to_numpy(codes), nn.backend.to_numpy(vq["codes"]))
    assert model.decode(codes).shape == (3, 1, 32, 32)


TINY = dict(image_size=16, downsamples=2, channels=8, res_channels=4, res_blocks=1, codes=8,
            code_dim=4, beta=0.25, ema=True, prior_channels=4, prior_layers=2, out="runs/x",
            prior_levels=0, prior_dropout=0.0)


def test_sample_draws_seeded_images_and_needs_a_trained_prior():
    config = dict(TINY)
    nn.manual_seed(0)
    model, prior = settings.vqvae.build(argparse.Namespace(**config))
    assert settings.vqvae.code_side(argparse.Namespace(**config)) == 4
    assert prior.position.shape[2:] == (4, 4)
    checkpoint = {"config": config, "vqvae": model.state_dict(), "prior": prior.state_dict(),
                  "prior_steps": 3}
    a = settings.vqvae.sample(checkpoint, 3, seed=1)
    assert a.shape == (3, 1, 16, 16) and a.dtype == np.float32 and np.abs(a).max() <= 1
    np.testing.assert_array_equal(a, settings.vqvae.sample(checkpoint, 3, seed=1))
    assert not np.array_equal(a, settings.vqvae.sample(checkpoint, 3, seed=2))
    codes = prior.sample(3, (4, 4), temperature=settings.vqvae.TEMPERATURE, seed=1)
    np.testing.assert_allclose(a, np.clip(model.decode(codes).numpy(), -1, 1), atol=1e-6)
    images = np.random.default_rng(0).uniform(-1, 1, (5, 1, 16, 16)).astype(np.float32)
    reconstruction, maps = vqvae.reconstruct(model, images, batch_size=2)
    np.testing.assert_array_equal(maps, model.encode(nn.Tensor(images)))
    np.testing.assert_allclose(reconstruction, np.clip(model.decode(maps).numpy(), -1, 1),
                               atol=1e-6)   # decoded in batches of 2 here, of 5 there
    assert model.training                                # reconstruct restores the mode
    with pytest.raises(nn.CheckpointError, match="no trained prior yet.*--stage prior --out runs/x"):
        settings.vqvae.sample(dict(checkpoint, prior_steps=0), 3, seed=1)


def test_a_conditional_prior_samples_the_level_asked_for_and_refuses_others():
    """With levels, --level L draws every map at level L; an unconditional prior (the test above)
    refuses --level."""
    config = dict(TINY, prior_levels=3)
    nn.manual_seed(0)
    model, prior = settings.vqvae.build(argparse.Namespace(**config))
    assert prior.levels == 3
    checkpoint = {"config": config, "vqvae": model.state_dict(), "prior": prior.state_dict(),
                  "prior_steps": 3}
    a = settings.vqvae.sample(checkpoint, 2, seed=1, level=2)
    codes = prior.sample(2, (4, 4), temperature=settings.vqvae.TEMPERATURE, seed=1,
                         labels=np.array([2, 2]))
    np.testing.assert_allclose(a, np.clip(model.decode(codes).numpy(), -1, 1), atol=1e-6)
    for level, message in ((3, "from 0 .* to 2"), (-1, "from 0"), (1.5, "whole number")):
        with pytest.raises(SettingsError, match=message):
            settings.vqvae.sample(checkpoint, 2, seed=1, level=level)
    with pytest.raises(SettingsError, match="no slice levels"):
        settings.vqvae.level_labels(argparse.Namespace(**TINY), 2, 0)
