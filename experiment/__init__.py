"""Running an experiment: what train_dcgan.py, train_vqvae.py, train_stylegan.py and generate.py share.

Everything a training script needs besides the model and the training step:

    flags.py        experiment.parser(description, epochs=15, out="runs/dcgan", ...): the shared
                    flags (--device --data --split --subset --image-size --epochs --steps-per-epoch
                    --batch-size --seed --out --resume --overwrite --strict --skip-memory-check
                    --profile --sync-batchnorm), every flag with its rule (`rule=`); experiment.choose_device(name);
                    run = experiment.start(parser, model="stylegan", check=settings.stylegan.check,
                    memory=settings.stylegan.memory_estimate): parse, refuse every bad setting
                    before writing anything, pick the device, lock and prepare --out, and on
                    --resume load the checkpoint and its saved settings
    run.py          the Run: output folder, metrics log (metrics.jsonl), loss history, progress
                    line, epoch summaries, Ctrl-C, save and restore, --profile of the loop's own
                    step; experiment.load_images(config) and experiment.stream(loader, start,
                    stop) (exactly resumable batches)
    checkpoints.py  atomic checkpoint files, one stateful object <-> what the file stores, and
                    upgrade(): every rule that keeps runs saved by older code loading
    files.py        atomic writes (temporary file + rename) for pictures, logs and copies
    lock.py         one run per output folder (fcntl.flock, released when the process dies)
    distributed.py  data-parallel training over MPI: rank, size, each process's share of a batch,
                    the gradient average (one Allreduce per step); nothing without mpiexec
    memory.py       the model's memory estimate against the memory available
    pictures.py     sample grids, single images, loss curves and other figures (PNG)
    progress.py     the one-line progress bar
    errors.py       ExperimentError(message, code), CheckpointError, NonFiniteLoss, Interrupted,
                    and experiment.main(fn): user errors become one line and an exit code (1; 2
                    for bad flags or an unusable device; 130 for Ctrl-C), never a traceback
"""
from .checkpoints import (CHECKPOINT, FORMAT, load_checkpoint, load_state, rng_state,
                          save_checkpoint, set_rng_state, state_of)
from .errors import CheckpointError, ExperimentError, Interrupted, NonFiniteLoss, main
from .flags import Parser, choose_device, parser, start
from .run import METRICS, Run, load_images, stream
from . import pictures
