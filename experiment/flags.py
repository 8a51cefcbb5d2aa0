"""The flags every training script shares, the device, and `start`, which turns them into a Run.

A flag is declared once, with the rule its value must follow (settings/rules.py):

    g.add_argument("--ngf", type=int, default=32, rule=at_least(1), help="G width")

`Parser` keeps that rule on the flag's argparse action, and `check_rules` checks every flag's value
against it. `start` refuses every bad setting before anything is written: every flag's rule, the
model's rules that tie settings together (its `check`), --out, the data request (listed, not
decoded) and the memory a training step needs. Only then does it lock the output folder and make
the Run.
"""
import argparse
import os
import signal
import sys

import data
import nn
from settings.rules import SettingsError, at_least

from . import distributed
from .checkpoints import CHECKPOINT, load_checkpoint
from .errors import CheckpointError, ExperimentError
from .lock import check_free, lock_folder
from .memory import check_memory
from .run import METRICS, Run

ALWAYS_RESUMABLE = ("epochs", "device", "resume", "overwrite", "out", "strict",
                    "skip_memory_check", "profile", "sync_batchnorm")
THIS_COMMAND_ONLY = ("resume", "overwrite", "profile")   # never taken from the saved settings
RUN_FILES = (CHECKPOINT, METRICS, "config.json")   # a folder holding one of these is a run


