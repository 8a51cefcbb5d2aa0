"""StyleGAN (Karras, Laine & Aila 2019) grown progressively (Karras, Aila, Laine & Lehtinen 2018).

Generator  = mapping network f: z -> w, then a synthesis network g that starts from a learned
             constant 4x4 map and, at every layer, adds noise and applies the style of w (AdaIN).
Discriminator mirrors the synthesis network: from-image 1x1 conv, [conv3, conv3, avg-pool] blocks,
             minibatch standard deviation and conv3 + dense + dense at 4x4. No batch norm.
With blur=True (train_stylegan.py's default) a [1, 2, 1] low-pass filter follows every upsampling
conv in G and precedes every downsampling conv in D, as in the official code.

Both networks are built for every resolution up to `image_size` but run only up to the current one.
Each keeps one block per resolution in `blocks[R]` (an nn.ModuleDict), and a block owns the 1x1
layer that turns its features into an image (G: to_image) or an image into features (D: from_image).
While a new resolution R is faded in, alpha goes from 0 to 1 (Karras et al. 2018, figure 2):

    G:  image = (1 - alpha) * upsample(to_image_{R/2}(x_{R/2})) + alpha * to_image_R(block_R(x_{R/2}))
    D:  h     = (1 - alpha) * from_image_{R/2}(avgpool(image)) + alpha * block_R(from_image_R(image))

and real images are faded the same way (`fade_real_images`), so D never sees a sharper real image
than G can draw. Layer counts: two style layers per resolution, 2 * log2(R) - 2 in total (10 at 64x64).

Shapes: z and w are (B, w_dim); images are NCHW (B, 1, R, R) with values around [-1, 1] (no tanh by
default, as in the papers; Generator(tanh=True) adds one after the sum of a skip generator).
"""
import math

import numpy as np

import nn
import nn.functional as F
from nn.ops import broadcast_to

from . import dcgan
from .stylegan_layers import (EqualConv2d, EqualLinear, NoiseInjection, StyleModulation, blur,
                              lrelu)

START_RESOLUTION = 8
CRITICS = ("stylegan", "dcgan", "strided")   # D: StyleGAN's own, DCGAN's strided one
# (StridedCritic), or that one without batch norm (so that a per-image penalty can be used)

MBSTD_GROUP = 4          # D's minibatch standard deviation works on groups of 4 images


def log2_int(n):
    value = int(round(math.log2(n)))
    if 2 ** value != n:
        raise ValueError(f"resolution {n} is not a power of two")
    return value


def resolutions_up_to(image_size, start=4):
    """[start, 2*start, ..., image_size]."""
    return [2 ** k for k in range(log2_int(start), log2_int(image_size) + 1)]


def num_style_layers(resolution):
    """Two style layers per resolution from 4x4: 2 * log2(R) - 2 (4x4 -> 2, 8x8 -> 4, 64x64 -> 10)."""
    return 2 * log2_int(resolution) - 2


