"""Run machinery shared by train_dcgan.py, train_vqvae.py, train_stylegan.py and generate.py.

Everything a training script needs besides the model and the training step: flags, the device,
the output folder, a progress bar, a metrics log, loss history, checkpoints, resume and Ctrl-C.
Pictures (sample grids, loss curves) are in images.py.

The API (stable: the three scripts rely on it)
----------------------------------------------
    parser = experiment.parser(description, epochs=15, out="runs/dcgan", ...)
        An argparse parser with the flags every script has (defaults overridable by keyword):
        --device cpu|gpu|auto  --data PATH  --split  --subset  --image-size  --epochs
        --steps-per-epoch  --batch-size  --seed  --out DIR  --resume  --overwrite
        Add the model's own flags with parser.add_argument(...).

    run = experiment.start(parser, model="dcgan", resumable_flags=())
        Parses the command line, picks the device, prepares the output folder. With --resume it
        loads <out>/checkpoint.npz, checks it is a `model` checkpoint and continues with the
        settings saved in it: only --epochs, --device (and `resumable_flags`) may change.
        run.config    the settings (argparse.Namespace): run.config.epochs, ...
        run.device    "cpu" or "gpu"
        run.checkpoint  the loaded checkpoint dict (None for a fresh run); its "step" says where
                        to continue, "history" is restored into run.history already
        run.path(*names)          a path inside the output folder (folders are created)
        run.log(event, **fields)  append one JSON line to <out>/metrics.jsonl
        run.record(step, **losses)  per training step: raises NonFiniteLoss on nan/inf, keeps the
                                  history, updates the progress bar
        run.begin_epoch(epoch, first_step, last_step, total_steps)  before an epoch's first step
        run.end_epoch(**extra)    prints the epoch line (averages of the recorded values),
                                  logs it, redraws <out>/losses.png; returns the averages
        run.stop_requested        True after Ctrl-C (SIGINT); the loop then saves and
                                  `raise run.interrupted(step)` (exit 130; see train_dcgan.py)
        run.save(state)           atomic <out>/checkpoint.npz; state needs "step" and "epoch";
                                  adds format, model, config, history, elapsed
        run.checkpoint_path       <out>/checkpoint.npz

    experiment.main(fn)     run the script body; user errors become one line on stderr and an exit
                            code (1, 2 for an unusable device or bad flags, 130 for Ctrl-C), no traceback
    experiment.load_images(config)   the training images (data.load_images, cache under <out>/cache)
    experiment.stream(loader, start, stop)  batches for global steps start..stop-1; step s is batch
                            s % len(loader) of data pass s // len(loader), so resuming is exact
    experiment.save_checkpoint(path, state) / load_checkpoint(path, model=None)
    experiment.rng_state(generator) / set_rng_state(generator, text)   NumPy Generator <-> JSON text
    ExperimentError(message, code=1), Interrupted, NonFiniteLoss, CheckpointError

A checkpoint is an nn.save file (.npz, no pickle) holding a nested dict:
    {"format": "braingen-checkpoint", "model": "dcgan", "config": {...flags...}, "step": int,
     "epoch": int, "history": {"step": [...], "loss_d": [...], ...}, ...model entries...}
("config" is stored as JSON text and decoded by load_checkpoint.)
"""
import argparse
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np

import data
import nn

FORMAT = "braingen-checkpoint"
CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
ALWAYS_RESUMABLE = ("epochs", "device", "resume", "overwrite", "out")


# ---- errors: one clear line and an exit code, never a traceback -------------------------------------

