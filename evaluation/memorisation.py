"""Memorisation: are the samples closer to the training images than new real images are?

A model that copies its training images makes samples that lie almost on top of a training
image.  Being close to a training image is not suspicious in itself (real brains look alike), so
the yardstick is real images the model never saw: the held-out images.  In any space of rows
(pixels: PixelFeatures; or a feature space) with D coordinates,

    dist(a, b) = sqrt( (1/D) sum_p (a_p - b_p)^2 )     root-mean-square difference per coordinate
                                                       (for pixels, in units of the [-1, 1] range)
    d_S(s) = min_t dist(s, t)   for each sample s,    t*(s) = the training image attaining it
    d_H(h) = min_t dist(h, t)   for each held-out real image h
    tau    = the 5th percentile of the d_H values

and three summary numbers:

    copy_fraction = (1/M) sum_s 1[ d_S(s) < tau ]
        about 0.05 when samples are as new as held-out images are; near 1 for a copier.
    closer_than_heldout = (1/(M H)) sum_{s, h} ( 1[d_S(s) < d_H(h)] + 1/2 1[d_S(s) = d_H(h)] )
        the probability that a random sample is closer to the training set than a random
        held-out image (the Mann-Whitney U statistic divided by M H, the global form of the
        data-copying test of Meehan, Chaudhuri & Dasgupta 2020, "A non-parametric test to detect
        data-copying in generative models", AISTATS).  0.5: as new as real images; towards 1:
        copying; towards 0: samples farther from every training image than real images are
        (poor fidelity, or a different kind of image).
    distance_ratio = median_s d_S(s) / median_h d_H(h)    (below 1: closer than real images)

The figure (plot_memorisation), one PNG:
  * left: the two cumulative distributions of nearest-training distances, x = distance d,
    y = fraction of images whose nearest training image is closer than d; grey = held-out real
    images, colour = samples; a dashed vertical line at tau.  Where the sample curve crosses the
    dashed line is copy_fraction.  A copier's curve rises far to the left of the grey one.
  * right: two rows of images; top: the n most-copied samples (smallest d_S, most-copied first),
    bottom: the nearest training image t*(s) of each, with d_S written above the pair.
    Near-identical pairs are copies.

Costs one (M, N) distance matrix per block of training rows and one (M, H) comparison matrix.
"""
import os

import numpy as np

from evaluation.coverage import as_features, squared_distances
from nn.backend import to_numpy

PERCENTILE = 5.0
TRAIN_BLOCK = 2048


def nearest_training(queries, train):
    """(distances, indices): RMS distance of each query row to its nearest training row."""
    queries, train = as_features(queries, "queries"), as_features(train, "train")
    if queries.shape[1] != train.shape[1]:
        raise ValueError(f"rows of {queries.shape[1]} and {train.shape[1]} coordinates")
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), dtype=np.int64)
    for t0 in range(0, len(train), TRAIN_BLOCK):
        block = squared_distances(queries, train[t0:t0 + TRAIN_BLOCK])
        candidate = block.argmin(axis=1)
        value = block[np.arange(len(queries)), candidate]
        better = value < best
        best[better], index[better] = value[better], t0 + candidate[better]
    return np.sqrt(best / train.shape[1]), index


def closer_fraction(a, b):
    """P(a < b) + P(a = b) / 2 over all pairs (a_i, b_j).

    This is U / (len(a) len(b)), with U the Mann-Whitney statistic counting pairs where b > a.
    """
    a, b = np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[None, :]
    return float(((a < b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def memorisation(train, heldout, samples, percentile=PERCENTILE, n_most_copied=8):
    """Nearest-training distances of samples and of held-out images, and the summary numbers.

    train (N, D), heldout (H, D), samples (M, D): rows in the same space.  Returns a dict with
    the numbers of the module docstring (floats) and the arrays behind them: sample_distances,
    sample_nearest, heldout_distances, heldout_nearest, and most_copied (indices of the
    n_most_copied samples with the smallest d_S, most-copied first).
    """
    d_samples, nearest_samples = nearest_training(samples, train)
    d_heldout, nearest_heldout = nearest_training(heldout, train)
    threshold = float(np.percentile(d_heldout, percentile))
    median_heldout = float(np.median(d_heldout))
    return {
        "copy_fraction": float((d_samples < threshold).mean()),
        "closer_than_heldout": closer_fraction(d_samples, d_heldout),
        "distance_ratio": float(np.median(d_samples) / median_heldout) if median_heldout > 0
        else float("inf"),
        "threshold": threshold,
        "percentile": float(percentile),
        "sample_distances": d_samples, "sample_nearest": nearest_samples,
        "heldout_distances": d_heldout, "heldout_nearest": nearest_heldout,
        "most_copied": np.argsort(d_samples, kind="stable")[:n_most_copied],
    }


def _cumulative(ax, distances, **style):
    values = np.sort(distances)
    ax.step(np.r_[values[0], values], np.r_[0.0, np.arange(1, len(values) + 1) / len(values)],
            where="post", **style)


def plot_memorisation(result, samples, train, path, title="memorisation"):
    """Write the module docstring's figure; result of memorisation(), images (N, 1, H, W)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = result["most_copied"]
    samples, train = to_numpy(samples), to_numpy(train)
    fig = Figure(figsize=(4 + 1.3 * max(len(shown), 1), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, len(shown) + 3)
    ax = fig.add_subplot(grid[:, :3])
    _cumulative(ax, result["heldout_distances"], color="0.5", label="held-out real")
    _cumulative(ax, result["sample_distances"], color="C3", label="samples")
    ax.axvline(result["threshold"], color="k", linestyle="--", linewidth=1,
               label=f"{result['percentile']:g}th pct. of held-out")
    ax.set_xlabel("RMS distance to nearest training image")
    ax.set_ylabel("fraction of images")
    ax.set_title(f"{title}: copy fraction {result['copy_fraction']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    for column, s in enumerate(shown):
        pair = (samples[s, 0], train[result["sample_nearest"][s], 0])
        for row, image in enumerate(pair):
            cell = fig.add_subplot(grid[row, column + 3])
            cell.imshow(np.asarray(image), cmap="gray", vmin=-1, vmax=1)
            cell.set_xticks([])
            cell.set_yticks([])
            if row == 0:
                cell.set_title(f"{result['sample_distances'][s]:.3f}", fontsize=8)
        if column == 0:
            fig.axes[-2].set_ylabel("sample", fontsize=8)
            fig.axes[-1].set_ylabel("nearest train", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path
