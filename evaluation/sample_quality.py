"""Every sample-quality number for a set of generated images, next to the "as good as real" row.

    judge = SampleJudge(train_images, heldout_images)  # (N, 1, H, W) in [-1, 1]; fits PCA once
    judge.reference            # flat dict: held-out real images scored against the training images
    judge.score(samples)       # the same keys for generated images

    sample_quality(train_images, heldout_images, samples)
        # one flat dict: the samples' keys, and "heldout_" + key for the reference row

Keys (all plain floats or ints, ready for metrics.jsonl or a table row):
    precision, recall, density, coverage   k-NN balls in PCA features (evaluation/coverage.py)
    kid, kid_std                           unbiased MMD^2, cubic kernel, PCA features (kid.py)
    copy_fraction, closer_than_heldout, distance_ratio
                                           nearest-training distances in pixel space, with the
                                           held-out images as yardstick (evaluation/memorisation.py)
    n_images, prdc_images, feature_dims

The real set of every comparison is the training set: the images the model was fitted to.  The
reference row scores the held-out real images exactly as a model's samples are scored, so it shows
what a perfect model of the data would get with that many images; its memorisation numbers are
the yardstick compared with itself (copy_fraction about 0.05, closer_than_heldout 0.5,
distance_ratio 1).

Precision, recall, density and coverage depend on how many images are scored (more samples: more,
smaller balls; see expected_coverage in coverage.py), so for a model they are the average over
prdc_repeats seeded random subsets of as many samples as there are held-out images (prdc_images):
that keeps a model's row comparable with the reference row.  Give at least that many samples.
KID and the memorisation numbers do not depend on the set size in expectation and use them all.
"""
import numpy as np

from evaluation.coverage import NEAREST_K, kth_neighbour_radii, prdc
from evaluation.features import DEFAULT_DIMS, PCAFeatures, PixelFeatures, check_images
from evaluation.kid import kid
from evaluation.memorisation import memorisation

KID_SUBSET_SIZE, KID_SUBSETS = 1000, 100
PRDC_REPEATS = 10


class SampleJudge:
    """The real images, their features and k-NN radii, computed once; score() any set of samples.

    extractor: None for PCA of the training images with `dims` components (features.py), or any
    object with transform(images) -> (N, d), already fitted.
    """

    def __init__(self, train_images, heldout_images, extractor=None, dims=DEFAULT_DIMS,
                 k=NEAREST_K, kid_subset_size=KID_SUBSET_SIZE, kid_subsets=KID_SUBSETS,
                 prdc_repeats=PRDC_REPEATS, seed=0):
        train_images = check_images(train_images, "train_images")
        heldout_images = check_images(heldout_images, "heldout_images")
        if train_images.shape[1:] != heldout_images.shape[1:]:
            raise ValueError(f"training images are {train_images.shape[1:]}, held-out images "
                             f"{heldout_images.shape[1:]}")
        if len(heldout_images) <= k or len(train_images) <= k:
            raise ValueError(f"the k-NN metrics need more than k = {k} training and held-out "
                             f"images, got {len(train_images)} and {len(heldout_images)}")
        self.extractor = extractor if extractor is not None else \
            PCAFeatures().fit(train_images, dims)
        self.k, self.seed, self.prdc_repeats = k, seed, prdc_repeats
        self.n_heldout = len(heldout_images)
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.image_shape = train_images.shape[1:]
        self.train_features = self.extractor.transform(train_images)
        self.train_radii = kth_neighbour_radii(self.train_features, k)
        self.train_pixels = PixelFeatures().transform(train_images)
        self.heldout_pixels = PixelFeatures().transform(heldout_images)
        self.reference = self._score(heldout_images, self.heldout_pixels)

    def score(self, samples):
        """The flat dict of the module docstring for (M, 1, H, W) samples in [-1, 1], M > k."""
        samples = check_images(samples, "samples")
        if samples.shape[1:] != self.image_shape:
            raise ValueError(f"samples are {samples.shape[1:]}, the real images "
                             f"{self.image_shape}: resize one of them")
        return self._score(samples, PixelFeatures().transform(samples))

    def _score(self, images, pixels):
        features = self.extractor.transform(images)
        row = self._prdc(features)
        row["kid"], row["kid_std"] = kid(self.train_features, features, self.kid_subset_size,
                                         self.kid_subsets, self.seed)
        copying = memorisation(self.train_pixels, self.heldout_pixels, pixels)
        for key in ("copy_fraction", "closer_than_heldout", "distance_ratio"):
            row[key] = copying[key]
        row["n_images"], row["feature_dims"] = int(len(images)), int(features.shape[1])
        return row

    def _prdc(self, features):
        """prdc() of all the features, or its mean over subsets of n_heldout of them."""
        size = min(len(features), self.n_heldout)
        if size == len(features):
            return dict(prdc(self.train_features, features, self.k, self.train_radii),
                        prdc_images=size)
        rng = np.random.default_rng(self.seed)
        rows = [prdc(self.train_features, features[rng.choice(len(features), size, replace=False)],
                     self.k, self.train_radii) for _ in range(self.prdc_repeats)]
        return dict({key: float(np.mean([r[key] for r in rows])) for key in rows[0]},
                    prdc_images=size)


def sample_quality(train_images, heldout_images, samples, **options):
    """One flat dict: the samples' numbers, then the reference row's under "heldout_" + key.

    options: those of SampleJudge (extractor, dims, k, kid_subset_size, kid_subsets,
    prdc_repeats, seed).
    """
    judge = SampleJudge(train_images, heldout_images, **options)
    result = judge.score(samples)
    result.update({"heldout_" + key: value for key, value in judge.reference.items()})
    return result
