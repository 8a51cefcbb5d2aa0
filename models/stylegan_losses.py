"""StyleGAN's two loss choices, each with a gradient penalty that needs second derivatives.

Notation: D(x) is the discriminator's score, G(z) a generated image, softplus(t) = log(1 + e^t).

Non-saturating logistic loss with R1 (Goodfellow et al. 2014; Mescheder et al. 2018, equation 9;
the StyleGAN default, Karras et al. 2019, appendix C):
    L_D = E[softplus(D(G(z)))] + E[softplus(-D(x))] + gamma/2 * E[ |grad_x D(x)|^2 ]
    L_G = E[softplus(-D(G(z)))]

WGAN-GP (Gulrajani et al. 2017, equation 3) with the drift term of Karras et al. 2018 (appendix A.1):
    L_D = E[D(G(z))] - E[D(x)] + lambda * E[(|grad D(x_hat)| - 1)^2] + eps_drift * E[D(x)^2]
    x_hat = x + u * (G(z) - x),  u ~ U(0, 1) per sample,  lambda = 10,  eps_drift = 0.001
    L_G = -E[D(G(z))]

The penalties are gradients of D with respect to its input, computed with
nn.grad(..., create_graph=True) so that L_D.backward() can differentiate them again with respect
to D's weights. Lazy regularisation (Karras et al. 2020, "StyleGAN2", section 3.1): the penalty is
added only every `reg_every` steps and multiplied by `reg_every`, so on average it weighs the same.

With DiffAugment (models/diffaugment.py; Zhao et al. 2020) D sees T(x) and T(G(z)) in every term:
R1 becomes gamma/2 * E[ |grad_x D(T(x))|^2 ], the gradient taken with respect to the un-augmented
x through T, as in the paper's code. WGAN-GP's x_hat interpolates between the SAME augmented
batches D scored, T(x) + u (T(G(z)) - T(x)): the critic is only ever evaluated on augmented images,
so its 1-Lipschitz constraint belongs on the lines between those, and no extra augmentation is
drawn for the penalty.

Gamma scaling (`scaled_gamma`): StyleGAN2-ADA (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data", appendix) sets gamma proportional to the number of pixels, res^2. With
"resolution" each progressive phase at res uses gamma * (res / final_res)^2, e.g. gamma / 64 at
8x8 of a 64x64 run.
"""
from dataclasses import dataclass

import numpy as np

import nn
import nn.functional as F

LOSSES = ("ns-r1", "wgan-gp", "ns")   # ns: non-saturating without a penalty (DCGAN's)
GAMMA_SCALINGS = ("none", "resolution")


@dataclass(frozen=True)
class Loss:
    """Which loss D and G are trained with, and the weights of its terms (module docstring)."""
    kind: str = "wgan-gp"      # "wgan-gp", "ns-r1" or "ns"
    gamma: float = 10.0        # R1's weight (ns-r1)
    gp_weight: float = 10.0    # WGAN-GP's lambda
    drift: float = 0.001       # WGAN's eps_drift
    reg_every: int = 4         # lazy regularisation: the penalty every k steps, times k


def identity(x):
    return x


def scaled_gamma(gamma, resolution, final_resolution, scaling="none"):
    """R1's gamma at `resolution`: gamma itself ("none"), or gamma * (res / final_res)^2
    ("resolution", StyleGAN2-ADA's gamma proportional to res^2)."""
    if scaling == "none":
        return gamma
    if scaling == "resolution":
        return gamma * (resolution / final_resolution) ** 2          # gamma (res / final_res)^2
    raise ValueError(f"unknown gamma scaling {scaling!r}: use one of {GAMMA_SCALINGS}")


