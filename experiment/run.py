"""The Run: one training run's output folder, metrics log, loss history, progress and checkpoints.

    run = experiment.start(parser, model="dcgan")      # see flags.py
    run.config, run.device, run.checkpoint             # settings, "cpu" | "gpu", loaded dict or None
    state = {"generator": G, "optimizer_g": opt_g, "rng_noise": noise, ...}   # stateful objects
    step = run.restore(state)   # --resume: load them all in place, return the step (fresh: 0)
    run.begin_epoch(epoch, first_step, last_step, total_steps)   before an epoch's first step
    run.begin_stage(finished)   a run in stages: keep the finished stage's history, start afresh
    run.record(step, **losses)  per training step; values may stay on the device (0-d arrays):
                                run.read() brings them to the host in one transfer every
                                READ_EVERY steps, at the end of an epoch and before a checkpoint,
                                raises NonFiniteLoss on nan/inf (naming the first such step),
                                keeps the history and updates the progress bar
    run.stop_if_requested(state, step)   after a step: on Ctrl-C save, then exit with code 130
    run.end_epoch(**extra)      prints and logs the epoch line, redraws <out>/losses.png
    run.profile(one_step, batches)   --profile N: time N calls of the loop's own step, op by op
    run.save(state, step, **extra)       atomic <out>/checkpoint.npz (plain values in `extra`)
    run.path(*names)            a path inside the output folder (folders are created)
    run.log(event, **fields)    append one JSON line to <out>/metrics.jsonl

In a data-parallel run (experiment/distributed.py) every process has a Run and does all of the
above, but only rank 0's folder is --out: the others' is a private temporary folder, removed when
they exit. The values recorded are averaged over the processes when they are read, and Ctrl-C
seen by any process stops every process after the same step.
"""
import json
import math
import os
import shlex
import signal
import sys
import time

import numpy as np

import data
import nn

from . import distributed
from .checkpoints import CHECKPOINT, FORMAT, METRICS, VERSION, load_state, save_checkpoint, state_of
from .errors import ExperimentError, Interrupted, NonFiniteLoss
from .files import atomic_write, remove_temporaries
from .pictures import plot_losses
from .progress import Progress, clock

READ_EVERY = 10   # training steps between two reads of the recorded values (see Run.read)
STAGE_HISTORY = "_history"   # a finished stage's history in a checkpoint: "vqvae_history"


