"""StyleGAN's settings: its flags (each declared once, with the rule its value must follow), the
rules that tie them together, the progressive schedule they describe, the networks they build,
the memory a training step needs, and samples drawn from a saved run (generate.py's sampler).
The architecture is models/stylegan*.py; the training is train_stylegan.py.
"""
import argparse

import numpy as np

import experiment
import nn
from experiment.memory import parameters_of, step_bytes
from models import diffaugment, stylegan
from models.stylegan_losses import GAMMA_SCALINGS, LOSSES

from .rules import (SettingsError, above, at_least, between, existing_file, number_at_least,
                    one_of, optional, power_of_two, whole_numbers)

REPORT_RESOLUTION = 16   # the final scores need images of at least 11x11 (SSIM's window)
GRAPH_FACTOR = 18        # see memory_estimate; benchmarks/bench_memory.py: at the defaults
# (WGAN-GP) 498 MiB measured, estimated 548 (16 gave 488, too few)


def flags(description):
    p = experiment.parser(description, out="runs/stylegan", image_size=64, batch_size=16,
                          epochs=55, steps_per_epoch=100)
    p.tighten("image_size", power_of_two(REPORT_RESOLUTION))
    g = p.add_argument_group("StyleGAN")
    g.add_argument("--z-dim", type=int, default=64, rule=at_least(1),
                   help="latent size (default: %(default)s)")
    g.add_argument("--w-dim", type=int, default=64, rule=at_least(1),
                   help="style size (default: %(default)s)")
    g.add_argument("--mapping-layers", type=int, default=8, rule=at_least(1),
                   help="default: %(default)s")
    g.add_argument("--fmap-base", type=int, default=512, rule=at_least(1),
                   help="channels at resolution R: min(fmap-max, fmap-base / R) (default: %(default)s)")
    g.add_argument("--fmap-max", type=int, default=64, rule=at_least(1), help="default: %(default)s")
    g.add_argument("--g-widths", default="", metavar="R=C,...", rule=width_list,
                   help="G's channels at some resolutions instead of the --fmap-base rule, e.g. "
                        "64=16 or 16=64,32=32 (default: none)")
    g.add_argument("--g-output", choices=("linear", "tanh"), default="tanh",
                   help="tanh: G's image bounded by a tanh, as DCGAN's is (the -1 background of "
                        "the slices is then easy to hold; needs --synthesis skip); linear: as the "
                        "synthesis network draws it (the papers) (default: %(default)s)")
    g.add_argument("--d-fmap-base", type=int, default=None, rule=optional(at_least(1)),
                   help="D's own --fmap-base (default: G's)")
    g.add_argument("--d-fmap-max", type=int, default=None, rule=optional(at_least(1)),
                   help="D's own --fmap-max (default: G's)")
    g.add_argument("--critic", choices=stylegan.CRITICS, default="stylegan",
                   help="D: StyleGAN's own (grown with G); DCGAN's (strided 4x4 convolutions, "
                        "batch norm, dropout; always at the final size, lower phases scaled up "
                        "to it; needs --loss ns); or strided, DCGAN's without its batch norm "
                        "(any --loss) (default: %(default)s)")
    g.add_argument("--ndf", type=int, default=32, rule=at_least(1),
                   help="--critic dcgan or strided: its width (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=0.4, rule=between(0, 1, high_included=False),
                   help="--critic dcgan or strided: dropout after its hidden layers "
                        "(default: %(default)s)")
    g.add_argument("--critic-mbstd", type=int, default=0, rule=at_least(0),
                   help="--critic dcgan or strided: minibatch standard deviation over groups of "
                        "this many images before its last layer, 0 = none (default: %(default)s)")
    g.add_argument("--phase-images", default="16000,16000,12000", rule=phase_list,
                   help="images at each resolution before the final one, from 8x8 up: one number "
                        "for all or a comma list (default: %(default)s)")
    g.add_argument("--fade-images", type=int, default=4000, rule=at_least(0),
                   help="images over which each new resolution fades in (default: %(default)s)")
    g.add_argument("--synthesis", choices=("replace", "skip"), default="skip",
                   help="skip: the sum of every resolution's image, upsampled, each new one "
                        "starting at zero (StyleGAN2's skip generator), so a new resolution adds "
                        "detail instead of replacing the image; replace: G's image is its last "
                        "resolution's (Karras et al. 2018), whose fade-ins halved the scores on "
                        "the bundled slices (docs/stylegan.md) (default: %(default)s)")
    g.add_argument("--no-blur", dest="blur", action="store_false",
                   help="leave out the [1,2,1] low-pass filter after G's upsampling convs and "
                        "before D's downsampling ones (the official code has it)")
    g.add_argument("--loss", choices=LOSSES, default="wgan-gp",
                   help="WGAN-GP + drift, or non-saturating + R1 (ns-r1, the paper's), or "
                        "non-saturating alone (ns, with --critic dcgan); on the bundled slices "
                        "WGAN-GP's samples scored 0.470 against ns-r1's 0.419 "
                        "(default: %(default)s)")
    g.add_argument("--gamma", type=float, default=10.0, rule=number_at_least(0),
                   help="R1 weight, with --loss ns-r1 (default: %(default)s)")
    g.add_argument("--gamma-scaling", choices=GAMMA_SCALINGS, default="none",
                   help="resolution: R1's gamma at each phase times (res / image-size)^2, "
                        "StyleGAN2-ADA's gamma ~ res^2; with --loss ns-r1 (default: %(default)s)")
    g.add_argument("--diffaugment", default="", metavar="POLICY", rule=diffaugment.policy_rule,
                   help="DiffAugment (Zhao et al. 2020): augment real and generated images before "
                        "D, a comma list of " + ",".join(diffaugment.POLICIES) +
                        " (default: none)")
    g.add_argument("--gp-weight", type=float, default=10.0, rule=number_at_least(0),
                   help="WGAN-GP lambda (default: %(default)s)")
    g.add_argument("--drift", type=float, default=0.001, rule=number_at_least(0),
                   help="WGAN drift weight (default: %(default)s)")
    g.add_argument("--reg-every", type=int, default=4, rule=at_least(1),
                   help="lazy regularisation: penalty every k steps, times k (default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3, rule=above(0),
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--lr-d", type=float, default=None, rule=optional(above(0)),
                   help="D's learning rate if different from --lr (default: --lr)")
    g.add_argument("--style-mixing", type=float, default=0.9, rule=between(0, 1),
                   help="probability of mixing two latents in a batch (default: %(default)s)")
    g.add_argument("--ema-half-life", type=float, default=1000.0, rule=above(0),
                   help="images over which the averaged generator forgets half (default: %(default)s)")
    g.add_argument("--curve-every", type=int, default=1, rule=at_least(0),
                   help="score the averaged generator's samples every N epochs and at the end of "
                        "every phase (learning_curve.png, 'curve' records); 0 = never "
                        "(default: %(default)s)")
    g.add_argument("--samples", type=int, default=64, rule=at_least(2),   # pairwise SSIM: 2
                   help="images in the grids and the final report (default: %(default)s)")
    g.add_argument("--metrics-real", type=int, default=2000, rule=at_least(1),
                   help="compare samples with at most this many training images (default: %(default)s)")
    g.add_argument("--compare-with", default=None, metavar="CHECKPOINT",
                   rule=optional(existing_file("give the checkpoint.npz of another StyleGAN run")),
                   help="another StyleGAN run (e.g. the NC one when this is AD) to add to the "
                        "embedding plot, with its real images")
    return p


