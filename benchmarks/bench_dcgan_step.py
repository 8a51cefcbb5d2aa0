"""Time one DCGAN training step (D step + G step, as in train_dcgan.py) with our engine and with the
same architecture in PyTorch on the CPU, with the same number of threads; print the ratio.

    python benchmarks/bench_dcgan_step.py                     # 64x64, batch 32, ngf=ndf=64 and 32
    python benchmarks/bench_dcgan_step.py --widths 64 --steps 10
    python benchmarks/bench_dcgan_step.py --profile           # where our step spends its time

Timings alternate between the two engines (ours, PyTorch, ours, ...) and the median is reported,
because shared machines drift by 20-30% over a minute. PyTorch is optional: without it only our
times are printed.
"""
import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import machine  # noqa: E402
import nn  # noqa: E402
from models import dcgan  # noqa: E402
from train_dcgan import train_step  # noqa: E402


def ours(size, width, batch, nz, seed=0, device="cpu"):
    """A closure running one of our training steps on fixed random data on `device` ("cpu" or
    "gpu"); it returns the losses as 0-d arrays on the device, without waiting for them."""
    nn.manual_seed(seed)
    G = dcgan.init_weights(dcgan.Generator(size, nz, width))     # the PyTorch example's DCGAN
    D = dcgan.init_weights(dcgan.Discriminator(size, width))     # (no dropout)
    G.to(device)
    D.to(device)
    opt_g = nn.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = nn.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(seed)
    real = nn.Tensor(rng.uniform(-1, 1, (batch, 1, size, size)).astype(np.float32)).to(device)
    z = nn.Tensor(rng.standard_normal((batch, nz)).astype(np.float32)).to(device)
    return lambda: train_step(G, D, opt_g, opt_d, real, z)


def pytorch(size, width, batch, nz, seed=0, device="cpu"):
    """The same architecture and step in PyTorch on `device` ("cpu" or "cuda"), returning the
    loss tensors without waiting for them (None when PyTorch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    import torch.nn as tnn
    import torch.nn.functional as tF
    torch.manual_seed(seed)
    g_widths = [c for _, c in dcgan.widths(size, width)]
    layers = [tnn.ConvTranspose2d(nz, g_widths[0], 4, 1, 0, bias=False),
              tnn.BatchNorm2d(g_widths[0]), tnn.ReLU()]
    for a, b in zip(g_widths, g_widths[1:]):
        layers += [tnn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), tnn.BatchNorm2d(b), tnn.ReLU()]
    G = tnn.Sequential(*layers, tnn.ConvTranspose2d(g_widths[-1], 1, 4, 2, 1, bias=False), tnn.Tanh())
    d_widths = g_widths[::-1]
    layers = [tnn.Conv2d(1, d_widths[0], 4, 2, 1, bias=False), tnn.LeakyReLU(0.2)]
    for a, b in zip(d_widths, d_widths[1:]):
        layers += [tnn.Conv2d(a, b, 4, 2, 1, bias=False), tnn.BatchNorm2d(b), tnn.LeakyReLU(0.2)]
    D = tnn.Sequential(*layers, tnn.Conv2d(d_widths[-1], 1, 4, 1, 0, bias=False), tnn.Flatten(0))
    G.to(device)
    D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(seed)
    real = torch.from_numpy(rng.uniform(-1, 1, (batch, 1, size, size)).astype(np.float32)).to(device)
    z = torch.from_numpy(rng.standard_normal((batch, nz, 1, 1)).astype(np.float32)).to(device)
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)

    def step():
        fake = G(z)
        loss_d = (tF.binary_cross_entropy_with_logits(D(real), ones)
                  + tF.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)                    # as train_dcgan.py: no weight grads for D
        loss_g = tF.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        return loss_d, loss_g
    return step


# After its last call each library's worker threads spin for a while (OpenBLAS ~0.1 s, PyTorch's
# OpenMP threads until their spin count runs out) and slow down whatever runs next: pause at every
# switch between the two engines (see bench_conv.py).
SETTLE_SECONDS = 0.2


def seconds(step, repeats):
    time.sleep(SETTLE_SECONDS)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 32], help="ngf = ndf values")
    p.add_argument("--steps", type=int, default=3, help="steps per timing (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    p.add_argument("--profile", action="store_true", help="also profile our step per op")
    args = p.parse_args()

    threads = None
    try:
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    except ImportError:
        print("PyTorch is not installed: printing our times only")
    print(f"DCGAN training step, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"nz {args.nz}, float32, median of {args.rounds} rounds of {args.steps} steps\n"
          + machine.header() + (f"; PyTorch threads {threads}" if threads else ""))
    print(f"{'ngf=ndf':>8} {'ours ms':>9} {'PyTorch ms':>11} {'ratio':>6}")
    for width in args.widths:
        engines = {"ours": ours(args.image_size, width, args.batch_size, args.nz)}
        theirs = pytorch(args.image_size, width, args.batch_size, args.nz)
        if theirs is not None:
            engines["torch"] = theirs
        times = defaultdict(list)
        for step in engines.values():
            step()                                   # warm up (allocations, first-call costs)
        for _ in range(args.rounds):
            for name, step in engines.items():
                times[name].append(seconds(step, args.steps))
        mine = np.median(times["ours"]) * 1e3
        if "torch" in times:
            reference = np.median(times["torch"]) * 1e3
            print(f"{width:>8} {mine:>9.0f} {reference:>11.0f} {mine / reference:>6.2f}", flush=True)
        else:
            print(f"{width:>8} {mine:>9.0f} {'-':>11} {'-':>6}", flush=True)
        if args.profile:   # per op, per step (the optimizer's steps are "outside Functions")
            print(f"\nprofile of our step at ngf = ndf = {width} (nn.profile):")
            nn.profile_steps(engines["ours"], args.steps)


if __name__ == "__main__":
    main()