def squared_gradient_norm(scores, inputs):
    """|d sum(scores) / d inputs|^2 per sample, (B,), differentiable (create_graph=True).

    Summing the scores is fine because sample i's score depends only on image i (no batch norm in
    D; minibatch stddev couples samples slightly, as in the official code)."""
    gradient, = nn.grad(scores.sum(), [inputs], create_graph=True)      # grad_x D(x), differentiable
    return (gradient * gradient).reshape(gradient.shape[0], -1).sum(axis=1)   # |grad_x D(x)|^2


def r1_penalty(real_scores, reals, gamma=10.0):
    """gamma/2 * E[|grad_x D(x)|^2] on real images; `reals` must have requires_grad=True and
    `real_scores` = D(reals)."""
    return squared_gradient_norm(real_scores, reals).mean() * (gamma / 2)   # gamma/2 E[|grad|^2]


def interpolates(reals, fakes, rng):
    """x_hat = x + u * (G(z) - x) with u ~ U(0, 1) per sample (raw arrays in, leaf Tensor out)."""
    u = rng.uniform(size=(reals.shape[0], 1, 1, 1)).astype(reals.dtype)
    u = nn.Tensor(u).to(nn.Tensor(reals).device).data
    return nn.Tensor(reals + u * (fakes - reals), requires_grad=True)   # x + u (G(z) - x)


def wgan_gradient_penalty(critic, x_hat, weight=10.0):
    """lambda * E[(|grad D(x_hat)| - 1)^2]; the 1e-8 keeps sqrt differentiable at 0."""
    scores = critic(x_hat)
    norm = (squared_gradient_norm(scores, x_hat) + 1e-8).sqrt()      # |grad D(x_hat)|
    return ((norm - 1.0) ** 2).mean() * weight                        # lambda E[(|grad| - 1)^2]


def discriminator_loss(critic, reals, fakes, loss=Loss(), regularise=False, rng=None,
                       augment=identity):
    """L_D for raw arrays `reals` and `fakes` (B, 1, R, R) (fakes already detached). critic(x) is
    D's score of images x (D at the current resolution and fade); it scores augment(reals) and
    augment(fakes) (DiffAugment, or the identity). With `regularise`, the penalty of loss.kind is
    added, times loss.reg_every (lazy regularisation).

    Returns (loss Tensor, dict of 0-d arrays on the device for the log)."""
    real_t = nn.Tensor(reals, requires_grad=regularise and loss.kind == "ns-r1")
    real_seen, fake_seen = augment(real_t), augment(nn.Tensor(fakes))     # T(x), T(G(z))
    real_scores, fake_scores = critic(real_seen), critic(fake_seen)
    log = {"d_real": real_scores.data.mean(), "d_fake": fake_scores.data.mean()}
    if loss.kind in ("ns-r1", "ns"):
        # E[softplus(D(G(z)))] + E[softplus(-D(x))]
        total = F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
        log["d_loss"] = total.data
        if regularise and loss.kind == "ns-r1":
            penalty = r1_penalty(real_scores, real_t, loss.gamma)
            log["penalty"] = penalty.data
            total = total + penalty * loss.reg_every
    elif loss.kind == "wgan-gp":
        # E[D(G(z))] - E[D(x)] + eps_drift E[D(x)^2]
        total = fake_scores.mean() - real_scores.mean() + (real_scores ** 2).mean() * loss.drift
        log["d_loss"] = total.data
        if regularise:
            x_hat = interpolates(real_seen.data, fake_seen.data, rng or np.random.default_rng())
            penalty = wgan_gradient_penalty(critic, x_hat, loss.gp_weight)
            log["penalty"] = penalty.data
            total = total + penalty * loss.reg_every
    else:
        raise ValueError(f"unknown loss {loss.kind!r}: use one of {LOSSES}")
    return total, log


def generator_loss(fake_scores, loss=Loss()):
    """L_G from D's scores on generated images."""
    if loss.kind in ("ns-r1", "ns"):
        return F.softplus(-fake_scores).mean()
    if loss.kind == "wgan-gp":
        return -fake_scores.mean()
    raise ValueError(f"unknown loss {loss.kind!r}: use one of {LOSSES}")
