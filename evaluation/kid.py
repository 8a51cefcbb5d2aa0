"""Kernel Inception Distance's estimator, on any features (Binkowski et al. 2018,
"Demystifying MMD GANs", ICLR).

KID is the squared maximum mean discrepancy (MMD^2) between the real and the generated feature
distributions, with the cubic polynomial kernel

    k(x, y) = (x.y / d + 1)^3                          (d: the feature dimension)

MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y), with x, x' independent real features and y, y'
generated ones; it is 0 exactly when the two distributions have the same moments up to third
order (what this kernel can see), and positive otherwise.  Its unbiased estimator from real rows
X (m of them) and generated rows Y (n) leaves out the i = j terms:

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
              - 2/(m n) sum_{i, j} k(x_i, y_j)

Being unbiased, it can come out slightly negative when the distributions agree; its expectation
does not depend on the set sizes, unlike FID's or the k-NN metrics'.  KID averages MMD^2_u over
n_subsets random subsets of subset_size rows drawn (without replacement) from each set, and
reports the mean and the standard deviation over subsets (how much the subset draw moves it).

The kernel's scale matters: the name comes from Inception features, here it is computed on the
features of evaluation/features.py (PCA features are scaled so that x.y / d is of order 1).
Values from different feature spaces are not comparable.
"""
import numpy as np

from evaluation.coverage import as_features


def polynomial_kernel(x, y):
    """Matrix of k(x_i, y_j) = (x_i.y_j / d + 1)^3 for rows x (m, d) and y (n, d)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """The unbiased MMD^2 estimator above: real rows x (m >= 2), generated rows y (n >= 2)."""
    x, y = as_features(x, "x"), as_features(y, "y")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD^2 needs at least two rows in each set, got {m} and {n}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    between = polynomial_kernel(x, y).mean()
    return float(within_x + within_y - 2.0 * between)


def kid(real, fake, subset_size=1000, n_subsets=100, seed=0):
    """KID of fake features against real ones: (mean, std) of MMD^2_u over random subsets.

    subset_size is capped at the smaller set's size (so tiny sets still give a number; with
    subset_size equal to both sizes every subset is the whole set and std is 0).  The subsets
    are drawn from np.random.default_rng(seed), so the result is reproducible.
    """
    real, fake = as_features(real, "real"), as_features(fake, "fake")
    size = min(int(subset_size), len(real), len(fake))
    if size < 2 or n_subsets < 1:
        raise ValueError(f"KID needs subsets of at least 2 rows and n_subsets >= 1, got "
                         f"{size} rows (sets of {len(real)} and {len(fake)}), {n_subsets} subsets")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                            fake[rng.choice(len(fake), size, replace=False)])
              for _ in range(int(n_subsets))]
    return float(np.mean(values)), float(np.std(values))