def channel_widths(image_size, fmap_base, fmap_max):
    """Feature maps per resolution: min(fmap_max, fmap_base / R), halving as R doubles
    (Karras et al. 2018, table 2, with a small fmap_base for a CPU)."""
    return {r: max(1, min(fmap_max, fmap_base // r)) for r in resolutions_up_to(image_size)}


def upsample(x):
    return F.upsample_nearest(x, scale_factor=2)


def smooth_upsample(x):
    """Nearest-neighbour upsampling, then the [1, 2, 1] blur: R/2 -> R without blocks."""
    return blur(upsample(x))


def downsample(x):
    return F.avg_pool2d(x, 2)


def lerp(a, b, t):
    """a + t * (b - a): t = 0 gives a, t = 1 gives b."""
    return a + (b - a) * t


# ---- the generator ----------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """w = f(z): pixel norm z / sqrt(mean(z^2) + 1e-8), then `num_layers` equalised linear layers
    with LeakyReLU 0.2 and learning-rate multiplier 0.01 (Karras et al. 2019, section 2 and
    appendix C)."""

    def __init__(self, z_dim, w_dim, num_layers=8, lrmul=0.01, rng=None):
        super().__init__()
        self.layers = nn.ModuleList([EqualLinear(z_dim if i == 0 else w_dim, w_dim, lrmul=lrmul,
                                                 rng=rng) for i in range(num_layers)])

    def forward(self, z):
        x = F.pixel_norm(z)                     # z / sqrt(mean(z^2) + 1e-8)
        for layer in self.layers:
            x = lrelu(layer(x))                 # x <- lrelu(x (c w_hat)^T + lrmul b_hat)
        return x


class StyleLayer(nn.Module):
    """One style layer: [conv3 ->] noise -> bias -> LeakyReLU -> instance norm -> style.

    The conv's bias is added before the noise instead of after it; both are additions, so the
    result is the same as the paper's order (Karras et al. 2019, figure 1b)."""

    def __init__(self, in_channels, out_channels, w_dim, has_conv=True, blur_after_conv=False,
                 rng=None):
        super().__init__()
        self.has_conv, self.blur_after_conv = has_conv, blur_after_conv
        if has_conv:
            self.conv = EqualConv2d(in_channels, out_channels, 3, rng=rng)
        self.noise = NoiseInjection(out_channels)
        self.style = StyleModulation(out_channels, w_dim, rng=rng)

    def forward(self, x, w, noise):
        if self.has_conv:
            x = self.conv(x)                    # conv3x3 with equalised weights, + bias
            if self.blur_after_conv:
                x = blur(x)                     # [1, 2, 1] low-pass after the upsampling conv
        x = lrelu(self.noise(x, noise))         # x + B * noise, then LeakyReLU 0.2
        return self.style(x, w)                 # AdaIN(x, A(w)), Karras et al. 2019 eq. 1


class SynthesisBlock(nn.Module):
    """One resolution R of g: (upsample, style layer, style layer), and its to-image 1x1 conv,
    which turns the features into the image while R is the output resolution (or fading out).
    At 4x4 the input is the learned constant (initialised to ones) and the first layer has no conv.
    """

    def __init__(self, resolution, in_channels, out_channels, w_dim, blur=False, rng=None,
                 to_image_at_zero=False):
        super().__init__()
        self.resolution = resolution
        first = resolution == 4
        if first:
            self.const = nn.Parameter(np.ones((1, out_channels, 4, 4), dtype=np.float32))
        self.layer0 = StyleLayer(in_channels, out_channels, w_dim, has_conv=not first,
                                 blur_after_conv=blur and not first, rng=rng)
        self.layer1 = StyleLayer(out_channels, out_channels, w_dim, rng=rng)
        self.to_image = EqualConv2d(out_channels, 1, 1, gain=1.0, rng=rng)
        if to_image_at_zero:                    # (after the draw: the other weights stay alike)
            self.to_image.weight.data[...] = 0.0

    def image_layer(self):
        return self.to_image

    def forward(self, x, w0, w1, noise0, noise1, features=None):
        if self.resolution == 4:
            x = broadcast_to(self.const, (w0.shape[0],) + self.const.shape[1:])
        else:
            x = upsample(x)                     # nearest neighbour: R/2 -> R
        x = self.layer0(x, w0, noise0)
        if features is not None:
            features.append(x)
        x = self.layer1(x, w1, noise1)
        if features is not None:
            features.append(x)
        return x


class SynthesisNetwork(nn.Module):
    """g(w_0, ..., w_{L-1}): the image at `resolution`, faded in with `alpha` (see module doc).
    `blocks[R]` is the SynthesisBlock of resolution R, for every R from 4 to image_size.

    skip=False (Karras et al. 2018): the image is to_image_R of the last block; while R fades
    in it is blended with the upsampled image of R/2, which then stops being used.
    skip=True (the "skip" generator of StyleGAN2, Karras et al. 2020, figure 7b): the image is
    the sum of every resolution's to_image, each upsampled to R,

        image_R = up(image_{R/2}) + alpha * to_image_R(x_R),       image_4 = to_image_4(x_4)

    with up = the [1, 2, 1] blur of the nearest-neighbour upsampling (StyleGAN2 upsamples this
    path with a [1, 3, 3, 1] filter; nearest alone left every lower resolution's pixels as
    visible blocks that the higher ones could not cancel, as measured)

    and the to_image of every resolution that is added later (above START_RESOLUTION) starts at
    zero, so a new resolution adds detail to the image the lower ones already draw instead of
    replacing it with its first random guess. (All of them at zero would make every first image
    the same, zero: G then learns the mean slice first and stays collapsed, as measured.)"""

    def __init__(self, image_size, w_dim, widths, blur=False, rng=None, skip=False):
        super().__init__()
        self.image_size, self.skip = image_size, skip
        self.resolutions = resolutions_up_to(image_size)
        self.blocks = nn.ModuleDict()
        previous = widths[4]
        for r in self.resolutions:
            self.blocks[r] = SynthesisBlock(r, previous, widths[r], w_dim, blur, rng=rng,
                                            to_image_at_zero=skip and r > START_RESOLUTION)
            previous = widths[r]

    def forward(self, ws, resolution, alpha=1.0, noise=None, features=None):
        """ws: list of num_style_layers(resolution) tensors (B, w_dim), one per style layer.
        noise: list of arrays (B, 1, r, r), two per resolution (see `make_noise`)."""
        if noise is None:
            noise = make_noise(ws[0].shape[0], resolution, np.random.default_rng(), like=ws[0])
        x, previous_x, image = None, None, None
        for i, r in enumerate(resolutions_up_to(resolution)):
            previous_x = x
            x = self.blocks[r](x, ws[2 * i], ws[2 * i + 1], noise[2 * i], noise[2 * i + 1],
                               features)
            if self.skip:
                term = self.blocks[r].to_image(x)
                if r == resolution and alpha < 1.0 and r > START_RESOLUTION:
                    term = term * alpha                         # the new resolution fades in
                image = term if image is None else smooth_upsample(image) + term   # up(image) + term
        if self.skip:
            return image
        image = self.blocks[resolution].to_image(x)
        if alpha < 1.0 and resolution > START_RESOLUTION:
            old = upsample(self.blocks[resolution // 2].to_image(previous_x))
            image = lerp(old, image, alpha)     # (1 - alpha) up(to_image_{R/2}) + alpha to_image_R
        return image


def make_noise(batch, resolution, rng, like=None, on_host=False):
    """Per-layer noise inputs: two (B, 1, r, r) standard-normal float32 arrays for every
    resolution r, cut from one draw of all their values, (B, values per image): one kernel on
    the GPU, and the first axis runs over the images (a data-parallel run deals its rows).

    `rng` is a NumPy Generator; its state, saved in a checkpoint, decides the values, so runs are
    reproducible and resume exactly. They are drawn on `like`'s device (nn.functional's
    standard_normal: on the GPU by its cuRAND generator, seeded from `rng`: nothing is copied from
    the host), or with on_host=True drawn from `rng` on the CPU and copied to that device: the
    same values on every device (`generate`)."""
    device = "cpu" if like is None else like.device
    xp = np if on_host or like is None else nn.backend.get_array_module(like.data)
    sides = [r for r in resolutions_up_to(resolution) for _ in range(2)]
    values = F.standard_normal((batch, sum(r * r for r in sides)), np.float32, xp, rng)
    values = nn.backend.to_device(values, device)
    noise, start = [], 0
    for r in sides:                          # each layer's columns, as (B, 1, r, r)
        noise.append(nn.Tensor(values[:, start:start + r * r].reshape(batch, 1, r, r)))
        start += r * r
    return noise


class Generator(nn.Module):
    """Mapping network + synthesis network, with the truncation trick and style mixing."""

    def __init__(self, image_size=64, z_dim=64, w_dim=64, mapping_layers=8, fmap_base=1024,
                 fmap_max=64, seed=0, blur=False, skip=False, widths=None, tanh=False):
        """widths: {resolution: channels} that replace channel_widths' at those resolutions.
        tanh=True bounds the image to (-1, 1) by a tanh on the synthesis network's output (as
        DCGAN's generator does); the default leaves it unbounded, as the papers do."""
        super().__init__()
        rng = np.random.default_rng(seed)
        self.z_dim, self.w_dim, self.tanh = z_dim, w_dim, tanh
        self.widths = {**channel_widths(image_size, fmap_base, fmap_max), **(widths or {})}
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, rng=rng)
        self.synthesis = SynthesisNetwork(image_size, w_dim, self.widths, blur, rng=rng, skip=skip)

    def forward(self, z, resolution, alpha=1.0, noise=None, z_mix=None, crossover=None,
                w_avg=None, psi=None):
        """The image for latents z (B, z_dim). With z_mix and crossover, style layers >= crossover
        take their style from z_mix (style mixing). With w_avg and psi, truncation is applied."""
        w = self.mapping(z)
        w_mix = None if z_mix is None else self.mapping(z_mix)
        ws = layer_styles(w, num_style_layers(resolution), w_mix, crossover)
        if psi is not None:
            ws = truncate(ws, w_avg, psi)
        image = self.synthesis(ws, resolution, alpha, noise)
        return F.tanh(image) if self.tanh else image

    def mean_w(self, n=4096, seed=0):
        """The average w over n random z: the centre that truncation pulls towards."""
        rng = np.random.default_rng(seed)
        device = self.mapping.layers[0].weight.device
        z = nn.Tensor(rng.standard_normal((n, self.z_dim)).astype(np.float32)).to(device)
        with nn.no_grad():
            return self.mapping(z).mean(axis=0, keepdims=True)


def layer_styles(w, num_layers, w_mix=None, crossover=None):
    """One w per style layer. Style mixing (Karras et al. 2019, section 3.1): layers before
    `crossover` use w, layers from `crossover` on use w_mix."""
    if w_mix is None or crossover is None:
        return [w] * num_layers
    return [w if i < crossover else w_mix for i in range(num_layers)]


def truncate(ws, w_avg, psi, cutoff=None):
    """Truncation trick (Karras et al. 2019, equation 3): w' = w_avg + psi * (w - w_avg), on the
    first `cutoff` style layers (all when None; the paper's figures use the coarse layers)."""
    cutoff = len(ws) if cutoff is None else cutoff
    return [lerp(w_avg, w, psi) if i < cutoff else w   # w_avg + psi (w - w_avg)
            for i, w in enumerate(ws)]


# ---- the discriminator ------------------------------------------------------------------------

class DiscriminatorBlock(nn.Module):
    """One resolution R of D: conv3 -> LeakyReLU -> [blur ->] conv3 -> LeakyReLU -> 2x2 average
    pool, R to R/2; and its from-image 1x1 conv, which reads the image while R is the input
    resolution (or the one fading out)."""

    def __init__(self, resolution, in_channels, out_channels, blur=False, rng=None):
        super().__init__()
        self.resolution = resolution
        self.blur_before_conv1 = blur
        self.from_image = EqualConv2d(1, in_channels, 1, rng=rng)
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, rng=rng)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, rng=rng)

    def image_layer(self):
        return self.from_image

    def forward(self, x):
        x = lrelu(self.conv0(x))
        if self.blur_before_conv1:
            x = blur(x)                         # [1, 2, 1] low-pass before the downsampling
        x = lrelu(self.conv1(x))
        return downsample(x)                    # 2x2 average pool: R -> R/2


class Discriminator(nn.Module):
    """D(image) -> one score per image, (B, 1). Minibatch standard deviation at 4x4 (Karras et al.
    2018, section 3: the spread of features across a group of 4 samples, as one extra map).
    `blocks[R]` is the DiscriminatorBlock of resolution R, for every R from 8 to image_size."""

    def __init__(self, image_size=64, fmap_base=1024, fmap_max=64, mbstd_group=4, seed=1,
                 blur=False):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.mbstd_group = mbstd_group
        self.widths = widths = channel_widths(image_size, fmap_base, fmap_max)
        self.blocks = nn.ModuleDict()
        for r in resolutions_up_to(image_size, START_RESOLUTION):
            self.blocks[r] = DiscriminatorBlock(r, widths[r], widths[r // 2], blur, rng=rng)
        c = widths[4]
        self.final_conv = EqualConv2d(c + 1, c, 3, rng=rng)
        self.final_dense = EqualLinear(c * 16, c, rng=rng)
        self.score = EqualLinear(c, 1, gain=1.0, rng=rng)

    def forward(self, image, resolution, alpha=1.0):
        block = self.blocks[resolution]
        x = block(lrelu(block.from_image(image)))
        if alpha < 1.0 and resolution > START_RESOLUTION:
            old = lrelu(self.blocks[resolution // 2].from_image(downsample(image)))
            x = lerp(old, x, alpha)             # (1 - alpha) old + alpha block_R(...)
        r = resolution // 2
        while r >= START_RESOLUTION:
            x = self.blocks[r](x)
            r //= 2
        x = F.minibatch_stddev(x, group_size=self.mbstd_group)   # + one map: mean std over groups
        x = lrelu(self.final_conv(x))
        x = lrelu(self.final_dense(x.reshape(x.shape[0], -1)))
        return self.score(x)


class StridedCritic(nn.Module):
    """DCGAN's discriminator (models/dcgan.py: 4x4 stride-2 convolutions, batch norm, LeakyReLU
    0.2, dropout after each hidden layer) as StyleGAN's D. It is not grown: it always works at
    the final size, so the images of a lower phase (G's, faded as G fades them, and the real ones
    faded the same way) are scaled up to it by repeating pixels before it sees them.

    With mbstd_group > 0, StyleGAN's minibatch standard deviation (one extra 4x4 map: how much
    the images of a group of mbstd_group differ) comes before the last 4x4 convolution. DCGAN's
    G has batch norm, which keeps its images apart; StyleGAN's G normalises each image alone, so
    without this layer D cannot see that G draws one slice again and again (measured: the
    samples collapsed).

    With batch_norm=False its batch norm layers are left out: each image is then scored on its
    own, as a gradient penalty (R1, WGAN-GP) needs."""

    def __init__(self, image_size=64, ndf=32, dropout=0.4, mbstd_group=0, batch_norm=True):
        super().__init__()
        self.image_size, self.mbstd_group = image_size, mbstd_group
        layers = list(dcgan.init_weights(dcgan.Discriminator(image_size, ndf, dropout=dropout)).main)
        layers = [layer for layer in layers if batch_norm or not isinstance(layer, nn.BatchNorm2d)]
        self.features = nn.Sequential(*layers[:-1])            # down to (B, 8 ndf, 4, 4)
        self.score = layers[-1]                                 # 4x4 "valid" conv to one logit
        if mbstd_group:                                         # one more input map for it
            self.score = nn.Conv2d(layers[-1].weight.shape[1] + 1, 1, 4, bias=False)
            nn.init.normal_(self.score.weight, 0.0, 0.02)      # Radford et al.'s initialisation

    def forward(self, image, resolution, alpha=1.0):
        if image.shape[-1] < self.image_size:
            image = F.upsample_nearest(image, scale_factor=self.image_size // image.shape[-1])
        x = self.features(image)
        if self.mbstd_group:
            x = F.minibatch_stddev(x, group_size=self.mbstd_group)   # + one map: the spread
        return self.score(x).reshape(image.shape[0], 1)


# ---- real images and the generator average ---------------------------------------------------

def downscale_array(images, factor):
    """Box-filter an array (B, C, H, W) down by an integer factor (no gradient needed)."""
    if factor == 1:
        return images
    b, c, h, w = images.shape
    return images.reshape(b, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def fade_real_images(images, resolution, alpha):
    """Real images at `resolution`, faded like G's output: (1 - alpha) * up(down(x)) + alpha * x."""
    x = downscale_array(images, images.shape[-1] // resolution)
    if alpha < 1.0 and resolution > START_RESOLUTION:
        coarse = downscale_array(x, 2).repeat(2, axis=2).repeat(2, axis=3)
        x = coarse + (x - coarse) * x.dtype.type(alpha)
    return x



# ---- which parameters train at a resolution ----------------------------------------------------

def parameters_at(model, resolution):
    """The parameters G or D trains at `resolution` R, in model.parameters() order (the order a
    saved optimizer state follows). Found by structure: a per-resolution block of resolution r
    is left out when r > R, and its image layer (to_image / from_image) also when r < R/2 (the
    fade-in at R still blends in the image of R/2), unless G sums every resolution's image
    (skip). Everything else always trains."""
    every_image = isinstance(model, Generator) and model.synthesis.skip
    left_out = set()
    for block in model.modules():
        if isinstance(block, (SynthesisBlock, DiscriminatorBlock)):
            if block.resolution > resolution:
                left_out.update(id(p) for p in block.parameters())
            elif block.resolution < resolution // 2 and not every_image:
                left_out.update(id(p) for p in block.image_layer().parameters())
    return [p for p in model.parameters() if id(p) not in left_out]


def generate(generator, z, resolution, noise_rng, psi=None, w_avg=None, batch=32):
    """Images (N, 1, R, R) as a float32 NumPy array clipped to [-1, 1], in batches, no graph.
    The noise is drawn from noise_rng on the host: the same images on every device."""
    device = generator.mapping.layers[0].weight.device
    out = []
    with nn.no_grad():
        for start in range(0, len(z), batch):
            zb = nn.Tensor(np.asarray(z[start:start + batch], dtype=np.float32)).to(device)
            noise = make_noise(len(zb), resolution, noise_rng, like=zb, on_host=True)
            image = generator(zb, resolution, noise=noise, w_avg=w_avg, psi=psi)
            out.append(np.clip(image.numpy(), -1.0, 1.0))
    return np.concatenate(out).astype(np.float32)
