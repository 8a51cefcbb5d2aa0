"""DCGAN's settings: its flags (each declared once, with the rule its value must follow), the
networks they build, the memory a training step needs, and samples drawn from a saved run
(generate.py's sampler). The architecture itself is models/dcgan.py; the training is
train_dcgan.py.
"""
import argparse

import numpy as np

import experiment
from experiment.memory import parameters_of, step_bytes
from models import dcgan

from .rules import above, at_least, between, number_at_least, optional, power_of_two

GRAPH_FACTOR = 13   # see memory_estimate; measured by benchmarks/bench_memory.py


def flags(description):
    p = experiment.parser(description, out="runs/dcgan", image_size=64, batch_size=32,
                          epochs=15, steps_per_epoch=200)
    p.tighten("image_size", power_of_two(16))   # each level doubles; SSIM's 11x11 window needs 16
    g = p.add_argument_group("DCGAN")
    g.add_argument("--nz", type=int, default=100, rule=at_least(1),
                   help="latent size (default: %(default)s)")
    g.add_argument("--ngf", type=int, default=32, rule=at_least(1),
                   help="G width; the PyTorch example uses 64 (default: %(default)s)")
    g.add_argument("--ndf", type=int, default=32, rule=at_least(1),
                   help="D width (default: %(default)s)")
    g.add_argument("--lr", type=float, default=2e-4, rule=above(0),
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--lr-d", type=float, default=None, rule=optional(above(0)),
                   help="D's learning rate if different from --lr (default: --lr)")
    g.add_argument("--beta1", type=float, default=0.5, rule=between(0, 1, high_included=False),
                   help="Adam beta1 (default: %(default)s)")
    g.add_argument("--real-label", type=float, default=1.0, rule=between(0, 1),
                   help="D's target for real images; 0.9 = one-sided label smoothing "
                        "(default: %(default)s)")
    g.add_argument("--dropout", type=float, default=0.4, rule=between(0, 1, high_included=False),
                   help="dropout in D after each hidden layer; 0 = the paper's D. Without it D wins "
                        "outright on the bundled 64x64 slices (D loss -> 0, G draws noise) "
                        "(default: %(default)s)")
    g.add_argument("--ema-half-life", type=float, default=2000.0, rule=number_at_least(0),
                   help="images over which the average of G's weights used for samples forgets "
                        "half; 0 = samples from G itself (default: %(default)s)")
    g.add_argument("--samples", type=int, default=64, rule=at_least(2),   # pairwise SSIM: 2
                   help="images in the per-epoch grid and the final report (default: %(default)s)")
    g.add_argument("--metrics-real", type=int, default=2000, rule=at_least(1),
                   help="compare samples with at most this many training images (default: %(default)s)")
    return p


def build(config):
    """(generator, discriminator) for a run's settings, initialised as in Radford et al."""
    generator = dcgan.Generator(config.image_size, config.nz, config.ngf)
    discriminator = dcgan.Discriminator(config.image_size, config.ndf, dropout=config.dropout)
    return dcgan.init_weights(generator), dcgan.init_weights(discriminator)


def memory_estimate(config):
    """Bytes one training step needs (experiment/memory.py: step_bytes): the feature maps of G
    and D for one image, sum over levels r of (ngf_r + ndf_r) r^2, plus the image; D runs on the
    real and the fake batch and again in G's step (GRAPH_FACTOR, measured at the defaults)."""
    size = config.image_size
    g, d = dcgan.widths(size, config.ngf), dcgan.widths(size, config.ndf)
    maps = sum(width * r * r for r, width in g + d) + 2 * size * size
    return step_bytes(config.batch_size, maps, parameters_of(build, config), GRAPH_FACTOR)


def sample(checkpoint, n, seed, device="cpu"):
    """generate.py's sampler: n images (float32 NumPy (n, 1, S, S), in [-1, 1]) from a DCGAN
    checkpoint's averaged generator, with latent vectors z ~ N(0, I) drawn from `seed`."""
    config = argparse.Namespace(**checkpoint["config"])
    generator, _ = build(config)
    generator.load_state_dict(checkpoint["generator_ema"])
    generator.to(device)
    z = np.random.default_rng(seed).standard_normal((n, config.nz)).astype(np.float32)
    return dcgan.generate(generator, z)
