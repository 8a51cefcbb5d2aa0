"""DiffAugment (models/diffaugment.py) and its use in StyleGAN's losses: each operation against
finite differences (float64, first and second order), against a direct reference with the drawn
parameters, zero strength as the identity, the same draws for real and fake batches, R1 through
D(T(x)), and the per-phase gamma."""
import functools

import numpy as np
import pytest

import nn
import settings.stylegan
from conftest import tensor
from models import diffaugment as da
from models import stylegan as sg
from models.stylegan_losses import Loss, discriminator_loss, r1_penalty, scaled_gamma

FIXED = {   # each operation with fixed parameters for a batch of 3 images of 8x8
    "brightness": lambda x: da.brightness(x, np.array([-0.4, 0.1, 0.5])),
    "contrast": lambda x: da.contrast(x, np.array([0.5, 1.3, 0.9])),
    "translation": lambda x: da.translate(x, np.array([1, -2, 0]), np.array([0, 1, -1])),
    "cutout": lambda x: da.cutout(x, np.array([-2, 3, 5]), np.array([1, -1, 4]), 4),
}


def images(device, shape=(3, 1, 8, 8), seed=0, requires_grad=True):
    return tensor(np.random.default_rng(seed).uniform(-1, 1, shape), device, requires_grad)


def shifted(x, dy, dx):
    """Reference translation with explicit loops: y[i, j] = x[i - dy, j - dx], 0 outside."""
    y = np.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                y[..., i, j] = x[..., i - dy, j - dx]
    return y


# ---- gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXED)
def test_gradients_first_and_second_order(device, name):
    x = images(device)
    op = FIXED[name]
    assert nn.gradcheck(op, [x])
    assert nn.gradgradcheck(lambda t: op(t) ** 2, [x])      # ops are affine: square for a 2nd order


def test_r1_through_the_augmentation_matches_finite_differences(device):
    """R1 = gamma/2 E|grad_x D(T(x))|^2: its weight gradient differentiates T's backward.

    Translation and cutout put exact zeros into D's input; with D's biases at their initial 0
    the 1x1 from-image layer then feeds exactly 0 to a LeakyReLU, its kink, where central
    differences straddle two slopes. Random biases keep every pre-activation off the kink."""
    D = sg.Discriminator(8, fmap_base=8, fmap_max=2, seed=3).to(device).double()
    biases = np.random.default_rng(1)
    for name, p in D.named_parameters():
        if name.endswith("bias"):
            p.data = nn.Tensor(biases.normal(0, 0.5, p.shape)).to(device).data
    reals = images(device, (4, 1, 8, 8), seed=4)

    def augment(x):   # the same draws at every call of the finite differences
        return da.DiffAugment("color,translation,cutout", np.random.default_rng(7))(x)
    assert nn.gradcheck(lambda: r1_penalty(D(augment(reals), 8), reals, gamma=10.0), [],
                        params=list(D.parameters()), atol=1e-6, rtol=1e-4)


def test_the_penalty_differentiates_with_respect_to_the_unaugmented_reals():
    D = sg.Discriminator(8, fmap_base=8, fmap_max=2, seed=3).double()
    x = np.random.default_rng(4).uniform(-1, 1, (4, 1, 8, 8))
    augment = da.DiffAugment("translation,cutout", np.random.default_rng(5))
    loss, log = discriminator_loss(functools.partial(D, resolution=8), x, x[::-1].copy(),
                                   Loss("ns-r1", gamma=10.0), regularise=True, augment=augment)
    again = da.DiffAugment("translation,cutout", np.random.default_rng(5))
    reals = nn.Tensor(x, requires_grad=True)
    gradient, = nn.grad(D(again(reals), 8).sum(), [reals])
    expected = 5.0 * (gradient.numpy() ** 2).sum(axis=(1, 2, 3)).mean()
    assert float(log["penalty"]) == pytest.approx(expected, rel=1e-9)
    third = da.DiffAugment("translation,cutout", np.random.default_rng(5))
    kept, = nn.grad(third(reals).sum(), [reals])          # 0 where T drops the pixel of x
    assert (kept.numpy() == 0).any()
    np.testing.assert_array_equal(gradient.numpy() == 0, kept.numpy() == 0)


