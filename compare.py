"""Compare trained models in one table: the same real images, as many samples each, every metric.

    python compare.py runs/dcgan runs/vqvae runs/stylegan          # run folders or checkpoint files
    python compare.py runs/dcgan runs/dcgan_wide/checkpoint.npz --n 128 --out comparison_wide
    python compare.py runs/stylegan_ad runs/stylegan_nc --data ~/data/AD_NC --subset AD
    python compare.py --report runs/dcgan          # rebuild runs/dcgan/report.html, nothing else

Each run draws --n samples with --seed through its model's sample() (generate.py's SAMPLERS, the
same images `generate.py --n N --seed S` writes).  All of them are scored against the same real
images: the data the runs were trained on (recorded in each checkpoint's settings; they must
agree) or --data.  Of those images every fifth (index % 5 == 4) is held out and the rest are the
training images, for every model (the split train_vqvae.py trains with; DCGAN and StyleGAN train
on all images, and the table says so where it matters).  See evaluation/comparison.py.

Writes to --out (default: comparison/):
    comparison.md, comparison.csv   the table (also printed): a reference row (held-out real
                                    images scored as if they were samples: what "as good as real"
                                    means on these data), then one row per model
    samples.png                     8 held-out real slices, then a row of 8 samples per model
                                    (both evenly spaced through the set)
    memorisation_<i>_<model>.png    per model: the nearest-training distances of its samples
                                    against those of held-out images, and its most-copied samples
                                    beside their nearest training images

How many samples: precision, recall, density and coverage depend on the number of images scored,
so the held-out set is capped at --n images and each model is scored on random subsets of as many
samples as there are held-out images (the mean over 10 subsets); give --n at least the number of
held-out images (26 for the bundled slices) so that the reference row uses them all.  KID and the
memorisation figures use all samples.  The training images are capped at --max-train.

Refused with one line and exit code 2, writing nothing: a path that is neither a run folder nor a
checkpoint, an empty or unreadable folder, a damaged checkpoint, one of an unknown model (or a
VQ-VAE whose prior is untrained), runs trained on different data (give --data) or at different
sizes (give --image-size to resize every sample and the real images), --n below 6, an --out inside
a run or data folder.  Runs and data folders are only ever read.
"""
import os
import sys
import time

import numpy as np

import data
import experiment
import nn
from data.transforms import resize_square
from evaluation import comparison, report, ssim
from evaluation.memorisation import plot_memorisation
from generate import SAMPLERS

SHOWN = 8                               # images per row of samples.png
SSIM_MIN_SIZE = ssim.WIN                # the SSIM window: 11 pixels


def flags():
    p = experiment.Parser(__doc__)
    p.add_argument("runs", nargs="*", metavar="RUN_OR_CHECKPOINT",
                   help="run folders (holding checkpoint.npz) or checkpoint files, any model")
    p.add_argument("--n", type=int, default=64, help="samples per model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling and subset seed (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: comparison)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="real images to score against (default: the data the runs recorded)")
    p.add_argument("--split", default=None, help="split of the real images (default: the runs' "
                   "split with their data, 'all' with --data)")
    p.add_argument("--subset", dest="classes", choices=("AD", "NC", "both"), default=None,
                   help="ADNI class of the real images (default: the runs')")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize every model's samples and the real images to this size "
                        "(default: the runs' size, which must then be the same for all)")
    p.add_argument("--max-train", type=int, default=comparison.MAX_TRAIN,
                   help="at most this many training images (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable real "
                   "image instead of skipping it with a warning")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    p.add_argument("--report", action="store_true",
                   help="rebuild report.html of each run folder from its files instead")
    return p


def fail(message):
    """A user error: one line on stderr, exit code 2."""
    return experiment.ExperimentError(message, code=2)


# ---- the runs ------------------------------------------------------------------------------------

def find_checkpoint(path):
    """The checkpoint file of a run folder or checkpoint path; a clear error when there is none."""
    hint = "give a run folder written by a train_*.py (it holds checkpoint.npz) or a checkpoint file"
    if not os.path.exists(path):
        raise fail(f"{path} does not exist; {hint}")
    if not os.path.isdir(path):
        return path
    try:
        names = os.listdir(path)
    except OSError as error:
        raise fail(f"cannot read the folder {path} ({error.strerror}); check its permissions")
    if not names:
        raise fail(f"{path} is an empty folder, not a run; {hint}")
    if experiment.CHECKPOINT not in names:
        raise fail(f"{path} holds no {experiment.CHECKPOINT}, so it is not a run folder; {hint}")
    return os.path.join(path, experiment.CHECKPOINT)


