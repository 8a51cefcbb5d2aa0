"""The flags every training script shares, the device, and `start`, which turns them into a Run."""
import argparse
import os
import signal
import sys

import nn

from .checkpoints import CHECKPOINT, load_checkpoint
from .errors import CheckpointError, ExperimentError
from .run import Run

ALWAYS_RESUMABLE = ("epochs", "device", "resume", "overwrite", "out")


def parser(description, **defaults):
    """The flags every training script shares; `defaults` overrides any of their defaults."""
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu",
                   help="cpu = NumPy, gpu = CuPy, auto = gpu when usable (default: %(default)s)")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="OASIS / ADNI / image folder (default: the bundled MNI slices)")
    g.add_argument("--split", default="all", help="data split (default: %(default)s)")
    g.add_argument("--subset", "--classes", dest="classes", choices=("AD", "NC", "both"),
                   default=None, help="ADNI: train on one class only, AD or NC (default: both)")
    g.add_argument("--image-size", type=int, default=64, help="default: %(default)s")
    g.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    g.add_argument("--steps-per-epoch", type=int, default=0,
                   help="training steps per epoch; 0 = one pass over the data (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    g.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    g.add_argument("--out", default="runs/run", help="output folder (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out already holds a run")
    p.set_defaults(**defaults)
    return p


def choose_device(name):
    """"cpu", "gpu" or "auto" -> "cpu" | "gpu". An unusable GPU is an error with exit code 2."""
    if name == "cpu":
        return "cpu"
    reason = nn.backend.gpu_unavailable_reason()
    if name == "auto":
        return "cpu" if reason else "gpu"
    if reason:
        raise ExperimentError(f"--device gpu: {reason}", code=2)
    return "gpu"


def start(p, model, argv=None, resumable_flags=()):
    """Parse the flags, pick the device, prepare the output folder; return the Run.

    With --resume it loads <out>/checkpoint.npz, checks it is a `model` checkpoint and continues
    with the settings saved in it: only --epochs, --device (and `resumable_flags`) may change.
    Without --resume an existing run in --out is an error unless --overwrite is given.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    config = p.parse_args(argv)
    _check_flags(config)
    checkpoint = None
    path = os.path.join(config.out, CHECKPOINT)
    if config.resume:
        if not os.path.exists(path):
            raise CheckpointError(f"--resume: there is no checkpoint at {path}; give the --out of the "
                                  "run to continue, or start without --resume")
        checkpoint = load_checkpoint(path, model)
        config = _merge_resumed(config, checkpoint, _explicit_flags(p, argv),
                                set(ALWAYS_RESUMABLE) | set(resumable_flags), path)
    elif os.path.exists(path) and not config.overwrite:
        raise ExperimentError(f"{config.out} already holds a run ({path}); continue it with --resume, "
                              "choose another --out, or pass --overwrite to start afresh")
    device = choose_device(config.device)
    run = Run(config, model, device, checkpoint)
    signal.signal(signal.SIGINT, run._on_sigint)   # Ctrl-C: finish the step, save, stop
    return run


def _explicit_flags(p, argv):
    """The settings the user typed on the command line (the parser allows no abbreviations)."""
    typed = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    return {action.dest for action in p._actions if typed & set(action.option_strings)}


def _check_flags(config):
    for name in ("epochs", "batch_size", "image_size"):
        if getattr(config, name, 1) < 1:
            raise ExperimentError(f"--{name.replace('_', '-')} must be at least 1", code=2)
    if getattr(config, "steps_per_epoch", 0) < 0 or getattr(config, "seed", 0) < 0:
        raise ExperimentError("--steps-per-epoch and --seed must not be negative", code=2)


def _merge_resumed(config, checkpoint, explicit, resumable, path):
    """The saved settings, with the resumable flags the user typed; other differences are errors."""
    saved = dict(checkpoint["config"])
    clashes = [f"--{k.replace('_', '-')} {getattr(config, k)} (saved: {saved[k]})"
               for k in sorted(explicit) if k in saved and k not in resumable
               and getattr(config, k) != saved[k]]
    if clashes:
        raise ExperimentError(f"--resume continues the run in {path} with its saved settings, but "
                              f"these flags differ: {', '.join(clashes)}. Drop them, or start a new "
                              "run in another --out", code=2)
    for key in resumable:
        if key in explicit or key not in saved:
            saved[key] = getattr(config, key)
    merged = argparse.Namespace(**{**vars(config), **saved})
    _check_flags(merged)
    return merged