class ExperimentError(Exception):
    """A failure the user can act on. main() prints the message and exits with `code`."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


class CheckpointError(ExperimentError):
    """A checkpoint is missing, unreadable, or from another model."""


class NonFiniteLoss(ExperimentError):
    """A loss became nan or inf; the last good checkpoint is left as it was."""


class Interrupted(ExperimentError):
    """Ctrl-C: the script saved a checkpoint and stops."""

    def __init__(self, message):
        super().__init__(message, code=130)


def main(fn):
    """Run `fn()`; turn the errors a user can cause into a message on stderr and an exit code."""
    try:
        fn()
    except Interrupted as error:
        print(error, file=sys.stderr)
        sys.exit(error.code)
    except KeyboardInterrupt:
        print("\ninterrupted (nothing saved since the last checkpoint)", file=sys.stderr)
        sys.exit(130)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.code)
    except (data.DataError, nn.DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, nn.DeviceError) else 1)


# ---- flags and device -----------------------------------------------------------------------------

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


def start(p, model, argv=None, resumable_flags=()):
    """Parse the flags, pick the device and prepare the output folder (see the module docstring)."""
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


def _merge_resumed(config, checkpoint, explicit, resumable, path):
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


# ---- data -----------------------------------------------------------------------------------------

def load_images(config):
    """The training images of this run (uint8 ImageSet); decoded-image cache under <out>/cache."""
    return data.load_images(config.data, image_size=config.image_size, split=config.split,
                            classes=config.classes, cache_dir=os.path.join(config.out, "cache"))


def stream(loader, start, stop):
    """Yield (step, batch) for global steps start..stop-1, walking pass after pass over the data.

    Step s is batch s % len(loader) of pass s // len(loader): a function of s alone, so a resumed
    run sees exactly the batches an uninterrupted one would have seen.
    """
    per_pass = len(loader)
    step = start
    while step < stop:
        data_pass, first = divmod(step, per_pass)
        for batch in loader.epoch(data_pass, start_batch=first):
            yield step, batch
            step += 1
            if step >= stop:
                return


# ---- random state as text (it goes into the checkpoint) -------------------------------------------

def rng_state(generator):
    """A NumPy Generator's complete state as JSON text."""
    return json.dumps(generator.bit_generator.state)


def set_rng_state(generator, text):
    generator.bit_generator.state = json.loads(text)


# ---- checkpoints ----------------------------------------------------------------------------------

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


# ---- the run: output folder, metrics log, loss history, progress, Ctrl-C ------------------------------