def load_run(path):
    """(checkpoint file, checkpoint dict) of a run, checked to be of a known model."""
    file = find_checkpoint(path)
    try:
        checkpoint = experiment.load_checkpoint(file)
    except experiment.CheckpointError as error:
        raise fail(f"{error}; give a checkpoint.npz written by a train_*.py")
    model = str(checkpoint["model"])
    if model not in SAMPLERS:
        raise fail(f"{file} is a checkpoint of an unknown model {model!r}; compare.py compares "
                   f"{', '.join(SAMPLERS)} checkpoints")
    if "image_size" not in checkpoint["config"]:
        raise fail(f"{file} records no image size in its settings; give a checkpoint.npz "
                   "written by a train_*.py")
    return file, checkpoint


def sample_size(checkpoint):
    """The side of the run's samples: the resolution a StyleGAN reached, else --image-size."""
    return int(checkpoint.get("resolution", checkpoint["config"]["image_size"]))


def data_of(settings):
    """(data path, split, class) of a run's settings, in a form that compares equal for equal data."""
    path = settings.get("data")
    classes = settings.get("classes")
    return (os.path.normpath(os.path.abspath(path)) if path else None,
            settings.get("split", "all"), None if classes in (None, "both") else classes)


def describe_data(key):
    path, split, classes = key
    subset = f", subset {classes}" if classes else ""
    return f"{path or 'the bundled slices'} (split {split}{subset})"


def choose_real(args, runs):
    """The (path, split, class) of the real images, from --data or the runs' agreeing settings."""
    recorded = [data_of(checkpoint["config"]) for _, _, checkpoint in runs]
    if args.data is None and len(set(recorded)) > 1:
        which = "; ".join(f"{label}: {describe_data(key)}"
                          for (label, _, _), key in zip(runs, recorded))
        raise fail(f"the runs were trained on different data ({which}); compare them on one data "
                   "set with --data PATH (and --split / --subset)")
    path, split, classes = recorded[0]
    if args.data is not None:
        path, split, classes = os.path.normpath(os.path.abspath(args.data)), "all", None
    if args.split is not None:
        split = args.split
    if args.classes is not None:
        classes = None if args.classes == "both" else args.classes
    return path, split, classes


def choose_size(args, runs):
    sizes = {label: sample_size(checkpoint) for label, _, checkpoint in runs}
    size = args.image_size
    if size is None:
        if len(set(sizes.values())) > 1:
            which = ", ".join(f"{label} {s}x{s}" for label, s in sizes.items())
            raise fail(f"the runs draw images of different sizes ({which}); give --image-size S "
                       "to resize every sample and the real images to S x S")
        size = next(iter(sizes.values()))
    if size < SSIM_MIN_SIZE:
        raise fail(f"images of {size}x{size} are smaller than the {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} "
                   "SSIM window; give --image-size 16 (or more) to enlarge them")
    return size, sizes


def run_folder(file):
    """The run folder a checkpoint file lies in (one with the run's config.json or metrics.jsonl),
    or None for a checkpoint kept on its own."""
    folder = os.path.dirname(os.path.abspath(file))
    names = ("config.json", experiment.METRICS)
    return folder if any(os.path.exists(os.path.join(folder, n)) for n in names) else None


def check_out(out, runs, real_path):
    """--out must not be, or lie inside, a run or data folder (those are only read)."""
    target = os.path.abspath(out)
    folders = [run_folder(file) for _, file, _ in runs] + [real_path]
    folders = [folder for folder in folders if folder]
    for folder in folders:
        if os.path.commonpath([target, folder]) == folder:
            raise fail(f"--out {out} lies inside {folder}, a run or data folder, which compare.py "
                       "only reads; choose another --out")
    if os.path.exists(os.path.join(target, experiment.CHECKPOINT)):
        raise fail(f"--out {out} is a run folder (it holds {experiment.CHECKPOINT}); choose "
                   "another --out")


def labels_for(paths, models):
    """Row labels "model: path", made unique by a number when a path is given twice."""
    labels = [f"{model}: {path}" for path, model in zip(paths, models)]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


# ---- samples -------------------------------------------------------------------------------------

def resize(samples, size):
    """Samples (N, 1, S, S) in [-1, 1] -> (N, 1, size, size), through 8 bits and Pillow as the real
    images are (Lanczos to shrink, bicubic to enlarge)."""
    pixels = data.to_uint8(samples[:, 0])
    return data.to_float(np.stack([resize_square(p, size) for p in pixels]))[:, None]


def draw(checkpoint, label, args, device, size):
    started = time.perf_counter()
    try:
        samples = SAMPLERS[str(checkpoint["model"])](checkpoint, args.n, args.seed, device)
    except nn.CheckpointError as error:
        raise fail(f"{label}: {error}")
    samples = np.asarray(samples, dtype=np.float32)
    resized = samples.shape[-1] != size
    if resized:
        samples = resize(samples, size)
    print(f"{label}: {len(samples)} samples in {time.perf_counter() - started:.1f} s"
          + (f" (resized to {size}x{size})" if resized else ""), flush=True)
    return samples, resized


# ---- the two modes -------------------------------------------------------------------------------

