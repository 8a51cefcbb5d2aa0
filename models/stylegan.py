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

Shapes: z and w are (B, w_dim); images are NCHW (B, 1, R, R) with values around [-1, 1] (no tanh:
applying one after the fade is a reported failure).
"""
import math
import re

import numpy as np

import nn
import nn.functional as F
from nn.ops import broadcast_to

from . import dcgan, diffaugment, settings
from .stylegan_losses import GAMMA_SCALINGS, LOSSES
from .stylegan_layers import (EqualConv2d, EqualLinear, NoiseInjection, StyleModulation, blur,
                              lrelu)

START_RESOLUTION = 8
CRITICS = ("stylegan", "dcgan")   # D: StyleGAN's own, or DCGAN's strided one (StridedCritic)
REPORT_RESOLUTION = 16   # the final report's SSIM needs images of at least 11x11

# ---- the settings StyleGAN accepts (train_stylegan.py checks them before it writes anything) -----

SETTINGS = {
    "image_size": settings.power_of_two(REPORT_RESOLUTION),
    "z_dim": settings.at_least(1),
    "w_dim": settings.at_least(1),
    "mapping_layers": settings.at_least(1),
    "fmap_base": settings.at_least(1),
    "fmap_max": settings.at_least(1),
    "d_fmap_base": settings.optional(settings.at_least(1)),
    "d_fmap_max": settings.optional(settings.at_least(1)),
    "critic": settings.one_of(CRITICS),
    "ndf": settings.at_least(1),
    "dropout": settings.between(0, 1, high_included=False),
    "loss": settings.one_of(LOSSES),
    "lr_d": settings.optional(settings.above(0)),
    "fade_images": settings.at_least(0),
    "gamma": settings.number_at_least(0),
    "gamma_scaling": settings.one_of(GAMMA_SCALINGS),
    "diffaugment": diffaugment.policy_rule,
    "gp_weight": settings.number_at_least(0),
    "drift": settings.number_at_least(0),
    "reg_every": settings.at_least(1),
    "lr": settings.above(0),
    "style_mixing": settings.between(0, 1),
    "ema_half_life": settings.above(0),
    "samples": settings.at_least(2),            # pairwise SSIM needs two samples
    "metrics_real": settings.at_least(1),
    "compare_with": settings.optional(settings.existing_file("give the checkpoint.npz of "
                                                            "another StyleGAN run")),
}
MBSTD_GROUP = 4          # D's minibatch standard deviation works on groups of 4 images
GRAPH_FACTOR = 18        # see memory_estimate; benchmarks/bench_memory.py: at the defaults
# (WGAN-GP) 498 MiB measured, estimated 548 (16 gave 488, too few)


def phase_images(config):
    """--phase-images as one image count per resolution before the final one (one number is used
    for all). Raises settings.SettingsError when the list is malformed or has the wrong length."""
    c = config if isinstance(config, dict) else vars(config)
    resolutions = resolutions_up_to(c["image_size"], START_RESOLUTION)[:-1]
    counts = settings.whole_numbers(c["phase_images"], minimum=1)
    if counts is None:
        raise settings.SettingsError("phase_images", c["phase_images"], "use whole numbers of "
                                     "images (at least 1) separated by commas, e.g. "
                                     "16000,16000,12000")
    if len(counts) == 1:
        counts = counts * len(resolutions)
    if len(counts) < len(resolutions):
        raise settings.SettingsError("phase_images", c["phase_images"], f"--image-size "
                                     f"{c['image_size']} needs {len(resolutions)} values "
                                     f"(resolutions {resolutions}) or one for all")
    return counts


def check_settings(config, images=None):
    """Raise settings.SettingsError for the first setting StyleGAN cannot work with: SETTINGS, the
    batch size (a multiple of the minibatch-stddev group), the phase list, and, when the steps
    per epoch are known (given, or from the number of `images`), a run that would end below
    16x16, where the final report cannot measure SSIM; and gamma scaling without R1, where it
    would change nothing."""
    settings.check(config, SETTINGS)
    c = config if isinstance(config, dict) else vars(config)
    if c.get("critic") == "dcgan" and c.get("loss") != "ns":
        raise settings.SettingsError("loss", c["loss"], "--critic dcgan has batch norm, which "
                                     "couples the images of a batch and so breaks a per-image "
                                     "gradient penalty: use --loss ns")
    if c.get("gamma_scaling", "none") != "none" and c.get("loss") != "ns-r1":
        raise settings.SettingsError("gamma_scaling", c["gamma_scaling"], "it scales R1's gamma, "
                                     "and only --loss ns-r1 has R1: add --loss ns-r1")
    if c["batch_size"] % MBSTD_GROUP:
        raise settings.SettingsError("batch_size", c["batch_size"], f"use a multiple of "
                                     f"{MBSTD_GROUP} (minibatch standard deviation groups)")
    counts = phase_images(c)
    steps_per_epoch = c["steps_per_epoch"] or (images // c["batch_size"] if images else 0)
    if steps_per_epoch:
        schedule = Schedule(c["image_size"], counts, c["fade_images"], c["batch_size"])
        total = c["epochs"] * steps_per_epoch
        reached, _ = schedule.at(total - 1)
        if reached < REPORT_RESOLUTION:
            needed = -(-(schedule.starts[1] + 1) // steps_per_epoch)
            raise settings.SettingsError("epochs", c["epochs"], f"training would end at step "
                                         f"{total}, still at {reached}x{reached}; the final "
                                         f"report needs "
                                         f"{REPORT_RESOLUTION}x{REPORT_RESOLUTION}: use at least "
                                         f"{needed}, or a shorter first --phase-images")


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

    def __init__(self, resolution, in_channels, out_channels, w_dim, blur=False, rng=None):
        super().__init__()
        self.resolution = resolution
        first = resolution == 4
        if first:
            self.const = nn.Parameter(np.ones((1, out_channels, 4, 4), dtype=np.float32))
        self.layer0 = StyleLayer(in_channels, out_channels, w_dim, has_conv=not first,
                                 blur_after_conv=blur and not first, rng=rng)
        self.layer1 = StyleLayer(out_channels, out_channels, w_dim, rng=rng)
        self.to_image = EqualConv2d(out_channels, 1, 1, gain=1.0, rng=rng)

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
    `blocks[R]` is the SynthesisBlock of resolution R, for every R from 4 to image_size."""

    def __init__(self, image_size, w_dim, widths, blur=False, rng=None):
        super().__init__()
        self.image_size = image_size
        self.resolutions = resolutions_up_to(image_size)
        self.blocks = nn.ModuleDict()
        previous = widths[4]
        for r in self.resolutions:
            self.blocks[r] = SynthesisBlock(r, previous, widths[r], w_dim, blur, rng=rng)
            previous = widths[r]

    def forward(self, ws, resolution, alpha=1.0, noise=None, features=None):
        """ws: list of num_style_layers(resolution) tensors (B, w_dim), one per style layer.
        noise: list of arrays (B, 1, r, r), two per resolution (see `make_noise`)."""
        if noise is None:
            noise = make_noise(ws[0].shape[0], resolution, np.random.default_rng(), like=ws[0])
        x, previous_x = None, None
        for i, r in enumerate(resolutions_up_to(resolution)):
            previous_x = x
            x = self.blocks[r](x, ws[2 * i], ws[2 * i + 1], noise[2 * i], noise[2 * i + 1],
                               features)
        image = self.blocks[resolution].to_image(x)
        if alpha < 1.0 and resolution > START_RESOLUTION:
            old = upsample(self.blocks[resolution // 2].to_image(previous_x))
            image = lerp(old, image, alpha)     # (1 - alpha) up(to_image_{R/2}) + alpha to_image_R
        return image


def make_noise(batch, resolution, rng, like=None):
    """Per-layer noise inputs: two (B, 1, r, r) standard-normal arrays for every resolution r.

    Drawn on the CPU from `rng` (a numpy Generator) so that runs are reproducible and resumable,
    then moved to `like`'s device."""
    device = "cpu" if like is None else like.device
    noise = []
    for r in resolutions_up_to(resolution):
        for _ in range(2):
            array = rng.standard_normal((batch, 1, r, r)).astype(np.float32)
            noise.append(nn.Tensor(array).to(device))
    return noise


class Generator(nn.Module):
    """Mapping network + synthesis network, with the truncation trick and style mixing."""

    def __init__(self, image_size=64, z_dim=64, w_dim=64, mapping_layers=8, fmap_base=1024,
                 fmap_max=64, seed=0, blur=False):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.config = dict(image_size=image_size, z_dim=z_dim, w_dim=w_dim,
                           mapping_layers=mapping_layers, fmap_base=fmap_base, fmap_max=fmap_max,
                           blur=blur)
        self.z_dim, self.w_dim = z_dim, w_dim
        self.widths = channel_widths(image_size, fmap_base, fmap_max)
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, rng=rng)
        self.synthesis = SynthesisNetwork(image_size, w_dim, self.widths, blur, rng=rng)

    def forward(self, z, resolution, alpha=1.0, noise=None, z_mix=None, crossover=None,
                w_avg=None, psi=None):
        """The image for latents z (B, z_dim). With z_mix and crossover, style layers >= crossover
        take their style from z_mix (style mixing). With w_avg and psi, truncation is applied."""
        w = self.mapping(z)
        w_mix = None if z_mix is None else self.mapping(z_mix)
        ws = layer_styles(w, num_style_layers(resolution), w_mix, crossover)
        if psi is not None:
            ws = truncate(ws, w_avg, psi)
        return self.synthesis(ws, resolution, alpha, noise)

    def load_state_dict(self, state, strict=True):
        return super().load_state_dict(with_current_names(state), strict)

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
        self.config = dict(image_size=image_size, fmap_base=fmap_base, fmap_max=fmap_max,
                           mbstd_group=mbstd_group, blur=blur)
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

    def load_state_dict(self, state, strict=True):
        return super().load_state_dict(with_current_names(state), strict)


class StridedCritic(nn.Module):
    """DCGAN's discriminator (models/dcgan.py: 4x4 stride-2 convolutions, batch norm, LeakyReLU
    0.2, dropout after each hidden layer) as StyleGAN's D. It is not grown: it always works at
    the final size, so the images of a lower phase (G's, faded as G fades them, and the real ones
    faded the same way) are scaled up to it by repeating pixels before it sees them."""

    def __init__(self, image_size=64, ndf=32, dropout=0.4):
        super().__init__()
        self.image_size = image_size
        self.net = dcgan.init_weights(dcgan.Discriminator(image_size, ndf, dropout=dropout))

    def forward(self, image, resolution, alpha=1.0):
        if image.shape[-1] < self.image_size:
            image = F.upsample_nearest(image, scale_factor=self.image_size // image.shape[-1])
        return self.net(image).reshape(image.shape[0], 1)


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



class Schedule:
    """Progressive growing (Karras et al. 2018, section 3) as a function of the training step.

    Phase 0 trains resolution 8 for phase_images[0] images; phase k trains 8 * 2^k, fading it in
    over fade_images images (alpha from 0 to 1) and then for the rest of phase_images[k]; the
    last phase, at image_size, runs to the end. Counts of images become steps of `batch_size`."""

    def __init__(self, image_size, phase_images, fade_images, batch_size):
        self.resolutions = resolutions_up_to(image_size, START_RESOLUTION)
        if len(phase_images) < len(self.resolutions) - 1:
            raise ValueError(f"{len(self.resolutions) - 1} phase lengths are needed (resolutions "
                             f"{self.resolutions[:-1]}), got {len(phase_images)}")
        self.fade_steps = max(1, -(-fade_images // batch_size))
        self.starts = [0]                       # first step of each phase
        for images in phase_images[:len(self.resolutions) - 1]:
            self.starts.append(self.starts[-1] + -(-images // batch_size))

    def phase(self, step):
        return max(k for k, start in enumerate(self.starts) if step >= start)

    def at(self, step):
        """(resolution, alpha) of training step `step` (counted from 0)."""
        k = self.phase(step)
        alpha = 1.0 if k == 0 else min(1.0, (step - self.starts[k]) / self.fade_steps)
        return self.resolutions[k], alpha

# ---- which parameters train at a resolution, and checkpoints from before the containers -------

def parameters_at(model, resolution):
    """The parameters G or D trains at `resolution` R, in model.parameters() order (the order a
    saved optimizer state follows). Found by structure: a per-resolution block of resolution r
    is left out when r > R, and its image layer (to_image / from_image) also when r < R/2 (the
    fade-in at R still blends in the image of R/2). Everything else always trains."""
    left_out = set()
    for block in model.modules():
        if isinstance(block, (SynthesisBlock, DiscriminatorBlock)):
            if block.resolution > resolution:
                left_out.update(id(p) for p in block.parameters())
            elif block.resolution < resolution // 2:
                left_out.update(id(p) for p in block.image_layer().parameters())
    return [p for p in model.parameters() if id(p) not in left_out]


_OLD_NAMES = [   # (old key prefix, today's) for checkpoints saved before the containers
    (re.compile(r"^mapping\.dense(\d+)\."), r"mapping.layers.\1."),
    (re.compile(r"^synthesis\.block(\d+)\."), r"synthesis.blocks.\1."),
    (re.compile(r"^synthesis\.to_image(\d+)\."), r"synthesis.blocks.\1.to_image."),
    (re.compile(r"^block(\d+)\."), r"blocks.\1."),
    (re.compile(r"^from_image(\d+)\."), r"blocks.\1.from_image."),
]


def with_current_names(state):
    """A state dict with the names of older checkpoints ("synthesis.block8.layer0...",
    "synthesis.to_image8.weight", "from_image8.weight", "mapping.dense0.weight") renamed to
    today's ("synthesis.blocks.8.layer0...", "synthesis.blocks.8.to_image.weight", ...). The
    parameter order is the same, so saved optimizer states load as they are."""
    renamed = {}
    for key, value in state.items():
        for old, new in _OLD_NAMES:
            key = old.sub(new, key)
        renamed[key] = value
    return renamed


# ---- memory, building from flags, and sampling from a checkpoint (generate.py calls `sample`) ----

def memory_estimate(config):
    """Bytes a training step at the final resolution S needs (settings.step_bytes), with the
    feature maps of one image: G's two style layers per resolution r (2 w_r r^2) and the
    upsampled input (w_{r/2} r^2), D's convolutions (2 w_r + w_{r/2}) r^2. D runs on real and
    fake images, twice more for the penalty's double backward (R1 or WGAN-GP), and in G's step."""
    c = config if isinstance(config, dict) else vars(config)
    widths = channel_widths(c["image_size"], c["fmap_base"], c["fmap_max"])
    maps = 0
    for r, width in widths.items():
        previous = widths[max(4, r // 2)]
        maps += (2 * width + 1) * r * r + (previous * r * r if r > 4 else 0)       # G
        maps += (2 * width + previous) * r * r if r >= START_RESOLUTION else 0    # D
    return settings.step_bytes(c["batch_size"], maps, parameter_count(c), GRAPH_FACTOR)


def parameter_count(config):
    """Weights and biases of G and D (tested against the models)."""
    c = config if isinstance(config, dict) else vars(config)
    z, w, widths = c["z_dim"], c["w_dim"], channel_widths(c["image_size"], c["fmap_base"],
                                                          c["fmap_max"])
    mapping = z * w + w + (c["mapping_layers"] - 1) * (w * w + w)

    def style(out):                                        # noise weights, the affine map A
        return out + 2 * out * (w + 1)
    synthesis = discriminator = 0
    for r, out in widths.items():
        previous = widths[max(4, r // 2)]
        first = 16 * out if r == 4 else 9 * previous * out + out     # the constant, or a conv
        synthesis += first + style(out) + 9 * out * out + out + style(out) + out + 1
        if r >= START_RESOLUTION:
            discriminator += 2 * out + 9 * out * out + out + 9 * out * previous + previous
    f = widths[4]
    discriminator += 9 * (f + 1) * f + f + 16 * f * f + f + f + 1
    return mapping + synthesis + discriminator



def build(config, seed=0):
    """Generator and Discriminator from a run's settings (a dict or argparse.Namespace)."""
    c = config if isinstance(config, dict) else vars(config)
    blur = c.get("blur", False)   # runs from before the blur existed have no "blur" setting
    generator = Generator(c["image_size"], c["z_dim"], c["w_dim"], c["mapping_layers"],
                          c["fmap_base"], c["fmap_max"], seed=seed, blur=blur)
    if c.get("critic", "stylegan") == "dcgan":
        nn.manual_seed(seed + 1)
        return generator, StridedCritic(c["image_size"], c["ndf"], c["dropout"])
    discriminator = Discriminator(c["image_size"], c.get("d_fmap_base") or c["fmap_base"],
                                  c.get("d_fmap_max") or c["fmap_max"], seed=seed + 1, blur=blur)
    return generator, discriminator


def generate(generator, z, resolution, noise_rng, psi=None, w_avg=None, batch=32):
    """Images (N, 1, R, R) as a float32 NumPy array clipped to [-1, 1], in batches, no graph."""
    device = generator.mapping.layers[0].weight.device
    out = []
    with nn.no_grad():
        for start in range(0, len(z), batch):
            zb = nn.Tensor(np.asarray(z[start:start + batch], dtype=np.float32)).to(device)
            noise = make_noise(len(zb), resolution, noise_rng, like=zb)
            image = generator(zb, resolution, noise=noise, w_avg=w_avg, psi=psi)
            out.append(np.clip(image.numpy(), -1.0, 1.0))
    return np.concatenate(out).astype(np.float32)


def sample(checkpoint, n, seed, device, truncation=None):
    """n images from a StyleGAN checkpoint's averaged generator at the resolution it reached.

    truncation: psi of the truncation trick (None or 1 = off, 0 = the average image)."""
    generator, _ = build(checkpoint["config"])
    generator.load_state_dict(checkpoint["generator_ema"])
    generator.to(device)
    resolution = int(checkpoint["resolution"])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, generator.z_dim)).astype(np.float32)
    w_avg = generator.mean_w(seed=seed) if truncation is not None else None
    return generate(generator, z, resolution, rng, psi=truncation, w_avg=w_avg)
