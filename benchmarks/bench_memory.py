"""Measure the memory of one training step of each model and compare it with the estimate that the
scripts use to refuse sizes that cannot fit (settings/*.memory_estimate, experiment.memory.step_bytes).

    python benchmarks/bench_memory.py                  # the three scripts' defaults
    python benchmarks/bench_memory.py --image-size 32 --batch-size 8

The peak is what tracemalloc sees (every NumPy array is reported to it) from building the models
to the end of the third training step: parameters, optimizer moments, the graph, gradients and
temporary copies. OpenBLAS's own buffers and the interpreter are not in it; the scripts add a fixed
allowance for them (experiment/memory.py). Each model's GRAPH_FACTOR was chosen so that the
estimate is a little above the measured peak at the defaults.
"""
import argparse
import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nn  # noqa: E402
import settings.dcgan  # noqa: E402
import settings.stylegan  # noqa: E402
import settings.vqvae  # noqa: E402
import train_dcgan  # noqa: E402
import train_stylegan  # noqa: E402
import train_vqvae  # noqa: E402

SETTINGS = {"dcgan": settings.dcgan, "vqvae": settings.vqvae, "stylegan": settings.stylegan}


def dcgan_steps(cfg, real, steps):
    G, D = settings.dcgan.build(cfg)
    opt_g = nn.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = nn.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    rng = np.random.default_rng(0)
    for _ in range(steps):
        z = nn.Tensor(rng.standard_normal((cfg.batch_size, cfg.nz)).astype(np.float32))
        train_dcgan.train_step(G, D, opt_g, opt_d, nn.Tensor(real), z)


def vqvae_steps(cfg, real, steps):
    """Stage 1 (the VQ-VAE) and stage 2 (the prior, on random code maps and levels, at
    --prior-batch-size): the larger peak counts."""
    model, prior = settings.vqvae.build(cfg)
    optimizer = nn.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    prior_optimizer = nn.optim.Adam(prior.parameters(), lr=cfg.prior_lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        train_vqvae.vqvae_step(model, optimizer, nn.Tensor(real), rng)
    side, n = settings.vqvae.code_side(cfg), cfg.prior_batch_size
    for _ in range(steps):
        labels = rng.integers(0, cfg.prior_levels, n) if cfg.prior_levels else None
        loss = prior.loss(rng.integers(0, cfg.codes, (n, side, side)), labels)
        prior_optimizer.zero_grad()
        loss.backward()
        prior_optimizer.step()


def stylegan_steps(cfg, real, steps):
    """Steps at the final resolution, fading in, with the gradient penalty on the first."""
    G, D = settings.stylegan.build(cfg)
    G_ema, _ = settings.stylegan.build(cfg)
    rng = np.random.default_rng(0)
    gan = train_stylegan.make_gan(G, D, cfg, rng, rng)
    train_stylegan.start_phase(gan, {}, cfg.image_size, cfg)
    for step in range(steps):
        train_stylegan.train_step(gan, real, cfg.image_size, 0.5, step * cfg.reg_every)
        nn.optim.update_average(G_ema, G, 0.99)


STEPS = {"dcgan": dcgan_steps, "vqvae": vqvae_steps, "stylegan": stylegan_steps}


def measure(model, argv=(), steps=3):
    """(measured peak bytes, estimated bytes) of `steps` training steps with the script's flags."""
    cfg = SETTINGS[model].flags("").parse_args(list(argv))
    real = np.random.default_rng(1).uniform(-1, 1, (cfg.batch_size, 1, cfg.image_size,
                                                    cfg.image_size)).astype(np.float32)
    nn.manual_seed(0)
    tracemalloc.start()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    STEPS[model](cfg, real, steps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before, SETTINGS[model].memory_estimate(cfg)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="dcgan,vqvae,stylegan")
    p.add_argument("--steps", type=int, default=3)
    args, flags = p.parse_known_args()
    print(f"{'model':<10} {'measured MiB':>13} {'estimate MiB':>13} {'estimate/measured':>18}")
    for model in args.models.split(","):
        peak, estimate = measure(model, flags, args.steps)
        print(f"{model:<10} {peak / 2**20:13.1f} {estimate / 2**20:13.1f} {estimate / peak:18.2f}",
              flush=True)


if __name__ == "__main__":
    main()