def rebuild_reports(args):
    if args.out is not None:
        raise fail("--report writes RUN/report.html only; drop --out")
    for folder in args.runs:
        if not os.path.isdir(folder):
            raise fail(f"--report needs a run folder; {folder} is not a folder")
        try:
            names = os.listdir(folder)
        except OSError as error:
            raise fail(f"cannot read the folder {folder} ({error.strerror}); check its permissions")
        if report.METRICS not in names and report.CONFIG not in names:
            raise fail(f"{folder} holds neither {report.METRICS} nor {report.CONFIG}: not a run "
                       "folder written by a train_*.py")
    for folder in args.runs:
        print(f"report: {report.build_report(folder)}", flush=True)


def compare(args):
    if args.n < comparison.minimum_images():
        raise fail(f"--n {args.n}: the metrics need at least {comparison.minimum_images()} samples "
                   f"per model (k-nearest neighbours with k = 5); the default is 64")
    if args.max_train < comparison.minimum_images():
        raise fail(f"--max-train must be at least {comparison.minimum_images()}")
    if args.seed < 0:
        raise fail("--seed must not be negative")
    if args.image_size is not None and args.image_size < 1:
        raise fail("--image-size must be a positive number of pixels")
    out = args.out or "comparison"
    loaded = [load_run(path) for path in args.runs]
    labels = labels_for(args.runs, [str(c["model"]) for _, c in loaded])
    runs = [(label, file, checkpoint) for label, (file, checkpoint) in zip(labels, loaded)]
    real_key = choose_real(args, runs)
    size, sizes = choose_size(args, runs)
    check_out(out, runs, real_key[0])
    device = experiment.choose_device(args.device)

    try:
        real = data.load_images(real_key[0], image_size=size, split=real_key[1],
                                classes=real_key[2], strict=args.strict)
        train, heldout = comparison.real_sets(real.images, args.n, args.max_train, args.seed)
    except (data.DataError, ValueError) as error:
        fix = "check --data and --split" if args.data else "give --data PATH (and --split)"
        raise fail(f"real images: {error}; {fix} of the runs' training data")
    print(f"real images: {real.source}; {len(train)} training and {len(heldout)} held-out "
          f"(every fifth), {size}x{size}", flush=True)
    judge = comparison.Judge(train, heldout, seed=args.seed)

    notes = [f"{args.n} samples per model, seed {args.seed}, from each model's sample() "
             "(generate.py)"] + judge.describe()
    rows = [dict(judge.reference, label="real held-out vs training (reference)", model="real",
                 n_images=len(heldout))]
    drawn, figures = [], []
    for label, file, checkpoint in runs:
        samples, resized = draw(checkpoint, label, args, device, size)
        row, copying = judge.score(samples)
        same_data = data_of(checkpoint["config"]) == real_key
        row.update(label=label, model=str(checkpoint["model"]), path=file, step=checkpoint["step"],
                   saw_heldout=same_data and comparison.saw_heldout(str(checkpoint["model"])),
                   other_data=not same_data, marks=[])
        for flag, note in ((row["saw_heldout"], comparison.SAW_HELDOUT_NOTE),
                           (row["other_data"], comparison.OTHER_DATA_NOTE),
                           (resized, f"samples resized from {sizes[label]}x{sizes[label]} to "
                                     f"{size}x{size} (--image-size)")):
            if flag:
                if note not in notes:
                    notes.append(note)
                row["marks"].append(notes.index(note) + 1)
        rows.append(row)
        drawn.append(samples)
        figures.append((copying, samples, label))

    table = comparison.markdown_table(rows, notes)
    print("\n" + table, flush=True)
    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "comparison.md"), os.path.join(out, "comparison.csv")]
    with open(written[0], "w") as f:
        f.write(table)
    with open(written[1], "w") as f:
        f.write(comparison.csv_text(rows))
    figure_rows = [("real slices (held-out, evenly spaced)", evenly_spaced(heldout))]
    figure_rows += [(label, evenly_spaced(samples)) for samples, (label, _, _) in zip(drawn, runs)]
    written.append(comparison.plot_rows(figure_rows, os.path.join(out, "samples.png"), SHOWN))
    for i, ((copying, samples, label), (_, _, checkpoint)) in enumerate(zip(figures, runs), 1):
        path = os.path.join(out, f"memorisation_{i}_{checkpoint['model']}.png")
        written.append(plot_memorisation(copying, samples, train, path, title=label))
    print("wrote " + ", ".join(written), flush=True)


def evenly_spaced(images, count=SHOWN):
    """`count` images from first to last, evenly spaced: the held-out slices from the bottom of the
    head to the top, and a conditional prior's samples (drawn level by level) from every level."""
    return images[np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))]


def main():
    args = flags().parse_args()
    if not args.runs:
        raise fail("give at least one run folder or checkpoint, e.g. "
                   "python compare.py runs/dcgan runs/vqvae runs/stylegan")
    if args.report:
        rebuild_reports(args)
    else:
        compare(args)


if __name__ == "__main__":
    experiment.main(main)
