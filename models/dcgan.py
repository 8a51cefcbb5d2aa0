"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06434), as in the PyTorch example.

The paper's architecture guidelines (section 3) and where they live below:
  (1) no pooling: D downsamples with stride-2 convolutions, G upsamples with stride-2 transposed
      ("fractionally-strided") convolutions                         -> every layer of both nets
  (2) batch norm in both nets, but not on G's output layer nor on D's input layer
  (3) no fully connected hidden layers: z enters G as a 1x1 map through a 4x4 transposed conv,
      and D ends with a 4x4 "valid" conv to a single logit
  (4) ReLU in G, tanh on its output (images are in [-1, 1])
  (5) LeakyReLU with slope 0.2 in D
and section 4: weights from N(0, 0.02) (batch-norm scale N(1, 0.02), shift 0)  -> init_weights.
Kernels are 4x4 with stride 2 everywhere, so the kernel size is divisible by the stride and the
transposed convs leave no checkerboard pattern.

Shapes for image_size 64, ngf 64 (exactly the PyTorch example; `widths` gives the channels):
    z (B, 100) -> (B, 100, 1, 1) -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x1 (tanh)
D is the mirror image: 64x64x1 -> 32x32x64 -> 16x16x128 -> 8x8x256 -> 4x4x512 -> 1x1x1 (logit).
Each doubling of image_size (128, 256) adds one stride-2 layer at the high-resolution end; the
widest layers stay at 8 * ngf.
"""
import math

import numpy as np

import nn

from . import settings

GRAPH_FACTOR = 13   # see memory_estimate; measured by benchmarks/bench_memory.py

# ---- the settings a DCGAN accepts (train_dcgan.py checks them before it writes anything) ---------

SETTINGS = {
    "image_size": settings.power_of_two(16),   # each level doubles; SSIM's 11x11 window needs 16
    "nz": settings.at_least(1),
    "ngf": settings.at_least(1),
    "ndf": settings.at_least(1),
    "lr": settings.above(0),
    "lr_d": settings.optional(settings.above(0)),
    "beta1": settings.between(0, 1, high_included=False),
    "real_label": settings.between(0, 1),
    "dropout": settings.between(0, 1, high_included=False),
    "ema_half_life": settings.number_at_least(0),   # 0: samples from G itself
    "samples": settings.at_least(2),            # pairwise SSIM needs two samples
    "metrics_real": settings.at_least(1),
}


def check_settings(config, images=None):
    """Raise settings.SettingsError for the first setting a DCGAN cannot work with (see SETTINGS).
    `images`: how many training images there are, when known (unused: nothing depends on it)."""
    settings.check(config, SETTINGS)


def memory_estimate(config):
    """Bytes one training step needs (settings.step_bytes): the feature maps of G and D for one
    image, sum over levels r of (ngf_r + ndf_r) r^2, plus the image; D runs on the real and the
    fake batch and again in G's step (GRAPH_FACTOR, measured at the defaults)."""
    c = config if isinstance(config, dict) else vars(config)
    size = c["image_size"]
    g, d = widths(size, c["ngf"]), widths(size, c["ndf"])
    maps = sum(width * r * r for r, width in g + d) + 2 * size * size
    return settings.step_bytes(c["batch_size"], maps, parameter_count(c), GRAPH_FACTOR)


def parameter_count(config):
    """Weights of G and D (4x4 kernels, no biases) and their batch norms' scales, shifts and
    running statistics: every array of their state dicts (tested against the models)."""
    c = config if isinstance(config, dict) else vars(config)
    g = [c["nz"]] + [width for _, width in widths(c["image_size"], c["ngf"])] + [1]
    d = [1] + [width for _, width in widths(c["image_size"], c["ndf"])][::-1] + [1]
    kernels = sum(16 * a * b for chain in (g, d) for a, b in zip(chain, chain[1:]))
    norms = 4 * (sum(g[1:-1]) + sum(d[2:-1]))   # no batch norm on G's output or D's input
    return kernels + norms