class Run:
    """One training run's output folder and bookkeeping. Create it with experiment.start()."""

    def __init__(self, config, model, device, checkpoint=None):
        self.config, self.model, self.device, self.checkpoint = config, model, device, checkpoint
        self.out = config.out
        self.checkpoint_path = os.path.join(self.out, CHECKPOINT)
        self.stop_requested = False
        self.history = {}                  # name -> list of per-step values ("step" included)
        self.saved_step = None             # step of the last checkpoint written or loaded
        self._epoch_values, self._epoch_start = {}, None
        self._clock, self._steps_timed = time.perf_counter(), 0
        self.elapsed = 0.0                 # seconds of training, summed over resumed sessions
        self.progress = Progress()
        os.makedirs(self.out, exist_ok=True)
        if checkpoint is not None:
            self.history = {k: [float(v) for v in np.asarray(values).ravel()]
                            for k, values in checkpoint.get("history", {}).items()}
            self.history.setdefault("step", [])
            self.saved_step = checkpoint["step"]
            self.elapsed = float(checkpoint.get("elapsed", 0.0))
            self._truncate_log(checkpoint["step"])
            self.log("resume", step=checkpoint["step"], epoch=checkpoint["epoch"])
        else:
            for name in (METRICS, CHECKPOINT, "losses.png"):
                if os.path.exists(self.path(name)):
                    os.remove(self.path(name))
            self.log("start", model=model, device=device, config=vars(config))
        with open(self.path("config.json"), "w") as f:
            json.dump(vars(config), f, indent=2)

    def path(self, *names):
        """A path inside the output folder; its parent folders are created."""
        full = os.path.join(self.out, *names)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    # -- metrics log (JSON lines) --
    def log(self, event, **fields):
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path(METRICS), "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")

    def _truncate_log(self, step):
        """On resume, forget log lines from after the checkpoint (they will be written again)."""
        if not os.path.exists(self.path(METRICS)):
            return
        with open(self.path(METRICS)) as f:
            lines = [line for line in f if line.strip()]
        keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
        with open(self.path(METRICS), "w") as f:
            f.writelines(keep)

    # -- per step / per epoch --
    def record(self, step, **values):
        """Record one training step's values (losses etc.), 1-based `step` = steps done so far."""
        values = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                last = (f"the last good checkpoint ({self.checkpoint_path}, step {self.saved_step}) "
                        "is kept" if self.saved_step is not None else "no checkpoint was written yet")
                raise NonFiniteLoss(f"{name} became {value} at step {step}; training stopped and "
                                    f"{last}. Try a lower learning rate, or --resume from it.")
        self.history.setdefault("step", []).append(step)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
            self._epoch_values.setdefault(name, []).append(value)
        self._steps_timed += 1
        self.progress.update(self._progress_text(step, values))

    def begin_epoch(self, epoch, first_step, last_step, total_steps, epochs=None):
        """Call before an epoch's first step: epoch counts from 0, it runs steps first..last-1
        (a resumed epoch may start in the middle), and the run ends at total_steps. `epochs`:
        how many epochs this stage has, when it is not --epochs (the VQ-VAE's prior)."""
        self._epoch_values = {}
        self._epoch, self._first, self._last, self._total = epoch, first_step, last_step, total_steps
        self._epochs = epochs or self.config.epochs

    def _progress_text(self, step, values):
        done = step - self._first
        width = 24
        filled = int(width * done / max(1, self._last - self._first))
        numbers = " ".join(f"{k} {v:.3f}" for k, v in values.items())
        return (f"epoch {self._epoch + 1}/{self._epochs} [{'#' * filled}{'.' * (width - filled)}]"
                f" {done}/{self._last - self._first} {numbers} {self._seconds_per_step():.2f}s/step")

    def _seconds_per_step(self):
        return (time.perf_counter() - self._clock) / max(1, self._steps_timed)

    def end_epoch(self, **extra):
        """Print and log the epoch summary (mean of each recorded value); redraw losses.png."""
        import images  # here, so that experiment.py imports without matplotlib for non-plot uses
        means = {k: float(np.mean(v)) for k, v in self._epoch_values.items()}
        self.elapsed += time.perf_counter() - self._clock
        per_step = self._seconds_per_step()
        epoch, step, total_steps = self._epoch, self._last, self._total
        left = per_step * (total_steps - step)
        numbers = "  ".join(f"{k} {v:.3f}" for k, v in means.items())
        line = (f"epoch {epoch + 1:>3}/{self._epochs}  step {step}/{total_steps}  {numbers}  "
                f"{per_step:.2f} s/step  {_clock(self.elapsed)} elapsed, ~{_clock(left)} left")
        self.progress.finish(line)
        self.log("epoch", epoch=epoch + 1, step=step, seconds_per_step=round(per_step, 4),
                 elapsed_s=round(self.elapsed, 1), **means, **extra)
        images.plot_losses(self.history, self.path("losses.png"),
                           title=f"{self.model}: losses per step (line: moving average)")
        self._clock, self._steps_timed = time.perf_counter(), 0
        return means

    # -- checkpoints --
    def save(self, state):
        """Write <out>/checkpoint.npz atomically with `state` plus the run's own entries."""
        step = int(state["step"])
        elapsed = self.elapsed + (time.perf_counter() - self._clock if self._steps_timed else 0.0)
        full = {"format": FORMAT, "model": self.model, "config": vars(self.config),
                "history": {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()},
                "elapsed": float(elapsed), **state}
        save_checkpoint(self.checkpoint_path, full)
        self.saved_step = step

    # -- Ctrl-C --
    def _on_sigint(self, signum, frame):
        if self.stop_requested:   # second Ctrl-C: stop now, without saving
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.stop_requested = True
        self.progress.finish("")
        print("Ctrl-C: finishing this step and saving a checkpoint (press Ctrl-C again to quit "
              "without saving)", flush=True)

    def interrupted(self, step):
        """The Interrupted error to raise after saving on Ctrl-C."""
        return Interrupted(f"interrupted at step {step}; checkpoint saved to {self.checkpoint_path}. "
                           f"Continue with: --out {self.out} --resume")


class Progress:
    """A one-line progress bar redrawn in place on a terminal; silent when output is redirected."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._drawn = False

    def update(self, text):
        if self.tty:
            width = shutil.get_terminal_size().columns - 1     # never wrap: \r must reach column 0
            self.stream.write("\r" + text[:width].ljust(width))
            self.stream.flush()
            self._drawn = True

    def finish(self, line):
        if self._drawn:
            self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            self._drawn = False
        if line:
            print(line, file=self.stream, flush=True)


def _clock(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