@pytest.mark.parametrize("loss", ["ns-r1", "wgan-gp"])
def test_d_scores_augmented_reals_and_fakes_and_g_gets_gradients_through_them(loss):
    D = sg.Discriminator(8, fmap_base=8, fmap_max=2, seed=3)
    rng = np.random.default_rng(0)
    reals, fakes = (rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32) for _ in range(2))
    seen = []

    def recording(x):
        seen.append(x.data.copy())
        return da.DiffAugment("color,translation,cutout", np.random.default_rng(len(seen)))(x)
    critic = functools.partial(D, resolution=8, alpha=1.0)
    total, log = discriminator_loss(critic, reals, fakes, Loss(loss), regularise=True,
                                    rng=np.random.default_rng(1), augment=recording)
    assert len(seen) == 2 and np.array_equal(seen[0], reals) and np.array_equal(seen[1], fakes)
    plain, plain_log = discriminator_loss(critic, reals, fakes, Loss(loss), regularise=True,
                                          rng=np.random.default_rng(1))
    assert total.dtype == np.float32 and float(log["d_loss"]) != float(plain_log["d_loss"])
    assert float(log["penalty"]) > 0
    fake = nn.Tensor(fakes, requires_grad=True)                      # the G step: D(T(G(z)))
    D(da.DiffAugment("translation,cutout", np.random.default_rng(2))(fake), 8).sum().backward()
    assert fake.grad is not None and np.any(fake.grad != 0)


def test_a_training_step_augments_reals_and_fakes_for_d_and_the_fakes_again_for_g():
    """train_stylegan.train_step: T(x) and T(G(z)) (detached) in the D step, T(G(z)) with its
    graph back to G in the G step, and R1's gamma scaled at the phase's resolution."""
    import train_stylegan
    cfg = settings.stylegan.flags("").parse_args([
        "--image-size", "16", "--z-dim", "8", "--w-dim", "8", "--mapping-layers", "2",
        "--fmap-base", "32", "--fmap-max", "8", "--no-blur", "--batch-size", "4",
        "--loss", "ns-r1", "--reg-every", "1", "--gamma-scaling", "resolution"])
    G, D = settings.stylegan.build(cfg, seed=0)
    gan = train_stylegan.make_gan(G, D, cfg, np.random.default_rng(1), np.random.default_rng(2))
    train_stylegan.start_phase(gan, {}, 8, cfg)
    real = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    seen = []

    def recording(x):
        seen.append(x)
        return da.DiffAugment("translation", np.random.default_rng(0))(x)
    gan.augment = recording
    log = train_stylegan.train_step(gan, real, 8, 1.0, 0)
    assert len(seen) == 3 and np.array_equal(seen[0].data, real)
    assert seen[1].creator is None and seen[2].creator is not None    # detached, then G's graph
    np.testing.assert_array_equal(seen[1].data, seen[2].data)          # the same generated batch
    assert gan.loss.gamma == 10.0 / 4 and float(log["penalty"]) > 0   # gamma (8 / 16)^2
    train_stylegan.start_phase(gan, {}, 16, cfg)
    assert gan.loss.gamma == 10.0


# ---- what each operation does --------------------------------------------------------------------

def test_zero_strength_is_the_identity(device):
    x = images(device, requires_grad=False)
    zeros, b = np.zeros(3, dtype=int), 3
    np.testing.assert_array_equal(da.brightness(x, np.zeros(b)).numpy(), x.numpy())
    np.testing.assert_allclose(da.contrast(x, np.ones(b)).numpy(), x.numpy(), atol=1e-15)
    np.testing.assert_array_equal(da.translate(x, zeros, zeros).numpy(), x.numpy())
    np.testing.assert_array_equal(da.cutout(x, zeros, zeros, 0).numpy(), x.numpy())
    assert da.DiffAugment("", np.random.default_rng(0))(x) is x


def test_translation_moves_content_by_the_drawn_integer_shift(device):
    x = images(device, (5, 1, 16, 16), requires_grad=False)
    y = da.random_translation(x, np.random.default_rng(3))
    drawn = np.random.default_rng(3)
    dy, dx = (drawn.integers(-2, 3, size=5) for _ in range(2))      # s = 16 / 8 = 2
    assert np.any(dy != 0) and np.any(dx != 0)
    for b in range(5):
        np.testing.assert_array_equal(y.numpy()[b], shifted(x.numpy()[b], dy[b], dx[b]))


