"""Time the one scoring of a run's samples (evaluation/report.py `score_run`, what every training
script does once at its end and compare.py does per model) on an OASIS-sized data set.

    python benchmarks/bench_scoring.py                        # 10,400 slices of 256x256, 64 samples
    python benchmarks/bench_scoring.py --images 132 --size 64 # the bundled set's size

The real images are the bundled slices scaled to --size and repeated with small random shifts and
brightness changes up to --images (SSIM's cost does not depend on what the pixels show); the
"samples" are other such slices plus noise. Prints the seconds of each part: the real sets
(held-out rule and caps), the reference row (held-out slices against the training images), and
the samples' row (nearest-neighbour and pairwise SSIM, the feature space, precision/recall/
density/coverage, KID, memorisation).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
from benchmarks.machine import blas_description, cpu_model  # noqa: E402
from evaluation.comparison import MAX_TRAIN, Judge, real_sets  # noqa: E402


def synthetic_set(n, size, seed=0):
    """n uint8 slices (n, size, size): the bundled ones at `size`, shifted and rescaled."""
    base = data.load_images(None, image_size=size).images
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(len(base), size=n)].astype(np.float32)
    shifts = rng.integers(-3, 4, size=(n, 2))
    gains = rng.uniform(0.85, 1.15, size=n).astype(np.float32)
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        image = np.roll(picks[i], tuple(shifts[i]), axis=(0, 1)) * gains[i]
        out[i] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10400, help="real slices (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="pixels a side (default: %(default)s)")
    p.add_argument("--samples", type=int, default=64, help="default: %(default)s")
    p.add_argument("--metrics-real", type=int, default=MAX_TRAIN,
                   help="training images scored against (default: %(default)s)")
    args = p.parse_args()

    t0 = time.perf_counter()
    images = synthetic_set(args.images, args.size)
    samples = synthetic_set(args.samples, args.size, seed=1).astype(np.float32) / 127.5 - 1
    samples += np.random.default_rng(2).normal(0, 0.05, samples.shape).astype(np.float32)
    samples = samples[:, None]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {blas_description()}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{args.images} real slices of {args.size}x{args.size} made in "
          f"{time.perf_counter() - t0:.1f} s (not part of the scoring)")

    t = time.perf_counter()
    train, heldout = real_sets(images, args.samples, max_train=args.metrics_real)
    sets = time.perf_counter() - t
    t = time.perf_counter()
    judge = Judge(train, heldout)
    reference = time.perf_counter() - t
    t = time.perf_counter()
    row, _ = judge.score(samples)
    scored = time.perf_counter() - t
    print(f"real sets: {len(train)} training, {len(heldout)} held-out images: {sets:.1f} s")
    print(f"reference row (held-out slices; feature space fitted): {reference:.1f} s")
    print(f"the samples' row ({args.samples} samples): {scored:.1f} s "
          f"(NN-SSIM {row['nn_ssim']:.3f})")
    print(f"scoring in all: {sets + reference + scored:.1f} s")


if __name__ == "__main__":
    main()
