"""Checkpoints: atomic .npz files (nn.save, no pickle) holding a nested dict.

    {"format": "braingen-checkpoint", "model": "dcgan", "config": {...flags...}, "step": int,
     "epoch": int, "history": {"step": [...], "loss_d": [...], ...}, "elapsed": seconds,
     ...one entry per stateful object: "generator": G.state_dict(), "rng_noise": "<JSON>", ...}

"config" is stored as JSON text and decoded by load_checkpoint. A training script keeps its
stateful objects (models, optimizers, random generators) in ONE dict; `state_of` and `load_state`
turn each of them into what the checkpoint stores and back, so saving and resuming read that
same dict (see Run.save and Run.restore).
"""
import json
import os

import numpy as np

import nn

from .errors import CheckpointError, NonFiniteLoss

FORMAT = "braingen-checkpoint"
CHECKPOINT = "checkpoint.npz"


# ---- one stateful object <-> what the checkpoint stores ---------------------------------------------

def rng_state(generator):
    """A NumPy Generator's complete state as JSON text."""
    return json.dumps(generator.bit_generator.state)


def set_rng_state(generator, saved):
    """Restore `rng_state` text (or the plain dict that older checkpoints hold) into `generator`."""
    generator.bit_generator.state = json.loads(saved) if isinstance(saved, str) else saved


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
    return state
