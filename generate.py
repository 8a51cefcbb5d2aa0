"""Draw new images from a trained model: one PNG per image plus a grid (and, optionally, metrics).

    python generate.py --checkpoint runs/dcgan/checkpoint.npz --n 64 --seed 0 --out generated
    python generate.py --checkpoint runs/dcgan/checkpoint.npz --metrics
    python generate.py --checkpoint runs/stylegan/checkpoint.npz --truncation 0.7
    python generate.py --checkpoint runs/vqvae/checkpoint.npz --level 3   # slices of one level

Writes <out>/img_0000.png ... img_<n-1>.png and <out>/grid.png; with --metrics also
<out>/metrics.json: the images scored as a training run scores its samples (evaluation/report.py:
NN-SSIM against the run's training images, pairwise SSIM, precision, recall, coverage, ...).

A checkpoint records its model ("model": "dcgan" | "vqvae" | "stylegan") and its settings
("config"); SAMPLERS below names the function that draws from each (in settings/), all of the form

    sample(checkpoint, n, seed, device, **options) -> float32 NumPy array (n, 1, S, S) in [-1, 1]

--truncation, --temperature and --level are passed only when given, and only to the model that
takes them.
"""
import argparse
import json
import math
import os

import data
import experiment
import settings.dcgan
import settings.stylegan
import settings.vqvae
from evaluation.report import score_run, scores_line
from experiment import pictures
from experiment.files import atomic_write
from experiment.memory import BASE_BYTES, available_bytes
from settings.rules import SettingsError

SAMPLERS = {"dcgan": settings.dcgan.sample, "vqvae": settings.vqvae.sample,
            "stylegan": settings.stylegan.sample}
OPTIONS = {"dcgan": (), "vqvae": ("temperature", "level"),
           "stylegan": ("truncation",)}  # the flags each takes


def flags():
    p = experiment.Parser(__doc__)
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz written by a train_*.py")
    p.add_argument("--n", type=int, default=64, help="how many images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--out", default="generated", help="output folder (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    p.add_argument("--metrics", action="store_true",
                   help="also compare the images with the training images (SSIM)")
    p.add_argument("--data", default=None, help="training data for --metrics (default: the data "
                   "path saved in the checkpoint; the bundled set if it had none)")
    p.add_argument("--strict", action="store_true", help="--metrics: stop at the first unreadable "
                   "training image instead of skipping it with a warning")
    p.add_argument("--truncation", type=float, default=None, help="StyleGAN truncation psi")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"PixelCNN sampling temperature (default: {settings.vqvae.TEMPERATURE})")
    p.add_argument("--level", type=int, default=None, help="VQ-VAE with a conditional prior: "
                   "draw slices of this level only, 0 (lowest) .. --prior-levels - 1 (default: "
                   "all levels evenly)")
    return p


def check_flags(args):
    """Refuse bad values before anything is loaded or written (exit code 2, one line)."""
    problems = [(args.n < 1, f"--n {args.n}: use a whole number, at least 1"),
                (args.seed < 0, f"--seed {args.seed}: use a whole number, at least 0"),
                (args.truncation is not None and not math.isfinite(args.truncation),
                 f"--truncation {args.truncation}: use a number, e.g. 0.7 (1 = no truncation)"),
                (args.temperature is not None and not args.temperature > 0,
                 f"--temperature {args.temperature}: use a number above 0, e.g. 1.0"),
                (args.level is not None and args.level < 0,
                 f"--level {args.level}: use a whole number, at least 0 (the lowest slices)"),
                (os.path.exists(args.out) and not os.path.isdir(args.out),
                 f"--out {args.out} is a file; give a folder for the images")]
    for wrong, message in problems:
        if wrong:
            raise experiment.ExperimentError(message, code=2)


def check_memory(n, size):
    """n float32 images of size x size, and their PNGs in memory: refuse what cannot fit."""
    needed = n * size * size * (4 + 1) + BASE_BYTES
    available = available_bytes("cpu")
    if available is not None and needed > available:
        raise experiment.ExperimentError(f"--n {n}: {n} images of {size}x{size} need about "
                                         f"{needed / 2 ** 30:.1f} GiB, but the machine has "
                                         f"{available / 2 ** 30:.1f} GiB available; ask for "
                                         "fewer and run again with another --seed", code=2)


def chosen_options(args, model):
    """The sampling options given on the command line; one the model does not take is an error."""
    given = {name: getattr(args, name) for name in ("truncation", "temperature", "level")
             if getattr(args, name) is not None}
    for name in given:
        if name not in OPTIONS[model]:
            raise experiment.ExperimentError(f"{model} checkpoints do not take --{name}", code=2)
    return given


def generate():
    args = flags().parse_args()
    check_flags(args)
    device = experiment.choose_device(args.device)
    checkpoint = experiment.load_checkpoint(args.checkpoint)
    model = str(checkpoint["model"])
    if model not in SAMPLERS:
        raise experiment.CheckpointError(f"the checkpoint is for an unknown model {model!r} "
                                         f"(known: {', '.join(SAMPLERS)})")
    options = chosen_options(args, model)
    config = checkpoint["config"]
    if "level" in options:                      # one the prior does not know: exit 2
        try:
            settings.vqvae.level_labels(argparse.Namespace(**config), args.n, options["level"])
        except SettingsError as error:
            raise experiment.ExperimentError(str(error), code=2) from None
    check_memory(args.n, int(config["image_size"]))
    if args.metrics:                  # the training images must be there before anything is drawn
        try:
            data.count_images(args.data or config.get("data"), config.get("split", "all"),
                              config.get("classes"))
        except data.DataError as error:
            raise experiment.ExperimentError(f"--metrics: {error}", code=2) from None

    samples = SAMPLERS[model](checkpoint, args.n, args.seed, device, **options)
    paths = pictures.save_images(samples, args.out)
    grid = pictures.save_grid(samples, os.path.join(args.out, "grid.png"))
    print(f"{model} (step {checkpoint['step']}): wrote {len(paths)} images to {args.out}/ "
          f"and {grid}", flush=True)

    if args.metrics:                  # scored as the training run scores its samples
        run_data = dict(config, data=args.data or config.get("data"), strict=args.strict)
        record, _ = score_run(run_data, model, samples, seed=args.seed,
                              cache_dir=os.path.join(args.out, "cache"))
        record.update(model=model, checkpoint=os.path.abspath(args.checkpoint),
                      step=checkpoint["step"], **options)
        with atomic_write(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(record, f, indent=2)
        print(scores_line(record), flush=True)
        print(f"metrics written to {os.path.join(args.out, 'metrics.json')}", flush=True)


if __name__ == "__main__":
    experiment.main(generate)