def widths(image_size, base):
    """[(resolution, channels)] for 4x4, 8x8, ..., image_size/2: base * min(8, image_size / (2r))."""
    levels = int(round(math.log2(image_size)))
    if image_size < 8 or 2 ** levels != image_size:
        raise ValueError(f"image_size must be a power of two, at least 8 (64, 128, 256, ...), "
                         f"got {image_size}")
    resolutions = [2 ** i for i in range(2, levels)]
    return [(r, base * min(8, image_size // (2 * r))) for r in resolutions]


class Generator(nn.Module):
    """z (B, nz) -> images (B, channels, S, S) in [-1, 1]."""

    def __init__(self, image_size=64, nz=100, ngf=64, channels=1):
        super().__init__()
        self.nz = nz
        c = [channels_ for _, channels_ in widths(image_size, ngf)]
        # (3) z as a 1x1 map; a 4x4 transposed conv (stride 1, no padding) makes it 4x4
        layers = [nn.ConvTranspose2d(nz, c[0], 4, stride=1, padding=0, bias=False),
                  nn.BatchNorm2d(c[0]), nn.ReLU()]                            # (2), (4)
        for c_in, c_out in zip(c, c[1:]):                                     # (1) each doubles H, W
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        # output layer: no batch norm (2), tanh (4)
        layers += [nn.ConvTranspose2d(c[-1], channels, 4, stride=2, padding=1, bias=False),
                   nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        if z.ndim == 2:
            z = z.reshape(z.shape[0], z.shape[1], 1, 1)
        return self.main(z)


class Discriminator(nn.Module):
    """images (B, channels, S, S) -> logits (B,): large means "real"."""

    def __init__(self, image_size=64, ndf=64, channels=1, dropout=0.0):
        super().__init__()
        c = [channels_ for _, channels_ in widths(image_size, ndf)][::-1]   # S/2 down to 4x4
        # input layer: stride-2 conv (1), LeakyReLU 0.2 (5), no batch norm (2)
        layers = [nn.Conv2d(channels, c[0], 4, stride=2, padding=1, bias=False),
                  nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(c, c[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            if dropout > 0:   # not in the paper; an option for very small data sets
                layers.append(nn.Dropout(dropout))
        # (3) a 4x4 valid conv from the 4x4 map to one logit (no sigmoid: the loss takes logits)
        layers.append(nn.Conv2d(c[-1], 1, 4, stride=1, padding=0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).reshape(x.shape[0])


def init_weights(model):
    """Radford et al. section 4: conv weights ~ N(0, 0.02); batch-norm scale ~ N(1, 0.02), shift 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return model


def build(config):
    """(generator, discriminator) for a run's settings (a dict or argparse.Namespace)."""
    config = config if isinstance(config, dict) else vars(config)
    generator = Generator(config["image_size"], config["nz"], config["ngf"])
    discriminator = Discriminator(config["image_size"], config["ndf"],
                                  dropout=config.get("dropout", 0.0))
    return init_weights(generator), init_weights(discriminator)


def generate(generator, z, batch_size=64):
    """Images for latent vectors z (NumPy (N, nz)) as a float32 NumPy array (N, 1, S, S).

    Runs G in eval mode (batch norm with its running statistics), so drawing samples never
    changes the model; restores the previous mode afterwards.
    """
    was_training = generator.training
    generator.eval()
    device = next(iter(generator.parameters())).device
    pieces = []
    with nn.no_grad():
        for i in range(0, len(z), batch_size):
            chunk = nn.Tensor(np.asarray(z[i:i + batch_size], dtype=np.float32)).to(device)
            pieces.append(generator(chunk).numpy())
    generator.train(was_training)
    return np.concatenate(pieces)


def sample(checkpoint, n, seed, device="cpu"):
    """generate.py's entry point: n images (float32 NumPy (n, 1, S, S), in [-1, 1]) from a DCGAN
    checkpoint's averaged generator (its plain G for runs saved before there was one), with
    latent vectors z ~ N(0, I) drawn from `seed`."""
    config = checkpoint["config"]
    generator = Generator(config["image_size"], config["nz"], config["ngf"])
    generator.load_state_dict(checkpoint.get("generator_ema", checkpoint["generator"]))
    generator.to(device)
    z = np.random.default_rng(seed).standard_normal((n, config["nz"])).astype(np.float32)
    return generate(generator, z)

