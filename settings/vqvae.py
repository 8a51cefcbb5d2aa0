"""The VQ-VAE's settings (and its PixelCNN prior's): the flags (each declared once, with the rule
its value must follow), the rules that tie them together, the networks they build, the memory a
training step needs, and samples drawn from a saved run (generate.py's sampler). The
architectures are models/vqvae.py and models/pixelcnn.py; the training is train_vqvae.py.
"""
import argparse

import numpy as np

import data
import experiment
import nn
from experiment.memory import parameters_of, step_bytes
from models import vqvae
from models.pixelcnn import GatedPixelCNN

from .rules import SettingsError, above, at_least, between, number_at_least

STAGES = ("vqvae", "prior", "sample", "all")
PRIOR_FLAGS = ("stage", "prior_epochs", "prior_channels", "prior_layers", "prior_lr",
               "prior_batch_size", "prior_levels", "prior_dropout", "augment_copies", "samples",
               "temperature")   # may change when a run continues
TEMPERATURE = 0.8   # sampling default: nearest-neighbour SSIM 0.611 at 1.0, 0.635 at 0.8, pairwise
                    # SSIM 0.322 -> 0.333 (real slices 0.343); lower copies the training set more
GRAPH_FACTOR, PRIOR_GRAPH_FACTOR = 3.5, 7.5   # see memory_estimate; benchmarks/bench_memory.py:
# at the defaults (batch 8, prior batch 16, K = 128, dropout 0.1: one mask per gated layer) the
# prior's step peaks, 408 MiB measured, estimated 472 (6.5 gave 410, too close)


def flags(description):
    p = experiment.parser(description, out="runs/vqvae", image_size=64, batch_size=8, epochs=15,
                          steps_per_epoch=400)
    p.tighten("image_size", at_least(16))       # SSIM's 11x11 window; see check too
    p.add_argument("--stage", choices=STAGES, default="all", help="default: %(default)s")
    g = p.add_argument_group("VQ-VAE (stage 1)")
    g.add_argument("--channels", type=int, default=32, rule=at_least(2),   # inner layers: half
                   help="encoder/decoder width (default: %(default)s)")
    g.add_argument("--res-channels", type=int, default=32, rule=at_least(1),
                   help="residual block width (default: %(default)s)")
    g.add_argument("--res-blocks", type=int, default=2, rule=at_least(0),
                   help="default: %(default)s")
    g.add_argument("--downsamples", type=int, default=2, rule=at_least(1),
                   help="stride-2 layers: code map side = image size / 2^downsamples "
                        "(default: %(default)s)")
    g.add_argument("--codes", type=int, default=128, rule=at_least(2),
                   help="codebook size K; 256 reconstructs a little better (held-out SSIM 0.921 "
                        "against 0.913) but its maps are harder for the prior (2.49 against 2.20 "
                        "bits per code) (default: %(default)s)")
    g.add_argument("--code-dim", type=int, default=32, rule=at_least(1),
                   help="code vector size D (default: %(default)s)")
    g.add_argument("--beta", type=float, default=0.25, rule=number_at_least(0),
                   help="commitment weight (default: %(default)s)")
    g.add_argument("--no-ema", dest="ema", action="store_false",
                   help="learn the codebook by its loss instead of moving averages")
    g.add_argument("--lr", type=float, default=1e-3, rule=above(0),
                   help="Adam learning rate at the start; it decays along a cosine to 5%% of it "
                        "(default: %(default)s)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="augment the VQ-VAE's training batches (flip, small affine, elastic); "
                        "held-out SSIM 0.902 with, 0.919 without (default: --no-augment)")
    g = p.add_argument_group("PixelCNN prior (stage 2)")
    g.add_argument("--prior-epochs", type=int, default=12, rule=at_least(1),
                   help="default: %(default)s")
    g.add_argument("--prior-channels", type=int, default=32, rule=at_least(1),
                   help="default: %(default)s")
    g.add_argument("--prior-layers", type=int, default=10, rule=at_least(1),
                   help="gated layers (default: %(default)s)")
    g.add_argument("--prior-lr", type=float, default=1e-3, rule=above(0),
                   help="default: %(default)s")
    g.add_argument("--prior-batch-size", type=int, default=16, rule=at_least(1),
                   help="code maps per prior step; a prior epoch sees as many maps as a VQ-VAE "
                        "epoch sees slices, so it has --steps-per-epoch x --batch-size / "
                        "--prior-batch-size steps (default: %(default)s)")
    g.add_argument("--prior-levels", type=int, default=8, rule=at_least(0),
                   help="condition the prior on the slice's level, its height cut into this many "
                        "equal bins (bundled set: z in mm; OASIS: the slice index); "
                        "0 = unconditional (default: %(default)s)")
    g.add_argument("--prior-dropout", type=float, default=0.1,
                   rule=between(0, 1, high_included=False),
                   help="dropout probability of the gated features while the prior trains; "
                        "0.1 lowered the held-out bits per code from 2.53 to 2.49 at K = 256, "
                        "0.25 raised them to 2.57 (default: %(default)s)")
    g.add_argument("--augment-copies", type=int, default=8, rule=at_least(0),
                   help="augmented copies of each training slice to encode for the prior "
                        "(default: %(default)s)")
    g = p.add_argument_group("sampling (stage 3)")
    g.add_argument("--samples", type=int, default=64, rule=at_least(2),   # pairwise SSIM: 2
                   help="default: %(default)s")
    g.add_argument("--temperature", type=float, default=TEMPERATURE, rule=above(0),
                   help="divides the prior's logits (below 1: likelier codes) (default: %(default)s)")
    return p


