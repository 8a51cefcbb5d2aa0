"""Checkpoints: atomic .npz files (nn.save, no pickle) holding a nested dict.

    {"format": "braingen-checkpoint", "model": "dcgan", "config": {...flags...}, "step": int,
     "epoch": int, "history": {"step": [...], "loss_d": [...], ...}, "elapsed": seconds,
     ...one entry per stateful object: "generator": G.state_dict(), "rng_noise": "<JSON>", ...}

"config" is stored as JSON text and decoded by load_checkpoint. A training script keeps its
stateful objects (models, optimizers, random generators) in ONE dict; `state_of` and `load_state`
turn each of them into what the checkpoint stores and back, so saving and resuming read that
same dict (see Run.save and Run.restore).

Older runs. Every checkpoint written today says "version": VERSION. load_checkpoint passes every
checkpoint through `upgrade`, which holds every rule that keeps a run saved by older code loading
and resuming as it ran: nothing else in the project needs to know that older runs exist.
"""
import json
import os
import re

import numpy as np

import nn

from .errors import CheckpointError, NonFiniteLoss

FORMAT = "braingen-checkpoint"
CHECKPOINT = "checkpoint.npz"
VERSION = 2          # 1: every checkpoint written before 2026-12-04 (they carry no "version")
METRICS = "metrics.jsonl"


# ---- one stateful object <-> what the checkpoint stores ---------------------------------------------

def rng_state(generator):
    """A NumPy Generator's complete state as JSON text."""
    return json.dumps(generator.bit_generator.state)


def set_rng_state(generator, saved):
    """Restore `rng_state` text into `generator`."""
    generator.bit_generator.state = json.loads(saved)


def state_of(thing):
    """A model's or optimizer's state_dict(), or a NumPy Generator's state as JSON text."""
    if isinstance(thing, np.random.Generator):
        return rng_state(thing)
    return thing.state_dict()


def load_state(thing, saved):
    """The inverse of state_of: put `saved` back into `thing`, in place."""
    if isinstance(thing, np.random.Generator):
        set_rng_state(thing, saved)
    else:
        thing.load_state_dict(saved)


# ---- files --------------------------------------------------------------------------------------

def _to_host(value):
    """Nested dicts with Tensors / CuPy arrays -> the same with NumPy arrays (what nn.save stores)."""
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, nn.Tensor):
        return value.numpy()
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return nn.backend.to_numpy(value)
    return value


