"""DiffAugment: the same random, differentiable augmentation T of real and generated images before
D sees them (Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020).

With few training images D memorises them and its feedback to G collapses. Augmenting only the
reals would teach G to draw augmented images; DiffAugment instead shows D only augmented images,
T(x) for reals and T(G(z)) for fakes, in the D step and in the G step (paper, section 3.2):

    L_D = f(-D(T(x))) + f(D(T(G(z))))        L_G = f(-D(T(G(z))))

T is built from differentiable ops, so G's gradient flows back through T, and R1 (Mescheder et
al. 2018) differentiates D(T(x)) with respect to the un-augmented x (twice, through T's backward).
Every call draws its own parameters, per image, from the generator it was given.

The policies, for single-channel images in [-1, 1] of side S (u ~ U(0, 1), one per image):

    color        brightness  y = x + (u - 0.5)                       shift in [-0.5, 0.5]
                 contrast    y = (x - m) * (u + 0.5) + m             factor in [0.5, 1.5]
                 m = the image's mean over its pixels (H, W; there is one channel)
    translation  y[i, j] = x[i - dy, j - dx], zero outside the image,
                 dy, dx integers uniform in [-s, s], s = round(S / 8)
    cutout       y = x * mask, mask = 0 on one square of side c = round(S / 2) whose centre is
                 uniform over the image (near an edge only part of it lies inside), 1 elsewhere

These are the paper's forms (its official code, DiffAugment_pytorch.py, also works on [-1, 1]).
They suit one channel as they are: brightness and contrast act on the one intensity; the paper's
third colour op, saturation (stretching each pixel away from its mean over the channels), is the
identity for one channel and is left out. Translation and cutout fill with 0, as the paper's
code does; in [-1, 1] that is mid-grey, so on these MRI slices (background -1) the filled parts
stand out. A policy's operations are applied in the order given.
"""
import numpy as np

import nn
from nn.backend import get_array_module

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8     # largest shift, as a fraction of the side
CUTOUT_RATIO = 1 / 2          # side of the cut-out square, as a fraction of the side


def parse_policy(text):
    """"color,translation" -> ("color", "translation"); "" -> () (off). Raises ValueError."""
    names = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if any(name not in POLICIES for name in names) or len(set(names)) != len(names):
        raise ValueError(f"unknown or repeated policy in {text!r}")
    return names


def policy_rule(value):
    """The rule for --diffaugment (settings/rules.py): None when the policy works, else what does."""
    try:
        parse_policy(value)
    except ValueError:
        return (f"use a comma list of {', '.join(POLICIES)} (each at most once), or \"\" for no "
                f"augmentation")
    return None


def _like(array, x):
    """A host array as an array of x's library (NumPy or CuPy); floats in x's dtype."""
    xp = get_array_module(x.data)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(x.dtype)
    return xp.asarray(array)


# ---- the operations, with their parameters given (tests call these with fixed values) -----------

def brightness(x, shift):
    """y = x + shift, one shift per image (B,)."""
    return x + nn.Tensor(_like(shift.reshape(-1, 1, 1, 1), x))              # x + (u - 0.5)


def contrast(x, factor):
    """y = (x - m) * factor + m, m the mean of each image, one factor per image (B,)."""
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * nn.Tensor(_like(factor.reshape(-1, 1, 1, 1), x)) + m   # (x - m)(u + 0.5) + m


class Translate(nn.Function):
    """y[b, :, i, j] = x[b, :, i - dy[b], j - dx[b]], 0 where that falls outside: the content of
    image b moves dy[b] rows down and dx[b] columns right (integers, host arrays (B,)).

    Its adjoint is the translation back, <T_d x, g> = <x, T_{-d} g> (zero fill both ways), so
    the gradient is gx = Translate(-dy, -dx)(gy), and so are all higher derivatives (as for
    stylegan_layers.Blur). The forward is one gather from the zero-padded image."""

    def __init__(self, dy, dx):
        self.dy, self.dx = np.asarray(dy), np.asarray(dx)

    def forward(self, x):
        xp = get_array_module(x)
        b, c, h, w = x.shape
        s = int(max(np.abs(self.dy).max(), np.abs(self.dx).max()))
        padded = xp.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))            # x_pad[k] = x[k - s]
        rows = np.arange(h)[None, :] - self.dy[:, None] + s              # (B, H): i - dy + s
        cols = np.arange(w)[None, :] - self.dx[:, None] + s              # (B, W): j - dx + s
        index = (np.arange(b)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :])
        return padded[tuple(xp.asarray(i) for i in index)]

    def backward(self, gy):
        return Translate(-self.dy, -self.dx)(gy)


def translate(x, dy, dx):
    """Content moved dy rows down and dx columns right, zero fill (Translate)."""
    return Translate(dy, dx)(x)


def cutout_mask(shape, top, left, size):
    """(B, 1, H, W) float mask on the host: 0 on rows [top, top + size) x columns [left,
    left + size) of each image (the part inside the image), 1 elsewhere."""
    b, _, h, w = shape
    rows = np.arange(h)[None, :] - top[:, None]                             # (B, H)
    cols = np.arange(w)[None, :] - left[:, None]                            # (B, W)
    inside = (((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :])
    return (~inside).astype(np.float32)[:, None]


def cutout(x, top, left, size):
    """y = x * mask (cutout_mask): one square per image set to 0."""
    return x * nn.Tensor(_like(cutout_mask(x.shape, top, left, size), x))


# ---- drawing the parameters --------------------------------------------------------------------

def max_shift(side):
    """s = round(side / 8): 1 at 8x8, 2 at 16x16, 8 at 64x64 (the paper's int(S * 0.125 + 0.5))."""
    return int(side * TRANSLATION_RATIO + 0.5)


def cutout_size(side):
    """c = round(side / 2): the paper's int(S * 0.5 + 0.5)."""
    return int(side * CUTOUT_RATIO + 0.5)


def random_color(x, rng):
    u_brightness = rng.uniform(size=x.shape[0])
    u_contrast = rng.uniform(size=x.shape[0])
    return contrast(brightness(x, u_brightness - 0.5), u_contrast + 0.5)


def random_translation(x, rng):
    s = max_shift(x.shape[-1])
    dy, dx = (rng.integers(-s, s + 1, size=x.shape[0]) for _ in range(2))
    return translate(x, dy, dx)


def random_cutout(x, rng):
    """The square's centre row and column are uniform integers in [0, S - c % 2] and its corner is
    the centre - c // 2 (the paper's offsets)."""
    side, size = x.shape[-1], cutout_size(x.shape[-1])
    top, left = (rng.integers(0, side + 1 - size % 2, size=x.shape[0]) - size // 2
                 for _ in range(2))
    return cutout(x, top, left, size)


RANDOM = {"color": random_color, "translation": random_translation, "cutout": random_cutout}


class DiffAugment:
    """T: augment(x) applies the policy's operations, in order, with parameters drawn from `rng`
    (a NumPy Generator that the training script saves in its checkpoint). An empty policy is the
    identity and draws nothing. Works on Tensors (N, C, H, W) of either device and dtype."""

    def __init__(self, policy, rng):
        self.policy = parse_policy(policy) if isinstance(policy, str) else tuple(policy)
        self.rng = rng

    def __bool__(self):
        return bool(self.policy)

    def __call__(self, x):
        for name in self.policy:
            x = RANDOM[name](x, self.rng)
        return x