def phase_list(text):
    """The rule for --phase-images: whole numbers of images (at least 1) separated by commas."""
    if whole_numbers(text, minimum=1) is None:
        return "use whole numbers of images (at least 1) separated by commas, e.g. 16000,16000,12000"


def width_list(text):
    """The rule for --g-widths: empty, or resolution=channels pairs separated by commas."""
    if text and widths_of(text) is None:
        return "use resolution=channels pairs separated by commas, e.g. 64=16 or 16=64,32=32"


def widths_of(text):
    """--g-widths as {resolution: channels} ({} when empty), or None when it cannot be read."""
    widths = {}
    for pair in filter(None, text.split(",")):
        parts = pair.split("=")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            return None
        widths[int(parts[0])] = int(parts[1])
    return widths


def phase_images(config):
    """--phase-images as one image count per resolution before the final one (one number is used
    for all). Raises SettingsError when the list has the wrong length."""
    resolutions = stylegan.resolutions_up_to(config.image_size, stylegan.START_RESOLUTION)[:-1]
    counts = whole_numbers(config.phase_images, minimum=1)
    if len(counts) == 1:
        counts = counts * len(resolutions)
    if len(counts) < len(resolutions):
        raise SettingsError("phase_images", config.phase_images, f"--image-size "
                            f"{config.image_size} needs {len(resolutions)} values (resolutions "
                            f"{resolutions}) or one for all")
    return counts


