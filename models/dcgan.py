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
