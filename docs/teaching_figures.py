"""Make the teaching figures of docs/stepping-through.md and the README, from the code itself:

    python docs/teaching_figures.py          # docs/graph_dcgan_discriminator.png (and .dot),
                                             # docs/graph_r1_penalty.png (and .dot),
                                             # docs/profile_dcgan_step.txt

The graphs come from a tiny DCGAN discriminator (ndf 4, 16x16; ndf 2, 8x8 for R1) so that the
pictures stay readable; the profile from train_dcgan.py's default step (64x64, batch 32,
ngf = ndf = 32, dropout 0.4), 3 steps after one warm-up. Without Graphviz only the .dot files
are written (see nn.draw_graph).
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import nn  # noqa: E402
import settings.dcgan  # noqa: E402
from models import dcgan  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from train_dcgan import train_step  # noqa: E402


def discriminator_graph():
    """One forward pass of a DCGAN discriminator on a batch of two 16x16 images."""
    nn.manual_seed(0)
    D = dcgan.init_weights(dcgan.Discriminator(16, 4))
    x = nn.Tensor(np.zeros((2, 1, 16, 16), np.float32))
    logits = D(x)
    nn.draw_graph(logits, os.path.join(HERE, "graph_dcgan_discriminator.png"), module=D,
                  names={x: "x (images)", logits: "D(x) (logits)"})


def r1_graph():
    """R1 = |dD(x)/dx|^2 for an 8x8 discriminator (conv, LeakyReLU, conv): the gradient is made
    with create_graph=True, so the graph of R1 is the backward pass of D."""
    nn.manual_seed(0)
    D = dcgan.init_weights(dcgan.Discriminator(8, 2))
    x = nn.Tensor(np.zeros((2, 1, 8, 8), np.float32), requires_grad=True)
    out = D(x)
    gx, = nn.grad(out.sum(), [x], create_graph=True)
    penalty = (gx * gx).sum()
    nn.draw_graph(penalty, os.path.join(HERE, "graph_r1_penalty.png"), module=D,
                  names={gx: "dD(x)/dx", penalty: "R1 = |dD(x)/dx|^2"})


def profile_table(steps=3):
    nn.manual_seed(0)
    G, D = settings.dcgan.build(argparse.Namespace(image_size=64, nz=100, ngf=32, ndf=32,
                                                   dropout=0.4))
    opt_g = nn.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = nn.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(0)
    real = nn.Tensor(rng.uniform(-1, 1, (32, 1, 64, 64)).astype(np.float32))
    z = nn.Tensor(rng.standard_normal((32, 100)).astype(np.float32))
    title = (f"one DCGAN training step, 64x64, batch 32, ngf = ndf = 32, float32, NumPy "
             f"{np.__version__}, {os.cpu_count()} cores ({cpu_model()})")
    print(title)
    prof = nn.profile_steps(lambda: train_step(G, D, opt_g, opt_d, real, z), steps)
    with open(os.path.join(HERE, "profile_dcgan_step.txt"), "w") as f:
        f.write(f"{title}\n{prof.table(steps)}\n")


if __name__ == "__main__":
    discriminator_graph()
    r1_graph()
    profile_table()
