"""PCA and t-SNE from scratch in NumPy, and a scatter plot of the result.

Used to look at generated images next to real ones (and AD next to NC): flatten each image to a
row of x, embed the rows in 2-D, plot one colour per group.

    x = np.concatenate([real.reshape(len(real), -1), fake.reshape(len(fake), -1)])
    points = tsne(x)
    plot_embedding(points, ["real"] * len(real) + ["generated"] * len(fake), "embedding.png")

or all at once, PCA and t-SNE of named groups of images:

    plot_groups({"real": real, "generated": fake}, folder, "StyleGAN 64x64")
"""
import os

import numpy as np

from evaluation.coverage import squared_distances
from experiment.files import atomic_write


def pca(x, n_components=50):
    """Principal component analysis by an economy SVD of the centred data.

    x: (N, D).  With xc = x - mean(x) = U S V^T (singular values s_1 >= s_2 >= ...):
        projected = xc V_k = U_k S_k                      (N, k), k = min(n_components, N, D)
        explained_variance_ratio_i = s_i^2 / sum_j s_j^2   (share of the total variance)
    When D > N (flattened images) the small N x N Gram matrix gives the same U and S much
    faster: xc xc^T = U S^2 U^T, and V_k^T = S_k^-1 U_k^T xc.
    Signs are fixed so that the largest-magnitude entry of every principal axis (row of V^T) is
    positive, so the result does not depend on the LAPACK build.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pca expects a (N, D) matrix, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    k = min(int(n_components), *x.shape)
    total = (centred ** 2).sum()                        # = sum of all s_j^2
    if x.shape[1] > x.shape[0]:
        eigenvalues, u = np.linalg.eigh(centred @ centred.T)
        s = np.sqrt(np.maximum(eigenvalues[::-1][:k], 0.0))
        u = u[:, ::-1][:, :k]
        vt = (u / np.where(s > 0, s, 1.0)).T @ centred
    else:
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
        u, s, vt = u[:, :k], s[:k], vt[:k]
    signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    ratio = s ** 2 / total if total > 0 else np.zeros(k)
    return u * (s * signs), ratio


def conditional_probabilities(d, perplexity, tol=1e-5, max_steps=100):
    """p_{j|i} = exp(-beta_i D_ij) / sum_{k != i} exp(-beta_i D_ik), beta_i = 1 / (2 sigma_i^2).

    beta_i is found by bisection (all points at once) so that the entropy
    H_i = -sum_j p_{j|i} log p_{j|i} = log(sum_j e_ij) + beta_i sum_j D_ij e_ij / sum_j e_ij
    equals log(perplexity) (natural logs; e_ij = exp(-beta_i D_ij)).  Distances are shifted by
    each row's smallest one first, which changes nothing but avoids underflow.
    """
    n = len(d)
    off_diagonal = ~np.eye(n, dtype=bool)
    d = np.where(off_diagonal, d, np.inf)
    d = d - d.min(axis=1, keepdims=True)
    d[~off_diagonal] = 0.0
    target = np.log(perplexity)
    beta = np.ones(n)
    low, high = np.zeros(n), np.full(n, np.inf)
    for _ in range(max_steps):
        e = np.exp(-beta[:, None] * d) * off_diagonal
        total = e.sum(axis=1)
        entropy = np.log(total) + beta * (d * e).sum(axis=1) / total
        too_flat = entropy > target          # entropy too high: sharpen, i.e. increase beta
        if np.all(np.abs(entropy - target) < tol):
            break
        low = np.where(too_flat, beta, low)
        high = np.where(too_flat, high, beta)
        beta = np.where(np.isinf(high), beta * 2.0, (low + high) / 2.0)
    return e / total[:, None]


def joint_probabilities(x, perplexity):
    """Symmetrised input similarities p_ij = (p_{j|i} + p_{i|j}) / 2N (they sum to 1)."""
    d = squared_distances(x, x)                       # |x_i - x_j|^2 (evaluation/coverage.py)
    np.fill_diagonal(d, 0.0)                          # exactly 0, whatever the rounding
    p = conditional_probabilities(d, perplexity)
    p = (p + p.T) / (2.0 * len(p))
    return np.maximum(p, 1e-12)


def student_t_weights(y, out=None):
    """w_ij = (1 + |y_i - y_j|^2)^-1 with w_ii = 0, computed in place on one (N, N) array."""
    sq = (y ** 2).sum(axis=1)
    w = np.matmul(y, np.ascontiguousarray(y.T), out=out)
    w *= -2.0
    w += (1.0 + sq)[:, None]
    w += sq[None, :]
    np.reciprocal(w, out=w)
    np.fill_diagonal(w, 0.0)
    return w


def tsne_gradient(p, y, work=None):
    """Gradient of KL(P || Q) for the Student-t embedding (van der Maaten & Hinton 2008):

        w_ij = (1 + |y_i - y_j|^2)^-1,   q_ij = w_ij / sum_{k != l} w_kl
        dC/dy_i = 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j)
                = 4 (y_i sum_j a_ij - sum_j a_ij y_j),   a_ij = (p_ij - q_ij) w_ij
    work: optional pair of (N, N) float64 buffers, reused between steps (allocating two fresh
    N^2 arrays every step costs almost as much as the arithmetic).
    """
    w_buffer, a_buffer = work if work is not None else (None, None)
    w = student_t_weights(y, out=w_buffer)
    a = np.multiply(w, 1.0 / w.sum(), out=a_buffer)    # q
    np.subtract(p, a, out=a)                            # p - q
    a *= w
    return 4.0 * (a.sum(axis=1)[:, None] * y - a @ y)


def kl_divergence(p, y):
    """KL(P || Q) = sum_ij p_ij log(p_ij / q_ij), the cost t-SNE minimises (for diagnostics)."""
    w = student_t_weights(y)
    q = np.maximum(w / w.sum(), 1e-12)
    return float((p * np.log(p / q)).sum())


def tsne(x, n_components=2, perplexity=30.0, n_iter=1000, learning_rate=200.0,
         early_exaggeration=12.0, exaggeration_iters=250, seed=0, pca_dims=50):
    """Exact t-SNE (O(N^2) memory and time; fine up to a few thousand points).

    1. PCA to pca_dims dimensions (None: skip); perplexity is capped at (N - 1) / 3.
    2. p_ij from per-point Gaussians matched to the perplexity (see joint_probabilities).
    3. y ~ N(0, 1e-4^2), then gradient descent on KL(P || Q) with
         update = momentum * update - learning_rate * gains * gradient,  y += update,
       momentum 0.5 during the first exaggeration_iters steps (where P is multiplied by
       early_exaggeration) and 0.8 afterwards; per-coordinate gains grow by 0.2 where the
       gradient's sign differs from the last update's (the step keeps its direction) and shrink by
       x0.8 where they agree (floor 0.01), as in the reference implementation.  The embedding
       is re-centred every step.
    Returns y (N, n_components).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"tsne expects a (N, D) matrix with N >= 2, got shape {x.shape}")
    if pca_dims is not None and x.shape[1] > pca_dims:
        x, _ = pca(x, pca_dims)
    perplexity = min(float(perplexity), (len(x) - 1) / 3.0)
    p = joint_probabilities(x, perplexity)

    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-4, size=(len(x), n_components))
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    p_exaggerated = p * early_exaggeration
    work = (np.empty_like(p), np.empty_like(p))
    for step in range(n_iter):
        exploring = step < exaggeration_iters
        gradient = tsne_gradient(p_exaggerated if exploring else p, y, work)
        momentum = 0.5 if exploring else 0.8
        same_sign = (gradient > 0) == (update > 0)
        gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
        update = momentum * update - learning_rate * gains * gradient
        y = y + update
        y -= y.mean(axis=0)
    return y


