"""Run a training script and kill it with SIGKILL at a chosen moment (tests/test_crash_safety.py).

    python tests/kill_at.py WHERE N train_dcgan.py --out runs/x ...

WHERE says when this process kills itself, at the N-th time it gets there (counted from 1):
    step        right after a training step is recorded (Run.record)
    checkpoint  in the middle of writing a checkpoint: half its arrays are in the temporary file
    picture     in the middle of writing a picture: half its bytes are in the temporary file
    copy        in the middle of an atomic copy (StyleGAN's phases/res_R/checkpoint.npz)
    log         in the middle of a line of metrics.jsonl: half of it is in the file

SIGKILL cannot be caught: nothing runs after it (no finally, no atexit), as when the operating
system kills a process that ran out of memory. The script then runs as `python train_dcgan.py`.

Under mpiexec (tests/test_distributed.py), KILL_RANK=r arms the process of rank r only: it dies,
and the MPI launcher has to stop the others.
"""
import contextlib
import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import experiment.files  # noqa: E402
import experiment.pictures  # noqa: E402
import experiment.run  # noqa: E402
import nn.serialization  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def counter(n):
    """A function that returns True on its n-th call."""
    calls = []

    def count():
        calls.append(1)
        return len(calls) == n
    return count


def kill_in_atomic_writes(module, due):
    """Patch module.atomic_write: on the due call, leave half the bytes in the temporary file
    (written, not yet renamed) and die."""
    real = module.atomic_write

    @contextlib.contextmanager
    def dying(path, mode="wb"):
        with real(path, mode) as file:
            yield file
            if due():
                file.flush()
                file.truncate(file.tell() // 2)
                die()
    module.atomic_write = dying


def arm(where, n):
    due = counter(n)
    if where == "step":
        record = experiment.run.Run.record

        def record_then_die(self, step, **values):
            record(self, step, **values)
            if due():
                die()
        experiment.run.Run.record = record_then_die
    elif where == "checkpoint":
        write = nn.serialization._write_npz

        def write_half_then_die(file, arrays):
            if not due():
                return write(file, arrays)
            names = list(arrays)
            write(file, {name: arrays[name] for name in names[:len(names) // 2]})
            file.flush()
            die()
        nn.serialization._write_npz = write_half_then_die
    elif where == "picture":
        kill_in_atomic_writes(experiment.pictures, due)
    elif where == "copy":
        kill_in_atomic_writes(experiment.files, due)      # copy_atomically's own atomic_write
    elif where == "log":
        log = experiment.run.Run.log

        def log_half_a_line_then_die(self, event, **fields):
            if not due():
                return log(self, event, **fields)
            with open(self.path(experiment.run.METRICS), "a") as f:
                f.write('{"event": "' + event + '", "st')
            die()
        experiment.run.Run.log = log_half_a_line_then_die
    else:
        raise SystemExit(f"unknown moment {where!r}")


def rank():
    """This process's rank under an MPI launcher (the variables it sets), else 0."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


if __name__ == "__main__":
    where, n, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if os.environ.get("KILL_RANK") in (None, str(rank())):
        arm(where, n)
    sys.argv = [script] + sys.argv[4:]
    runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
