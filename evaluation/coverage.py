"""Precision, recall, density and coverage: k-nearest-neighbour balls around feature vectors.

Real features X = {x_1..x_N} (the training images), generated features Y = {y_1..y_M}, both
rows of float64 arrays from the same extractor (evaluation/features.py).  Around each point put
a ball whose radius is the distance to its k-th nearest neighbour in its own set, not counting
the point itself:

    r_k(x_i) = k-th smallest of { |x_i - x_l| : l != i }          (the same for Y)

The balls of X are an estimate of the region where real images live, those of Y of where samples
live.  With 1[.] the indicator (1 if true, else 0):

  precision (Kynkaanniemi et al. 2019, "Improved precision and recall metric for assessing
  generative models", NeurIPS): the fraction of samples inside at least one real ball,
      P = (1/M) sum_j 1[ exists i: |y_j - x_i| < r_k(x_i) ]             (fidelity)
  recall (same paper): the fraction of real images inside at least one sample ball,
      R = (1/N) sum_i 1[ exists j: |x_i - y_j| < r_k(y_j) ]             (diversity)
  density (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models",
  ICML): how many real balls hold each sample, counted, divided by k,
      D = (1/(k M)) sum_j sum_i 1[ |y_j - x_i| < r_k(x_i) ]
  It is about 1 when Y is distributed like X, above 1 when samples crowd into dense real regions,
  and not fooled by one real outlier with a huge ball the way precision is.
  coverage (same paper): the fraction of real images whose own ball holds at least one sample,
      C = (1/N) sum_i 1[ min_j |x_i - y_j| < r_k(x_i) ]
  It uses only real balls, so an outlier sample cannot inflate it the way it inflates recall.

Coverage has a known answer for a perfect model (Naeem et al. 2020, Lemma 2): when Y is drawn
from the same distribution as X, the k nearest neighbours of x_i among the other N - 1 real and
the M generated points are equally likely to be any of them, and x_i is uncovered when all k are
real, so
    E[C] = 1 - prod_{i=1..k} (N - i) / (N + M - i)        (expected_coverage)
which is 1 - 2^-k ~ 0.97 for M = N but only 0.68 for N = 106 real and M = 26 generated images.

k = 5 as in both papers.  The comparison is strict (<) as in Naeem et al.'s reference code, so
that identical sets give density exactly 1 when there are no ties: each real ball then holds its
centre and k - 1 neighbours.  The numbers depend on the set sizes (the more points, the smaller the
balls), so compare models with the same numbers of real and generated images.

Distances are exact: all pairs at once from one matrix product,
    |a - b|^2 = |a|^2 - 2 a.b + |b|^2,  clipped at 0 (rounding can make it slightly negative).
Memory: an (N, M) float64 matrix (2,000 x 1,000 is 16 MB); the radii are computed in row blocks.
"""
import numpy as np

NEAREST_K = 5
ROW_BLOCK = 1024


def as_features(x, name="features"):
    """A 2-D float64 array (N, d) of finite values."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a (N, d) array of feature rows, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def squared_distances(a, b):
    """(len(a), len(b)) matrix of |a_i - b_j|^2 = |a_i|^2 - 2 a_i.b_j + |b_j|^2, clipped at 0."""
    d = (a ** 2).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + (b ** 2).sum(axis=1)[None, :]
    return np.maximum(d, 0.0, out=d)


def kth_neighbour_radii(x, k=NEAREST_K):
    """r_k(x_i): distance from each row to its k-th nearest other row (itself excluded by index)."""
    x = as_features(x)
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} points for k-th neighbour radii, got {len(x)}")
    radii = np.empty(len(x))
    for i0 in range(0, len(x), ROW_BLOCK):
        block = squared_distances(x[i0:i0 + ROW_BLOCK], x)
        rows = np.arange(len(block))
        block[rows, i0 + rows] = np.inf                  # a point is not its own neighbour
        radii[i0:i0 + ROW_BLOCK] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return np.sqrt(radii)


def expected_coverage(n_real, n_fake, k=NEAREST_K):
    """E[coverage] when fake and real come from one distribution: 1 - prod (N - i)/(N + M - i)."""
    i = np.arange(1, k + 1)
    return float(1.0 - np.prod((n_real - i) / (n_real + n_fake - i)))


def prdc(real, fake, k=NEAREST_K, real_radii=None):
    """Precision, recall, density and coverage of fake features against real ones, as a dict.

    real: (N, d), fake: (M, d) float feature rows, N and M both above k.  real_radii: the
    k-th neighbour radii of `real` if already computed (they depend on the real set only).
    """
    real, fake = as_features(real, "real"), as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, fake {fake.shape[1]}")
    if real_radii is None:
        real_radii = kth_neighbour_radii(real, k)
    fake_radii = kth_neighbour_radii(fake, k)
    distance = np.sqrt(squared_distances(real, fake))       # (N, M): real i to fake j
    in_real_ball = distance < real_radii[:, None]           # fake j inside the ball of real i
    in_fake_ball = distance < fake_radii[None, :]           # real i inside the ball of fake j
    return {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float(in_fake_ball.any(axis=1).mean()),
        "density": float(in_real_ball.sum() / (k * len(fake))),
        "coverage": float(in_real_ball.any(axis=1).mean()),
    }
