"""One table for several models: the same real images, as many samples each, the same metrics.

    train, heldout = real_sets(images_uint8, n_samples)  # the fixed held-out rule, float (N, 1, S, S)
    judge = Judge(train, heldout)        # fits the PCA once and scores the reference row
    judge.reference                      # held-out real images scored as if they were samples
    row, copying = judge.score(samples)  # every column for one model (+ the memorisation arrays)
    markdown_table(rows, notes), csv_text(rows)

The held-out rule.  Of the data's images (in the loader's order) every fifth, index % 5 == 4, is
"held out" and the others are "training" images: the split train_vqvae.py trains with.  Every
model is scored against those same two sets, whatever it was trained on, so the rows of one table
compare like with like.  DCGAN and StyleGAN train on all images (split "all"), so for them the
held-out images were training images too; a row records that (saw_heldout) and the table says it
in a footnote: such a model could copy a held-out image without its memorisation numbers showing
it (they measure closeness to the training set, which lacks that image).

How many images.  Precision, recall, density and coverage depend on how many images are scored
(more samples: smaller balls; see coverage.expected_coverage).  SampleJudge therefore scores a
model on subsets of as many samples as there are held-out images (the mean over 10 seeded
subsets), so that the model rows are comparable with the reference row.  Here the held-out set is
also capped at the number of samples (a seeded random subset of it when the data has more
held-out images than there are samples), so that with n samples every row is scored on
min(n, held-out) images; and the training set is capped at max_train images (a seeded random
subset), which bounds the cost of SSIM against every training image.

The columns (key: header), each a mean over the scored images:
    nn_ssim          NN-SSIM: best SSIM of each image against the training images (evaluation/ssim.py)
    pairwise_ssim    mean SSIM between distinct images of the set (collapse: much higher than real)
    precision, recall, density, coverage, kid (+ kid_std)
                     on PCA features of the training images (evaluation/features.py)
    copy_fraction, closer_than_heldout, distance_ratio
                     RMS pixel distance to the nearest training image, held-out images as the
                     yardstick (evaluation/memorisation.py)
"""
import numpy as np

from data import split_held_out, to_float
from evaluation.coverage import NEAREST_K
from evaluation.features import PixelFeatures
from evaluation.memorisation import memorisation
from evaluation.sample_quality import PRDC_REPEATS, SampleJudge
from evaluation.ssim import nearest_neighbour_ssim, pairwise_ssim

MAX_TRAIN = 2000
MAX_PAIRS = 5000                          # pairwise SSIM: at most this many random pairs
HOLDS_OUT = ("vqvae",)                    # models whose training script leaves those images out

COLUMNS = [   # (key, header, the space the column is measured in)
    ("nn_ssim", "NN-SSIM", "pixels: SSIM"),
    ("pairwise_ssim", "pairwise SSIM", "pixels: SSIM"),
    ("precision", "precision", "PCA features"),
    ("recall", "recall", "PCA features"),
    ("density", "density", "PCA features"),
    ("coverage", "coverage", "PCA features"),
    ("kid", "KID", "PCA features"),
    ("copy_fraction", "copy fraction", "pixels: RMS"),
    ("closer_than_heldout", "closer than held-out", "pixels: RMS"),
    ("distance_ratio", "distance ratio", "pixels: RMS"),
]
DIGITS = 3
SAW_HELDOUT_NOTE = ("held-out slices were in this run's training data: its memorisation figures "
                    "compare against images it has seen (a copy of a held-out slice is not "
                    "flagged)")
OTHER_DATA_NOTE = "this run was trained on other data than the real images of this table"


def saw_heldout(model):
    """Did a run of this model, trained on these data, see the held-out images? (VQ-VAE: no.)"""
    return model not in HOLDS_OUT


def minimum_images():
    """The fewest samples (and held-out images) the k-nearest-neighbour metrics accept: k + 1."""
    return NEAREST_K + 1


def real_sets(images_uint8, n_samples, max_train=MAX_TRAIN, seed=0):
    """Training and held-out images (float32 (N, 1, S, S) in [-1, 1]) for scoring n samples.

    The held-out images are capped at n_samples and the training images at max_train, each by a
    seeded random subset kept in data order (see the module docstring).
    """
    train, heldout = split_held_out(np.asarray(images_uint8))
    rng = np.random.default_rng([seed, 7])
    if len(heldout) > n_samples:
        heldout = heldout[np.sort(rng.choice(len(heldout), n_samples, replace=False))]
    if len(train) > max_train:
        train = train[np.sort(rng.choice(len(train), max_train, replace=False))]
    if len(heldout) < minimum_images() or len(train) < minimum_images():
        raise ValueError(f"the metrics need at least {minimum_images()} held-out and training "
                         f"images (every fifth image is held out); the data give "
                         f"{len(heldout)} held-out and {len(train)} training images")
    return to_float(train)[:, None], to_float(heldout)[:, None]