def _first_non_finite(value, prefix=""):
    """The path ("generator.conv.weight") of the first float array holding nan or inf, or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _first_non_finite(v, f"{prefix}{k}.")
            if found:
                return found
    elif isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
        return prefix.rstrip(".")
    return None


def save_checkpoint(path, state):
    """Write `state` (a nested dict) to `path` atomically: a temporary file, then a rename.

    A crash or a full disk in the middle leaves the previous checkpoint as it was.
    Refuses to save non-finite (nan/inf) weights, so the last checkpoint is always a good one.
    """
    state = _to_host(state)
    if isinstance(state.get("config"), dict):
        state["config"] = json.dumps(state["config"])
    bad = _first_non_finite(state)
    if bad:
        raise NonFiniteLoss(f"not saving a checkpoint: {bad} holds nan or inf values")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    nn.save(state, path)   # nn.save writes a temporary file in the same folder, then renames it


def load_checkpoint(path, model=None):
    """Read a checkpoint; `model` ("dcgan", ...) checks it is one of that model's.

    Missing, unreadable or foreign files raise CheckpointError with a message that says which.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it "
                              f"(e.g. {os.path.join(path, CHECKPOINT)})")
    try:
        state = nn.load(path)
    except nn.CheckpointError as error:   # damaged, truncated, or not an .npz at all
        raise CheckpointError(f"cannot read the checkpoint: {error}") from None
    except Exception as error:  # anything else a damaged file can cause
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged or not a "
                              f"checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a braingen checkpoint (no '{FORMAT}' marker)")
    found = str(state.get("model"))
    if model is not None and found != model:
        raise CheckpointError(f"{path} holds a {found} checkpoint, but a {model} checkpoint is needed")
    try:
        state["config"] = json.loads(str(state["config"]))
        state["step"], state["epoch"] = int(state["step"]), int(state["epoch"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is incomplete ({error})") from None
    return upgrade(state, os.path.join(os.path.dirname(path), METRICS))


# ---- older runs ---------------------------------------------------------------------------------

STYLEGAN_OLD_NAMES = [   # (key prefix in version 1, today's): StyleGAN before its ModuleDicts
    (re.compile(r"^mapping\.dense(\d+)\."), r"mapping.layers.\1."),
    (re.compile(r"^synthesis\.block(\d+)\."), r"synthesis.blocks.\1."),
    (re.compile(r"^synthesis\.to_image(\d+)\."), r"synthesis.blocks.\1.to_image."),
    (re.compile(r"^block(\d+)\."), r"blocks.\1."),
    (re.compile(r"^from_image(\d+)\."), r"blocks.\1.from_image."),
]


# Settings that later code added, with the value that reproduces what a run saved before them did
# (a run continued with --resume keeps its saved settings; one missing would take today's default).
SETTINGS_ADDED_LATER = {
    "stylegan": {"blur": False, "diffaugment": "", "gamma_scaling": "none", "critic": "stylegan",
                 "d_fmap_base": None, "d_fmap_max": None, "lr_d": None, "synthesis": "replace",
                 "critic_mbstd": 0, "g_widths": "", "g_output": "linear"},
    "vqvae": {"augment": True},
}
PRIOR_SETTINGS_ADDED_LATER = {"prior_levels": 0, "prior_dropout": 0.0}   # + prior_batch_size


def upgrade(checkpoint, metrics_path=None):
    """A checkpoint of any version as today's code reads it (VERSION), changed in place and
    returned. Every rule that keeps a run saved by older code loading and resuming as it ran:

    settings     each setting of SETTINGS_ADDED_LATER that the run does not have gets the value
                 that reproduces the older code (e.g. StyleGAN without "blur": no blur; a VQ-VAE
                 without "augment": stage 1 augmented); a VQ-VAE prior trained before
                 "prior_levels", "prior_dropout" and "prior_batch_size" was unconditional,
                 without dropout, at --batch-size
    version 1    "elapsed" 0, "epoch_end_step" its step, "log_lines" the lines of metrics.jsonl
                 up to its step (when that file is at metrics_path), random generators' states
                 as JSON text (they were dicts); DCGAN without an averaged generator: it starts
                 as a copy of G; StyleGAN's parameter names from before the per-resolution
                 containers ("synthesis.block8." -> "synthesis.blocks.8.", "from_image8." ->
                 "blocks.8.from_image.", ...; the order is unchanged, so Adam's states fit)
    """
    config, model = checkpoint["config"], checkpoint.get("model")
    for name, value in SETTINGS_ADDED_LATER.get(model, {}).items():
        config.setdefault(name, value)
    if model == "vqvae" and "prior" in checkpoint:
        for name, value in PRIOR_SETTINGS_ADDED_LATER.items():
            config.setdefault(name, value)
        config.setdefault("prior_batch_size", config.get("batch_size"))
    if int(checkpoint.get("version", 1)) >= VERSION:
        return checkpoint
    checkpoint.setdefault("elapsed", 0.0)
    checkpoint.setdefault("epoch_end_step", checkpoint["step"])
    if "log_lines" not in checkpoint and metrics_path and os.path.exists(metrics_path):
        checkpoint["log_lines"] = _lines_up_to_step(metrics_path, checkpoint["step"])
    for key, value in checkpoint.items():
        if key.startswith("rng") and isinstance(value, dict):
            checkpoint[key] = json.dumps(value)
    if model == "dcgan" and "generator" in checkpoint:
        checkpoint.setdefault("generator_ema", checkpoint["generator"])
    if model == "stylegan":
        for key in ("generator", "generator_ema", "discriminator"):
            if key in checkpoint:
                checkpoint[key] = {_current_name(name): value
                                   for name, value in checkpoint[key].items()}
    checkpoint["version"] = VERSION
    return checkpoint


def _current_name(name):
    for old, new in STYLEGAN_OLD_NAMES:
        name = old.sub(new, name)
    return name


def _lines_up_to_step(metrics_path, step):
    """How many leading lines of a metrics log hold records of steps up to `step` (a record
    without a step counts; reading stops at the first later one or at a half-written line)."""
    count = 0
    with open(metrics_path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                break
            if record.get("step", 0) > step:
                break
            count += 1
    return count