def check(config, images=None):
    """The rules that tie settings together (each flag's own rule is checked before this):
    gamma scaling acts on R1 only, the DCGAN critic's batch norm allows no gradient penalty, the
    batch size is a multiple of the minibatch-stddev group, the phase list fits the image size,
    and, when the steps per epoch are known (given, or from the number of `images`), the run
    does not end below 16x16, where the final scores cannot be measured."""
    if config.gamma_scaling != "none" and config.loss != "ns-r1":
        raise SettingsError("gamma_scaling", config.gamma_scaling, "it scales R1's gamma, and only "
                            "--loss ns-r1 has R1: add --loss ns-r1")
    if config.critic == "dcgan" and config.loss != "ns":
        raise SettingsError("loss", config.loss, "--critic dcgan has batch norm, which couples the "
                            "images of a batch and so breaks a per-image gradient penalty: use "
                            "--loss ns")
    resolutions = stylegan.resolutions_up_to(config.image_size)
    for r in widths_of(config.g_widths):
        if r not in resolutions:
            raise SettingsError("g_widths", config.g_widths, f"{r} is not one of G's resolutions "
                                f"at --image-size {config.image_size}: use one of {resolutions}")
    if config.g_output == "tanh" and config.synthesis != "skip":
        raise SettingsError("g_output", config.g_output, "a tanh after the replace generator's "
                            "fade-in blend is a reported failure: add --synthesis skip")
    if config.batch_size % stylegan.MBSTD_GROUP:
        raise SettingsError("batch_size", config.batch_size, f"use a multiple of "
                            f"{stylegan.MBSTD_GROUP} (minibatch standard deviation groups)")
    counts = phase_images(config)
    steps_per_epoch = config.steps_per_epoch or (images // config.batch_size if images else 0)
    if steps_per_epoch:
        schedule = Schedule(config.image_size, counts, config.fade_images, config.batch_size)
        total = config.epochs * steps_per_epoch
        reached, _ = schedule.at(total - 1)
        if reached < REPORT_RESOLUTION:
            needed = -(-(schedule.starts[1] + 1) // steps_per_epoch)
            raise SettingsError("epochs", config.epochs, f"training would end at step {total}, "
                                f"still at {reached}x{reached}; the final scores need "
                                f"{REPORT_RESOLUTION}x{REPORT_RESOLUTION}: use at least "
                                f"{needed}, or a shorter first --phase-images")


class Schedule:
    """Progressive growing (Karras et al. 2018, section 3) as a function of the training step.

    Phase 0 trains resolution 8 for phase_images[0] images; phase k trains 8 * 2^k, fading it in
    over fade_images images (alpha from 0 to 1) and then for the rest of phase_images[k]; the
    last phase, at image_size, runs to the end. Counts of images become steps of `batch_size`."""

    def __init__(self, image_size, phase_images, fade_images, batch_size):
        self.resolutions = stylegan.resolutions_up_to(image_size, stylegan.START_RESOLUTION)
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


def build(config, seed=0):
    """(generator, discriminator) for a run's settings."""
    generator = stylegan.Generator(config.image_size, config.z_dim, config.w_dim,
                                   config.mapping_layers, config.fmap_base, config.fmap_max,
                                   seed=seed, blur=config.blur, skip=config.synthesis == "skip",
                                   widths=widths_of(config.g_widths), tanh=config.g_output == "tanh")
    if config.critic in ("dcgan", "strided"):
        nn.manual_seed(seed + 1)                  # DCGAN's initialisation draws from nn.init
        return generator, stylegan.StridedCritic(config.image_size, config.ndf, config.dropout,
                                                 config.critic_mbstd, config.critic == "dcgan")
    discriminator = stylegan.Discriminator(config.image_size, config.d_fmap_base or config.fmap_base,
                                           config.d_fmap_max or config.fmap_max, seed=seed + 1,
                                           blur=config.blur)
    return generator, discriminator


def memory_estimate(config):
    """Bytes a training step at the final resolution S needs (experiment/memory.py: step_bytes),
    with the feature maps of one image: G's two style layers per resolution r (2 w_r r^2) and
    the upsampled input (w_{r/2} r^2), D's convolutions (2 w_r + w_{r/2}) r^2. D runs on real and
    fake images, twice more for the penalty's double backward (R1 or WGAN-GP), and in G's step.
    The parameters are counted on the built networks."""
    widths = {**stylegan.channel_widths(config.image_size, config.fmap_base, config.fmap_max),
              **widths_of(config.g_widths)}
    maps = 0
    for r, width in widths.items():
        previous = widths[max(4, r // 2)]
        maps += (2 * width + 1) * r * r + (previous * r * r if r > 4 else 0)       # G
        maps += (2 * width + previous) * r * r if r >= stylegan.START_RESOLUTION else 0   # D
    return step_bytes(config.batch_size, maps, parameters_of(build, config), GRAPH_FACTOR)


def sample(checkpoint, n, seed, device="cpu", truncation=None):
    """generate.py's sampler: n images from a StyleGAN checkpoint's averaged generator at the
    resolution it reached. truncation: psi of the truncation trick (None or 1 = off, 0 = the
    average image)."""
    generator, _ = build(argparse.Namespace(**checkpoint["config"]))
    generator.load_state_dict(checkpoint["generator_ema"])
    generator.to(device)
    resolution = int(checkpoint["resolution"])
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, generator.z_dim)).astype(np.float32)
    w_avg = generator.mean_w(seed=seed) if truncation is not None else None
    return stylegan.generate(generator, z, resolution, rng, psi=truncation, w_avg=w_avg)