def plot_embedding(points, groups, path, title=""):
    """Scatter plot of 2-D points, one colour per group label (legend in order of appearance).

    Written with matplotlib's Agg canvas directly, so no display or global backend is needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.asarray(points, dtype=np.float64)
    groups = [str(g) for g in groups]
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {points.shape}")
    if len(groups) != len(points):
        raise ValueError(f"{len(groups)} group labels for {len(points)} points")
    labels = np.array(groups)

    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in dict.fromkeys(groups):           # unique labels, first-seen order
        chosen = points[labels == name]
        ax.scatter(chosen[:, 0], chosen[:, 1], s=8, alpha=0.7, label=f"{name} ({len(chosen)})")
    ax.legend(loc="best", markerscale=2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(path) as f:                # complete or absent, even if the run is killed
        fig.savefig(f, format="png")
    return path


def plot_groups(groups, folder, title, seed=0):
    """Two scatter plots of every image in `groups` (name -> array (N, ...)), pixels as vectors:
    the first two principal components (<folder>/embedding_pca.png) and t-SNE of the first 50
    (<folder>/embedding_tsne.png). Returns the two paths."""
    names = list(groups)
    flat = np.concatenate([groups[name].reshape(len(groups[name]), -1) for name in names])
    labels = [name for name in names for _ in range(len(groups[name]))]
    pca_points, ratio = pca(flat, 2)
    pca_path = plot_embedding(pca_points, labels, os.path.join(folder, "embedding_pca.png"),
                              f"{title}: PCA ({100 * ratio.sum():.0f}% of the variance)")
    tsne_path = plot_embedding(tsne(flat, seed=seed, pca_dims=50), labels,
                               os.path.join(folder, "embedding_tsne.png"), f"{title}: t-SNE of PCA-50")
    return pca_path, tsne_path


def pick_per_class(dataset, count, rng, name="real"):
    """{group name: indices} of up to `count` random images of each class of a data.ImageSet
    ("real AD", "real NC", ...), or {name: indices} when it has fewer than two classes."""
    if dataset.labels is None or len(dataset.class_names or []) < 2:
        return {name: rng.permutation(len(dataset))[:count]}
    return {f"real {class_name}": rng.permutation(np.flatnonzero(dataset.labels == label))[:count]
            for label, class_name in enumerate(dataset.class_names)}