class Run:
    """One training run's output folder and bookkeeping. Create it with experiment.start()."""

    def __init__(self, config, model, device, checkpoint=None):
        self.config, self.model, self.device, self.checkpoint = config, model, device, checkpoint
        self.out = config.out if distributed.rank == 0 else distributed.scratch_folder()
        self.checkpoint_path = os.path.join(self.out, CHECKPOINT)
        self.stop_requested = False
        self.history = {}                  # name -> list of per-step values ("step" included)
        self.finished_stages = {}          # stage name -> its history (see begin_stage)
        self.read_every = READ_EVERY
        self._pending = []                 # (step, values) recorded but not read yet
        self.saved_step = None             # step of the last checkpoint written or loaded
        self.epochs_done = 0               # epochs finished (in the current stage)
        self._epoch_values, self._epoch_start = {}, None
        self._clock, self._steps_timed = time.perf_counter(), 0
        self.elapsed = 0.0                 # seconds of training, summed over resumed sessions
        self.log_lines = 0                 # lines in metrics.jsonl (a checkpoint stores it)
        self.epoch_end_step = 0            # the step at which the last finished epoch ended
        self.progress = Progress()
        os.makedirs(self.out, exist_ok=True)
        remove_temporaries(self.out)       # left by a writer that was killed (see files.py)
        parallel = {} if distributed.size == 1 else {    # in the log: how the processes share
            "processes": distributed.size,
            "data_parallel": distributed.describe(device, getattr(config, "sync_batchnorm", False))}
        if checkpoint is not None:
            self.history = {k: [float(v) for v in np.asarray(values).ravel()]
                            for k, values in checkpoint.get("history", {}).items()}
            self.history.setdefault("step", [])
            self.finished_stages = {key[:-len(STAGE_HISTORY)]: value for key, value in
                                    checkpoint.items() if key.endswith(STAGE_HISTORY)}
            self.saved_step, self.epochs_done = checkpoint["step"], checkpoint["epoch"]
            self.elapsed = float(checkpoint["elapsed"])
            self.epoch_end_step = int(checkpoint["epoch_end_step"])
            self._truncate_log(checkpoint)
            self.log("resume", step=checkpoint["step"], epoch=checkpoint["epoch"],
                     command=command_line(), **parallel)
        else:
            for name in (METRICS, CHECKPOINT, "losses.png"):
                if os.path.exists(self.path(name)):
                    os.remove(self.path(name))
            self.log("start", model=model, device=device, config=vars(config),
                     command=command_line(), **parallel)
        self.write_config()

    def write_config(self):
        """<out>/config.json: the run's settings (a script that adjusts them writes it again)."""
        with atomic_write(self.path("config.json"), "w") as f:
            json.dump(vars(self.config), f, indent=2)

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
        self.log_lines += 1

    def _truncate_log(self, checkpoint):
        """On resume, forget what was logged after the checkpoint was saved (it will be logged
        again): the checkpoint stores how many lines the log had ("log_lines"). A last line that
        a killed run left half-written goes too. The log is replaced atomically."""
        if not os.path.exists(self.path(METRICS)):
            return
        keep = []
        with open(self.path(METRICS)) as f:
            for line in f:
                try:
                    json.loads(line)
                except ValueError:         # half a line: the run was killed while writing it
                    continue
                keep.append(line.rstrip("\n") + "\n")
        keep = keep[:checkpoint.get("log_lines")]     # None (not known): every line
        with atomic_write(self.path(METRICS), "w") as f:
            f.writelines(keep)
        self.log_lines = len(keep)

    # -- per step / per epoch --
    def record(self, step, **values):
        """Record one training step's values (losses etc.), 1-based `step` = steps done so far.

        The values may be numbers or 0-d arrays still on the device: reading a GPU value makes
        the CPU wait until the GPU has finished everything queued, so they are kept as they are
        and read together every `read_every` steps (the progress line may be a few steps old).
        """
        self._pending.append((step, values))
        self._steps_timed += 1
        if len(self._pending) >= self.read_every:
            self.read()

    def read(self):
        """Bring the recorded values to the host in ONE transfer, check them, add them to the
        history. Raises NonFiniteLoss naming the first step whose value is nan or inf (the steps
        before it are kept). Called every `read_every` steps, by end_epoch and by save."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        numbers = host_numbers([v for _, values in pending for v in values.values()])
        numbers = iter(distributed.mean_of(numbers))        # the mean over the processes
        for step, values in pending:
            values = {name: next(numbers) for name in values}
            for name, value in values.items():
                if not math.isfinite(value):
                    last = (f"the last good checkpoint ({self.checkpoint_path}, step "
                            f"{self.saved_step}) is kept" if self.saved_step is not None
                            else "no checkpoint was written yet")
                    error = NonFiniteLoss(f"{name} became {value} at step {step}; training "
                                          f"stopped and {last}. Try a lower learning rate, or "
                                          "--resume from it.")
                    error.everywhere = True           # every process read the same mean
                    raise error
            self.history.setdefault("step", []).append(step)
            for name, value in values.items():
                self.history.setdefault(name, []).append(value)
                self._epoch_values.setdefault(name, []).append(value)
        self.progress.update(self._progress_text(step, values))

    def begin_stage(self, finished):
        """A run in stages (the VQ-VAE, then its prior): the history so far is kept as stage
        `finished`'s (saved as "<finished>_history"), and the history, losses.png and the epoch
        summaries start afresh for the next stage."""
        self.read()
        self.finished_stages[finished] = {k: np.asarray(v) for k, v in self.history.items()}
        self.history = {"step": []}

    def begin_epoch(self, epoch, first_step, last_step, total_steps, epochs=None):
        """Call before an epoch's first step: epoch counts from 0, it runs steps first..last-1
        (a resumed epoch may start in the middle), and the run ends at total_steps. `epochs`:
        how many epochs this stage has, when it is not --epochs (the VQ-VAE's prior).
        An epoch resumed in the middle starts with the values its first steps recorded before
        the checkpoint, so its summary is the same as an uninterrupted run's."""
        steps = self.history.get("step", [])
        done = [i for i, step in enumerate(steps) if self.epoch_end_step < step <= first_step]
        self._epoch_values = {name: [values[i] for i in done]
                              for name, values in self.history.items()
                              if name != "step" and len(values) == len(steps) and done}
        self._epoch, self._first, self._last, self._total = epoch, first_step, last_step, total_steps
        self._epochs = epochs or self.config.epochs
        self.epochs_done = epoch

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
        self.read()
        means = {k: float(np.mean(v)) for k, v in self._epoch_values.items()}
        self.elapsed += time.perf_counter() - self._clock
        per_step = self._seconds_per_step()
        epoch, step, total_steps = self._epoch, self._last, self._total
        left = per_step * (total_steps - step)
        numbers = "  ".join(f"{k} {v:.3f}" for k, v in means.items())
        line = (f"epoch {epoch + 1:>3}/{self._epochs}  step {step}/{total_steps}  {numbers}  "
                f"{per_step:.2f} s/step  {clock(self.elapsed)} elapsed, ~{clock(left)} left")
        self.progress.finish(line)
        self.log("epoch", epoch=epoch + 1, step=step, seconds_per_step=round(per_step, 4),
                 elapsed_s=round(self.elapsed, 1), **means, **extra)
        plot_losses(self.history, self.path("losses.png"),
                    title=f"{self.model}: losses per step (line: moving average)")
        self._clock, self._steps_timed = time.perf_counter(), 0
        self.epochs_done = epoch + 1
        self.epoch_end_step = step
        return means

    # -- checkpoints: one dict of stateful objects serves both --
    def save(self, state, step, **extra):
        """Write <out>/checkpoint.npz atomically: `state` maps names to the run's stateful objects
        (models, optimizers, NumPy Generators), each stored as state_of(object); `extra` holds
        plain values (numbers, arrays, dicts of them) stored as they are. The recorded values are
        read first, so a nan loss stops the run before its weights are saved."""
        self.read()
        elapsed = self.elapsed + (time.perf_counter() - self._clock if self._steps_timed else 0.0)
        own = {"format": FORMAT, "version": VERSION, "model": self.model,
               "config": vars(self.config),
               "step": int(step), "epoch": int(self.epochs_done), "elapsed": float(elapsed),
               "log_lines": self.log_lines, "epoch_end_step": self.epoch_end_step,
               "history": {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()},
               **{name + STAGE_HISTORY: history for name, history in self.finished_stages.items()}}
        clash = (set(state) | set(extra)) & set(own)
        if clash:
            raise ValueError(f"checkpoint entries may not be named {sorted(clash)}: the run's own")
        entries = {name: state_of(thing) for name, thing in state.items()}
        try:
            save_checkpoint(self.checkpoint_path, {**own, **entries, **extra})
        except OSError as error:           # a full disk, a permission taken away
            kept = (f"the previous checkpoint (step {self.saved_step}) is kept"
                    if self.saved_step is not None else "no checkpoint was written yet")
            raise ExperimentError(f"cannot write a checkpoint in {self.out}: "
                                  f"{error.strerror or error}; training stopped at step {step} "
                                  f"and {kept}. Free some space (or fix the folder's permissions) "
                                  f"and continue with --out {self.out} --resume") from None
        self.saved_step = int(step)

    def restore(self, state):
        """On --resume, load every object of `state` that the checkpoint holds, in place, and
        return the step to continue from; a fresh run returns 0 and changes nothing."""
        if self.checkpoint is None:
            return 0
        for name, thing in state.items():
            if name in self.checkpoint:
                try:
                    load_state(thing, self.checkpoint[name])
                except (nn.StateDictError, ValueError) as error:
                    raise ExperimentError(f"the checkpoint's {name} does not fit these settings "
                                          f"({error}); keep the run's flags, or use a new --out")
        print(f"resumed from {self.checkpoint_path} at step {self.checkpoint['step']}", flush=True)
        return self.checkpoint["step"]

    def stop_if_requested(self, state, step, **extra):
        """After a training step: on Ctrl-C, save (as `save`) and stop with exit code 130. (Every
        process of a data-parallel run asks the others: they stop after the same step.)"""
        if distributed.any_of(self.stop_requested):
            self.save(state, step, **extra)
            error = self.interrupted(step)
            error.everywhere = True
            raise error

    # -- --profile N --
    def profile(self, one_step, batches):
        """--profile N: one_step(step, batch), the very function the training loop calls, on the
        first of `batches` untimed (first-call costs), then on the next N under nn.profile();
        prints the per-op table and writes <out>/profile.txt. Returns the Profile."""
        batches = iter(batches)
        return nn.profile_steps(lambda: one_step(*next(batches)), self.config.profile,
                                self.path("profile.txt"))

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
        """The Interrupted error (exit code 130) to raise after saving on Ctrl-C."""
        return Interrupted(f"interrupted at step {step}; checkpoint saved to {self.checkpoint_path}. "
                           f"Continue with: --out {self.out} --resume")


def command_line():
    """The command that started this process, as it could be typed again (report.html shows it)."""
    return "python " + shlex.join(sys.argv)


def host_numbers(values):
    """Python floats of `values`: numbers, or NumPy / CuPy 0-d arrays. The arrays are stacked where
    they are and copied to the host in one transfer (nn.backend.to_numpy, called once)."""
    arrays = [v for v in values if hasattr(v, "dtype")]
    if not arrays:
        return [float(v) for v in values]
    on_gpu = [a for a in arrays if nn.backend.is_cupy_array(a)]
    xp = nn.backend.get_array_module(on_gpu[0]) if on_gpu else np
    read = iter(nn.backend.to_numpy(xp.stack([xp.asarray(a, dtype=np.float64) for a in arrays])))
    return [float(next(read)) if hasattr(v, "dtype") else float(v) for v in values]


def load_images(config):
    """The training images of this run (uint8 ImageSet); decoded-image cache under <out>/cache.
    With --strict an unreadable image is an error instead of a warning. In a data-parallel run
    rank 0 loads them first (and writes the cache), then the other processes (which read it)."""
    with distributed.rank_zero_first():
        return data.load_images(config.data, image_size=config.image_size, split=config.split,
                                classes=config.classes, strict=getattr(config, "strict", False),
                                cache_dir=os.path.join(config.out, "cache"))


def stream(loader, start, stop):
    """Yield (step, batch) for global steps start..stop-1, walking pass after pass over the data.

    Step s is batch s % len(loader) of pass s // len(loader): a function of s alone, so a resumed
    run sees exactly the batches an uninterrupted one would have seen. In a data-parallel run each
    process gets its share of every batch (distributed.share: rows rank, rank + N, ...).
    """
    per_pass = len(loader)
    step = start
    while step < stop:
        data_pass, first = divmod(step, per_pass)
        for batch in loader.epoch(data_pass, start_batch=first, share=distributed.share()):
            yield step, batch
            step += 1
            if step >= stop:
                return


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