def test_cutout_zeroes_exactly_the_drawn_square(device):
    x = tensor(np.random.default_rng(0).uniform(0.1, 1, (6, 1, 16, 16)), device)   # no zeros
    y = da.random_cutout(x, np.random.default_rng(4)).numpy()
    drawn = np.random.default_rng(4)
    top, left = (drawn.integers(0, 17, size=6) - 4 for _ in range(2))   # centre in [0, 16], c = 8
    for b in range(6):
        rows = slice(max(0, top[b]), max(0, top[b] + 8))
        cols = slice(max(0, left[b]), max(0, left[b] + 8))
        expected = x.numpy()[b].copy()
        expected[:, rows, cols] = 0
        np.testing.assert_array_equal(y[b], expected)
        inside = (min(16, top[b] + 8) - max(0, top[b])) * (min(16, left[b] + 8) - max(0, left[b]))
        assert (y[b] == 0).sum() == inside > 0


def test_color_draws_brightness_and_contrast_in_the_papers_ranges():
    flat = nn.Tensor(np.zeros((4000, 1, 4, 4), np.float32))    # contrast leaves a flat image
    shift = da.random_color(flat, np.random.default_rng(0)).numpy()[:, 0, 0, 0]
    assert -0.5 <= shift.min() < -0.49 and 0.49 < shift.max() <= 0.5   # u - 0.5, u ~ U(0, 1)
    ramp = nn.Tensor(np.tile(np.linspace(-1, 1, 4, dtype=np.float32), (4000, 1, 4, 1)))
    rng = np.random.default_rng(1)
    out = da.random_color(ramp, rng).numpy()
    factor = (out[:, 0, 0, 3] - out[:, 0, 0, 0]) / 2            # the ramp's spread scaled
    assert 0.5 <= factor.min() < 0.51 and 1.49 < factor.max() <= 1.5


def test_real_and_fake_batches_get_the_same_draws_from_the_same_generator_state(device):
    """The parameters depend only on the generator's state, never on the batch: two batches
    augmented from generators in the same state are shifted and cut alike (for the linear ops
    T(r) - T(f) = T(r - f)), and differ for another state."""
    real = tensor(np.random.default_rng(1).uniform(0.1, 1, (4, 1, 16, 16)), device)  # no zeros
    fake = tensor(np.random.default_rng(2).uniform(0.1, 1, (4, 1, 16, 16)), device)

    def augment(x, policy, seed=9):
        return da.DiffAugment(policy, np.random.default_rng(seed))(x).numpy()
    linear = "translation,cutout"
    np.testing.assert_allclose(augment(real, linear) - augment(fake, linear),
                               augment(real - fake, linear), atol=1e-15)
    for policy in (linear, "color,translation,cutout"):
        zeros = augment(real, policy) == 0
        assert zeros.sum() > 0 and np.array_equal(zeros, augment(fake, policy) == 0)
        assert not np.array_equal(zeros, augment(fake, policy, seed=10) == 0)


def test_float32_stays_float32_and_each_call_draws_new_parameters():
    x = nn.Tensor(np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32))
    augment = da.DiffAugment("color,translation,cutout", np.random.default_rng(0))
    first, second = augment(x), augment(x)
    assert first.dtype == second.dtype == np.float32
    assert not np.array_equal(first.numpy(), second.numpy())


@pytest.mark.parametrize("text, policy", [("", ()), ("color", ("color",)),
                                          ("cutout,color", ("cutout", "color")),
                                          ("color,translation,cutout", da.POLICIES)])
def test_policies_parse(text, policy):
    assert da.parse_policy(text) == policy and da.policy_rule(text) is None


@pytest.mark.parametrize("text", ["colour", "color,color", "color,,saturation", "all"])
def test_bad_policies_are_refused(text):
    assert "use a comma list of color, translation, cutout" in da.policy_rule(text)
    with pytest.raises(ValueError):
        da.parse_policy(text)


# ---- gamma per phase ------------------------------------------------------------------------------

def test_gamma_scaling_by_resolution():
    assert [scaled_gamma(10.0, r, 64, "none") for r in (8, 64)] == [10.0, 10.0]
    assert [scaled_gamma(10.0, r, 64, "resolution") for r in (8, 16, 32, 64)] == \
        [10.0 / 64, 10.0 / 16, 10.0 / 4, 10.0]
    with pytest.raises(ValueError):
        scaled_gamma(10.0, 8, 64, "pixels")
