"""The learning curve: how good a generator's samples are, against the number of images shown.

    curve = LearningCurve(dataset.images, n_samples=64)   # real images at the final size, uint8
    point = curve.score(samples, resolution)              # samples (M, 1, R, R) in [-1, 1]
    run.log("curve", images=..., resolution=..., **point)
    plot_curve(points, "learning_curve.png")

Every point is scored the way compare.py scores a model (evaluation/comparison.py: the held-out
rule, NN-SSIM against the training images, precision / recall / coverage on PCA features), at the
final image size: samples of a lower resolution (an earlier phase of a progressive GAN) are scaled
up to it by repeating pixels. A blocky image scores differently from a sharp one, so each point
also carries the real slices' own scores at its resolution ("real_nn_ssim", "real_pairwise_ssim",
"real_recall", "real_coverage"): the held-out real slices shrunk to that resolution (box filter),
scaled up the same way and scored like samples, what a perfect model of that phase would score
(at 16x16: NN-SSIM 0.61, pairwise SSIM 0.37, recall 0.77, coverage 0.70 on the bundled set). A
dip at the start of a phase that these do not explain is the model's, not the measurement's.
"""
import numpy as np

from evaluation.comparison import Judge, real_sets
from evaluation.ssim import nearest_neighbour_ssim

KEYS = ("nn_ssim", "pairwise_ssim", "precision", "recall", "coverage")
REAL_KEYS = ("nn_ssim", "pairwise_ssim", "recall", "coverage")   # the real slices', per resolution


def shrink_and_enlarge(images, resolution):
    """(N, 1, S, S) box-filtered down to resolution R, then each pixel repeated back up to S."""
    factor = images.shape[-1] // resolution
    if factor == 1:
        return images
    n, c, s, _ = images.shape
    small = images.reshape(n, c, resolution, factor, resolution, factor).mean(axis=(3, 5))
    return small.repeat(factor, axis=2).repeat(factor, axis=3)


class LearningCurve:
    """The real images and the Judge fitted on them once; score() one set of samples per point."""

    def __init__(self, images_uint8, n_samples, seed=0):   # seed 0: as write_report scores
        self.train, self.heldout = real_sets(images_uint8, n_samples, seed=seed)
        self.size = self.train.shape[-1]
        self.judge = Judge(self.train, self.heldout, seed=seed)
        self.references = {}

    @classmethod
    def if_possible(cls, images_uint8, n_samples, seed=0):
        """A LearningCurve, or None (and a printed note) when there are too few samples or held-out
        images for the metrics (see evaluation/comparison.real_sets)."""
        try:
            return cls(images_uint8, n_samples, seed)
        except ValueError as error:
            print(f"no learning curve: {error}", flush=True)
            return None

    def reference(self, resolution):
        """The held-out slices at `resolution`, scaled up to the final size and scored like
        samples: {"real_nn_ssim": ..., "real_pairwise_ssim": ..., "real_recall": ...,
        "real_coverage": ...}."""
        if resolution not in self.references:
            row, _ = self.judge.score(shrink_and_enlarge(self.heldout, resolution))
            self.references[resolution] = {"real_" + key: round(float(row[key]), 4)
                                           for key in REAL_KEYS}
        return self.references[resolution]

    def score(self, samples, resolution):
        """{nn_ssim, pairwise_ssim, precision, recall, coverage} of samples (M, 1, R, R), M >= 6,
        R = resolution <= the final size, and the real slices' at R (`reference`)."""
        factor = self.size // samples.shape[-1]
        enlarged = samples.repeat(factor, axis=2).repeat(factor, axis=3)
        row, _ = self.judge.score(np.asarray(enlarged, dtype=np.float32))
        return {**{key: round(float(row[key]), 4) for key in KEYS}, **self.reference(resolution)}


def plot_curve(points, path, title="learning curve"):
    """NN-SSIM, recall and coverage against images shown (dots), the real slices' at the same
    resolution (dashed), and a vertical line where each resolution starts. points: dicts with "images", "resolution" and the
    keys of LearningCurve.score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from experiment.pictures import save_figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    images = [p["images"] for p in points]
    for key, colour in (("nn_ssim", "C0"), ("recall", "C1"), ("coverage", "C2")):
        axes.plot(images, [p[key] for p in points], "o-", color=colour, markersize=3, label=key)
        axes.plot(images, [p.get("real_" + key) for p in points], "--", color=colour, alpha=0.5)
    axes.plot([], [], "--", color="grey", label="real slices at that resolution")
    shown = None
    for p in points:
        if p["resolution"] != shown:
            shown = p["resolution"]
            axes.axvline(p["images"], color="grey", alpha=0.3)
            axes.text(p["images"], 1.01, f"{shown}px", fontsize=7, color="grey")
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("images shown to D")
    axes.set_ylabel("score (higher is better)")
    axes.set_title(title, pad=14)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