def check(config, images=None):
    """The rules that tie settings together: each stride-2 layer halves the image exactly and the
    code map is at least 2x2; the batch fits in the training slices (every fifth is held out),
    when the number of `images` is known; with --prior-levels, every slice has a known position
    (its file name says it; nothing is opened)."""
    size, downsamples = config.image_size, config.downsamples
    if size % 2 ** downsamples:
        raise SettingsError("image_size", size, f"with --downsamples {downsamples} use a multiple "
                            f"of {2 ** downsamples} (e.g. 64)")
    if size // 2 ** downsamples < 2:
        raise SettingsError("downsamples", downsamples, f"{size}x{size} images allow at most "
                            f"{int(np.log2(size // 2))} (code maps of at least 2x2)")
    training = images - (images + 1) // 5 if images is not None else None
    if training is not None and config.batch_size > training:
        raise SettingsError("batch_size", config.batch_size, f"the VQ-VAE trains on {training} "
                            f"of the {images} images (every fifth is held out); use at most that "
                            "many")
    if config.prior_levels:
        try:
            data.check_positions_known(config.data, config.split, config.classes)
        except data.DataError as error:
            raise SettingsError("prior_levels", config.prior_levels, str(error)) from None


def code_side(config):
    """Side of the code map: image_size / 2^downsamples (64 with 2 downsamples: 16)."""
    return config.image_size // 2 ** config.downsamples


def build(config, dropout_generator=None):
    """(VQVAE, GatedPixelCNN prior over its code maps) for a run's settings; the prior's dropout
    masks come from `dropout_generator` (None: nn.init's shared one)."""
    model = vqvae.VQVAE(config.channels, config.res_channels, config.res_blocks,
                        config.downsamples, config.codes, config.code_dim, config.beta, config.ema)
    side = code_side(config)
    prior = GatedPixelCNN(config.codes, config.prior_channels, config.prior_layers,
                          map_size=(side, side), levels=config.prior_levels,
                          dropout=config.prior_dropout, generator=dropout_generator)
    return model, prior


def memory_estimate(config):
    """Bytes the larger of the two training steps needs (experiment/memory.py: step_bytes), with
    the feature maps of one image: stage 1, the encoder's and decoder's layer outputs plus K
    values per code position (distances to every code, one-hot rows); stage 2, the prior's (11
    prior_channels per gated layer, the head, K logits per position), at --prior-batch-size.
    The parameters of both networks, counted on them, count in both."""
    size, d, width = config.image_size, config.downsamples, config.channels
    side, codes, p = code_side(config), config.codes, config.prior_channels
    strided = sum((width if i == d else width // 2) * (size // 2 ** i) ** 2
                  for i in range(1, d + 1))
    middle = (2 * width + config.res_blocks * (width + config.res_channels)
              + config.code_dim) * side ** 2
    vqvae_maps = 2 * (strided + middle) + 3 * codes * side ** 2
    prior_maps = (11 * p * config.prior_layers + 2 * p + 3 * codes) * side ** 2
    parameters = parameters_of(build, config)
    return max(step_bytes(config.batch_size, vqvae_maps, parameters, GRAPH_FACTOR),
               step_bytes(config.prior_batch_size, prior_maps, parameters, PRIOR_GRAPH_FACTOR))


def level_labels(config, n, level):
    """n labels of slice level `level` (None: let the prior cover its levels evenly); a level the
    prior does not have raises SettingsError."""
    if level is None:
        return None
    if config.prior_levels == 0:
        raise SettingsError("level", level, "this run's prior has no slice levels (trained with "
                            "--prior-levels 0); drop --level")
    if not (isinstance(level, int) and 0 <= level < config.prior_levels):
        raise SettingsError("level", level, f"use a whole number from 0 (lowest slices) to "
                            f"{config.prior_levels - 1} (highest): the prior knows "
                            f"{config.prior_levels} levels")
    return np.full(n, level, dtype=np.int64)


def sample(checkpoint, n, seed, device="cpu", temperature=TEMPERATURE, level=None):
    """generate.py's sampler: n new images (float32 NumPy (n, 1, S, S) in [-1, 1]) from a VQ-VAE
    checkpoint whose prior has been trained; with `level`, all of that slice level."""
    config = argparse.Namespace(**checkpoint["config"])
    if "prior" not in checkpoint or int(checkpoint.get("prior_steps", 1)) == 0:
        raise nn.CheckpointError("this VQ-VAE checkpoint has no trained prior yet; train it with "
                                 f"`python train_vqvae.py --stage prior --out {config.out}`")
    labels = level_labels(config, n, level)
    model, prior = build(config)
    model.load_state_dict(checkpoint["vqvae"])
    prior.load_state_dict(checkpoint["prior"])
    model.to(device).eval()
    prior.to(device).eval()
    return vqvae.generate(model, prior, n, code_side(config), seed, temperature, labels)[0]