class FlagWithRule(argparse._StoreAction):
    """argparse's plain "store" action, which also keeps the flag's rule (`rule=`, a function of
    the value that returns None when it works, or what would work: settings/rules.py)."""

    def __init__(self, *args, rule=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule = rule


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a `rule=` for every flag that stores a value (FlagWithRule),
    abbreviations refused, and its errors (an unknown flag, a value of the wrong type, a missing
    one) as one line and exit code 2, like every other flag error."""

    def __init__(self, description):
        super().__init__(description=description, allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.register("action", None, FlagWithRule)        # add_argument(...) with no action=
        self.register("action", "store", FlagWithRule)

    def error(self, message):
        if distributed.rank == 0:       # every process of a data-parallel run finds the same one
            print(f"error: {message}; see --help for every flag", file=sys.stderr)
        sys.exit(2)

    def rules(self):
        """{setting name: rule} of every flag that has one."""
        return {a.dest: a.rule for a in self._actions if getattr(a, "rule", None) is not None}

    def tighten(self, name, rule):
        """Give a shared flag the stricter rule one model needs (e.g. --image-size a power of
        two)."""
        next(a for a in self._actions if a.dest == name).rule = rule


def check_rules(p, config):
    """Raise SettingsError for the first setting of `config` that breaks its flag's rule; settings
    `config` does not hold are skipped."""
    values = vars(config)
    for name, rule in p.rules().items():
        if name in values:
            need = rule(values[name])
            if need:
                raise SettingsError(name, values[name], need)


def parser(description, **defaults):
    """The flags every training script shares; `defaults` overrides any of their defaults."""
    p = Parser(description)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu",
                   help="cpu = NumPy, gpu = CuPy, auto = gpu when usable (default: %(default)s)")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="OASIS / ADNI / image folder (default: the bundled MNI slices)")
    g.add_argument("--split", default="all", help="data split (default: %(default)s)")
    g.add_argument("--subset", "--classes", dest="classes", choices=("AD", "NC", "both"),
                   default=None, help="ADNI: train on one class only, AD or NC (default: both)")
    g.add_argument("--image-size", type=int, default=64, rule=at_least(1),
                   help="default: %(default)s")
    g.add_argument("--epochs", type=int, default=10, rule=at_least(1), help="default: %(default)s")
    g.add_argument("--steps-per-epoch", type=int, default=0, rule=at_least(0),
                   help="training steps per epoch; 0 = one pass over the data (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, rule=at_least(1),
                   help="default: %(default)s")
    g.add_argument("--seed", type=int, default=0, rule=at_least(0), help="default: %(default)s")
    g.add_argument("--out", default="runs/run", help="output folder (default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out already holds a run")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping it with a warning")
    g.add_argument("--skip-memory-check", action="store_true",
                   help="start even if the training step is estimated not to fit in memory")
    g.add_argument("--profile", type=int, default=0, metavar="N", rule=at_least(0),
                   help="time N training steps op by op (after one warm-up step), print the "
                        "table, save it as profile.txt in --out, and stop (default: off)")
    g.add_argument("--sync-batchnorm", action="store_true",
                   help="under mpiexec: batch norm uses the statistics of the global batch, summed "
                        "over the processes, so N processes compute what one does (default: each "
                        "process's own share, as PyTorch's DistributedDataParallel)")
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


def start(p, model, argv=None, resumable_flags=(), check=None, memory=None, continues=None):
    """Parse the flags, check them all, pick the device, lock and prepare the output folder;
    return the Run.

    check(config, images): the model's rules that tie settings together (raises SettingsError);
    memory(config): the model's memory_estimate in bytes; continues(config): True for settings
    that continue the run in --out as --resume does (train_vqvae.py's --stage prior). Every refusal happens before anything
    is written, as an ExperimentError with exit code 2 (1 when another process holds --out).
    With --resume it loads <out>/checkpoint.npz, checks it is a `model` checkpoint and continues
    with the settings saved in it: only --epochs, --device (and `resumable_flags`) may change.
    Without --resume an existing run in --out is an error unless --overwrite is given.
    Under mpiexec (experiment/distributed.py) every process does all this and they agree on any
    refusal (rank 0 says it, and --batch-size must divide by the number of processes); only rank
    0 locks --out, and with --device gpu each process takes its machine's GPU of its local rank.
    """
    distributed.connect()                # under mpiexec: join the other processes (else nothing)
    argv = sys.argv[1:] if argv is None else list(argv)
    config = p.parse_args(argv)
    if continues is not None and continues(config):
        config.resume = True
    writer = distributed.rank == 0       # only rank 0 locks and writes --out (distributed.py)
    with distributed.agreeing():         # every process checks; a refusal is said once
        _check_flags(p, config)
        _check_out(config)
        if writer:
            check_free(config.out)       # another run there: say so before anything else
        checkpoint = None
        path = os.path.join(config.out, CHECKPOINT)
        if config.resume:
            if not os.path.exists(path):
                raise CheckpointError(f"--resume: there is no checkpoint at {path}; give the --out "
                                      "of the run to continue, or start without --resume")
            if writer:
                lock_folder(config.out)  # before reading: the holder may be about to save
            checkpoint = load_checkpoint(path, model)
            config = _merge_resumed(config, checkpoint, _explicit_flags(p, argv),
                                    set(ALWAYS_RESUMABLE) | set(resumable_flags), path)
            _check_flags(p, config)
        elif os.path.exists(path) and not config.overwrite:
            raise ExperimentError(f"{config.out} already holds a run ({path}); continue it with "
                                  "--resume, choose another --out, or pass --overwrite to start "
                                  "afresh")
        images = _count_images(config)
        try:
            if check is not None:
                check(config, images)
            if images is not None and config.batch_size > images:
                raise SettingsError("batch_size", config.batch_size, f"the data holds {images} "
                                    "images; use at most that many")
        except SettingsError as error:
            raise ExperimentError(_with_default(p, error), code=2) from None
        device = choose_device(config.device)
        if device == "gpu" and distributed.size > 1:
            distributed.use_local_gpu()  # this process's GPU, before its memory is checked
        if memory is not None and not config.skip_memory_check:
            check_memory(_one_process(config), model, memory, device, images,
                         processes=1 if device == "gpu" else distributed.local_processes())
    if writer:
        lock_folder(config.out)
    if distributed.size > 1:
        print(distributed.describe(device, config.sync_batchnorm), flush=True)
    run = Run(config, model, device, checkpoint)
    signal.signal(signal.SIGINT, run._on_sigint)   # Ctrl-C: finish the step, save, stop
    return run


def _one_process(config):
    """The settings of one process's share: --batch-size (and --prior-batch-size) divided by the
    number of processes, which must divide them (distributed.check_batches)."""
    if distributed.size == 1:
        return config
    shares = {name: getattr(config, name) // distributed.size
              for name in ("batch_size", "prior_batch_size") if hasattr(config, name)}
    return argparse.Namespace(**{**vars(config), **shares})


def _with_default(p, error):
    """The SettingsError's line, with the flag's default when it has one."""
    default = p.get_default(error.name)
    if default is None:
        return str(error)
    shown = '""' if default == "" else default          # an empty default, visibly
    return f"{error}; the default is {shown}"


def _check_out(config):
    """--out must be a folder this run may write: not a file, not inside the data folder, not a
    folder of other files (a run folder, an empty one, or a new one inside a writable folder)."""
    out = config.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExperimentError(f"--out {out} is a file; give a folder for the run's outputs", code=2)
    if config.data and os.path.isdir(config.data):
        data_root, out_real = os.path.realpath(config.data), os.path.realpath(out)
        if os.path.commonpath([data_root, out_real]) == data_root:
            raise ExperimentError(f"--out {out} is inside the data folder {config.data}; nothing "
                                  "is ever written there, choose a folder outside it", code=2)
    if os.path.isdir(out):
        visible = [name for name in os.listdir(out) if not name.startswith(".")]
        if visible and not any(name in visible for name in RUN_FILES):
            shown = ", ".join(sorted(visible)[:3]) + (", ..." if len(visible) > 3 else "")
            raise ExperimentError(f"--out {out} holds other files ({shown}) and no run; choose a "
                                  "new or empty folder", code=2)
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ExperimentError(f"--out {out}: cannot write in {existing}; choose a folder you can "
                              "write to", code=2)


def _count_images(config):
    """How many images the data request selects (files listed, nothing decoded); a request the
    data layer refuses (no such folder, an unknown split, a class filter without ADNI) is a flag
    error."""
    try:
        return data.count_images(config.data, config.split, config.classes)
    except data.DataError as error:
        typed = [f"--data {config.data}" if config.data else "", f"--split {config.split}",
                 f"--subset {config.classes}" if config.classes else ""]
        raise ExperimentError(f"{' '.join(t for t in typed if t)}: {error}", code=2) from None


def _explicit_flags(p, argv):
    """The settings the user typed on the command line (the parser allows no abbreviations)."""
    typed = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    return {action.dest for action in p._actions if typed & set(action.option_strings)}


def _check_flags(p, config):
    """Every flag's rule, --resume against --overwrite, and a global batch that splits evenly
    over the processes of a data-parallel run."""
    try:
        check_rules(p, config)
        distributed.check_batches(config)
    except SettingsError as error:
        raise ExperimentError(_with_default(p, error), code=2) from None
    if getattr(config, "resume", False) and getattr(config, "overwrite", False):
        raise ExperimentError("--resume continues the run in --out and --overwrite starts it "
                              "afresh; give one of them", code=2)


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
        if key in explicit or key not in saved or key in THIS_COMMAND_ONLY:
            saved[key] = getattr(config, key)
    return argparse.Namespace(**{**vars(config), **saved})