class Judge:
    """The real images and everything computed from them once; score() any set of samples."""

    def __init__(self, train, heldout, seed=0):
        self.train, self.heldout, self.seed = train, heldout, seed
        self.samples = SampleJudge(train, heldout, seed=seed)
        self.reference = self._ssim(heldout)
        self.reference.update(self.samples.reference)

    def _ssim(self, images):
        return {"nn_ssim": float(nearest_neighbour_ssim(images, self.train).mean()),
                "pairwise_ssim": pairwise_ssim(images, max_pairs=MAX_PAIRS, seed=self.seed)}

    def score(self, samples):
        """(row, copying): the table's numbers for samples (M, 1, S, S) in [-1, 1], M > k, and the
        memorisation() result behind them (for plot_memorisation)."""
        row = self._ssim(samples)
        row.update(self.samples.score(samples))
        copying = memorisation(self.samples.train_pixels, self.samples.heldout_pixels,
                               PixelFeatures().transform(samples))
        return row, copying

    def describe(self):
        """The notes under the table: which images, which feature space, how many."""
        return [
            f"real images: {len(self.train)} training and {len(self.heldout)} held-out images "
            f"(image i is held out when i % 5 == 4), {self.train.shape[-1]}x{self.train.shape[-1]}",
            "NN-SSIM against the training images and pairwise SSIM among the set's own images: "
            "on pixels (SSIM, 11x11 Gaussian window)",
            f"precision, recall, density, coverage (k = {NEAREST_K}) and KID: on PCA features "
            f"of the training images (d = {self.samples.extractor.dims}, fitted once; "
            "docs/metrics.md says what they cannot see, e.g. blur)",
            f"precision, recall, density and coverage of a model: on {len(self.heldout)} samples "
            f"(as many as held-out images; the mean over {PRDC_REPEATS} random subsets when "
            "there are more), so they are comparable with the reference row",
            "KID: mean +- standard deviation over random subsets",
            "copy fraction, closer than held-out and distance ratio: RMS pixel distance to the "
            "nearest training image, with the held-out images as the yardstick (reference row: "
            "about 0.05, 0.5 and 1 by construction)",
        ]


def format_value(key, row):
    """One cell: the number with DIGITS decimals; KID with its standard deviation."""
    value = row.get(key)
    if value is None:
        return ""
    text = f"{value:.{DIGITS}f}"
    if key == "kid" and "kid_std" in row:
        text += f" +- {row['kid_std']:.{DIGITS}f}"
    return text


def markdown_table(rows, notes=()):
    """Rows (dicts with "label", optional "step", "marks" and the column keys) as Markdown under
    a row that names each column's space, then the notes as a numbered list; a row's marks (note
    numbers) are written after its label as [n]."""
    header = ["", "step"] + [title for _, title, _ in COLUMNS]
    spaces = ["*measured on*", ""] + [f"*{space}*" for _, _, space in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |",
             "| " + " | ".join(spaces) + " |"]
    for row in rows:
        label = row["label"] + "".join(f" [{mark}]" for mark in row.get("marks", ()))
        cells = [label, str(row.get("step", ""))] + [format_value(k, row) for k, _, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def csv_text(rows):
    """Rows as CSV with full precision: label, model, step, marks, then every metric."""
    keys = ["label", "model", "path", "step", "n_images", "saw_heldout", "other_data"]
    keys += [k for k, _, _ in COLUMNS] + ["kid_std", "prdc_images", "feature_dims"]
    lines = [",".join(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key, "")
            text = repr(value) if isinstance(value, float) else str(value)
            cells.append('"' + text.replace('"', '""') + '"' if "," in text or '"' in text
                         else text)
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def plot_rows(rows, path, per_row=8):
    """One figure: a row of up to per_row images for each (label, images (N, 1, S, S) in [-1, 1]),
    the label written above the row's first image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(per_row * 1.2, len(rows) * 1.45 + 0.1), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), per_row, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.asarray(images[c, 0]), cmap="gray", vmin=-1, vmax=1)
        axes[r, 0].set_title(label, loc="left", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / (len(rows) * 1.45),
                        wspace=0.05, hspace=0.3)
    fig.savefig(path)
    return path
