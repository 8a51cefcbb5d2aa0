"""PCA, t-SNE and the embedding plot."""
import numpy as np
import pytest

from evaluation import embedding
from evaluation.coverage import squared_distances


def two_clusters(rng, n=150, dims=60, gap=6.0):
    """Two Gaussian clouds in `dims` dimensions, centres `gap` apart; labels 0 / 1."""
    labels = np.arange(n) % 2
    x = rng.standard_normal((n, dims))
    x[:, 0] += gap * labels
    return x, labels


def nearest_neighbour_accuracy(points, labels):
    d = squared_distances(points, points)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def test_pca_recovers_the_dominant_direction(rng):
    direction = rng.standard_normal(20)
    direction /= np.linalg.norm(direction)
    other = rng.standard_normal(20)
    other -= (other @ direction) * direction
    other /= np.linalg.norm(other)
    strong, weak = 5.0 * rng.standard_normal(300), rng.standard_normal(300)
    x = 3.0 + np.outer(strong, direction) + np.outer(weak, other)
    x += 1e-3 * rng.standard_normal((300, 20))

    projected, ratio = embedding.pca(x, n_components=3)
    assert projected.shape == (300, 3) and ratio.shape == (3,)
    assert abs(np.corrcoef(projected[:, 0], strong)[0, 1]) > 0.999
    assert abs(np.corrcoef(projected[:, 1], weak)[0, 1]) > 0.999
    assert ratio[0] == pytest.approx(25 / 26, abs=0.02) and ratio[:2].sum() > 0.999
    assert ratio[0] >= ratio[1] >= ratio[2]


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])      # SVD path, Gram-matrix path
def test_pca_explained_variance_and_signs(rng, shape):
    x = rng.standard_normal(shape) * np.linspace(1, 4, shape[1])
    k = min(shape) - 2
    projected, ratio = embedding.pca(x, n_components=k)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(projected), np.abs(u[:, :k] * s[:k]), atol=1e-9)
    np.testing.assert_allclose(ratio, s[:k] ** 2 / (s ** 2).sum(), atol=1e-12)
    np.testing.assert_allclose(projected.var(axis=0) / centred.var(axis=0).sum(), ratio, atol=1e-12)
    # sign convention: each axis's largest-magnitude loading is positive
    axes = centred.T @ projected                      # proportional to V, column by column
    assert np.all(axes[np.abs(axes).argmax(axis=0), np.arange(k)] > 0)
    full_projected, full_ratio = embedding.pca(x, n_components=100)   # k capped at min(N, D)
    assert full_projected.shape == (shape[0], min(shape))
    assert full_ratio.sum() == pytest.approx(1.0, abs=1e-9)


def test_conditional_probabilities_match_the_perplexity(rng):
    x = rng.standard_normal((120, 5)) * np.array([1, 1, 3, 0.1, 10])
    p = embedding.conditional_probabilities(squared_distances(x, x), perplexity=20.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.diag(p) == 0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    np.testing.assert_allclose(np.exp(entropy), 20.0, rtol=1e-3)


def test_joint_probabilities_are_symmetric_and_sum_to_one(rng):
    p = embedding.joint_probabilities(rng.standard_normal((50, 4)), perplexity=10.0)
    np.testing.assert_allclose(p, p.T, atol=1e-15)
    assert p.sum() == pytest.approx(1.0, abs=1e-8)


def test_tsne_gradient_matches_finite_differences(rng):
    p = rng.random((9, 9))
    p = p + p.T
    np.fill_diagonal(p, 0.0)
    p = np.maximum(p / p.sum(), 1e-12)
    y = rng.standard_normal((9, 2))
    numeric = np.zeros_like(y)
    for index in np.ndindex(*y.shape):
        step = np.zeros_like(y)
        step[index] = 1e-6
        numeric[index] = (embedding.kl_divergence(p, y + step)
                          - embedding.kl_divergence(p, y - step)) / 2e-6
    np.testing.assert_allclose(embedding.tsne_gradient(p, y), numeric, rtol=1e-5, atol=1e-8)


def test_tsne_separates_two_clusters_deterministically(rng):
    x, labels = two_clusters(rng)
    points = embedding.tsne(x, perplexity=20.0, seed=1)
    assert points.shape == (150, 2) and np.all(np.isfinite(points))
    assert nearest_neighbour_accuracy(points, labels) > 0.95
    centres = np.array([points[labels == k].mean(axis=0) for k in (0, 1)])
    spread = np.mean([points[labels == k].std(axis=0).mean() for k in (0, 1)])
    assert np.linalg.norm(centres[0] - centres[1]) > 3 * spread
    again = embedding.tsne(x, perplexity=20.0, seed=1)
    np.testing.assert_allclose(again, points, rtol=0, atol=1e-12)
    short = dict(perplexity=20.0, n_iter=50)
    assert not np.allclose(embedding.tsne(x, seed=1, **short), embedding.tsne(x, seed=2, **short))


def test_tsne_runs_on_tiny_inputs_and_rejects_bad_ones(rng):
    points = embedding.tsne(rng.standard_normal((7, 3)), n_iter=30)    # perplexity capped at 2
    assert points.shape == (7, 2) and np.all(np.isfinite(points))
    with pytest.raises(ValueError):
        embedding.tsne(np.zeros(10))


def test_plot_embedding_writes_a_png(tmp_path, rng):
    points = rng.standard_normal((30, 2))
    groups = ["real"] * 10 + ["generated"] * 12 + ["AD real"] * 8
    path = tmp_path / "plots" / "embedding.png"
    embedding.plot_embedding(points, groups, str(path), title="t-SNE")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(ValueError):
        embedding.plot_embedding(points, groups[:-1], str(tmp_path / "bad.png"))
    with pytest.raises(ValueError):
        embedding.plot_embedding(rng.standard_normal((30, 3)), groups, str(tmp_path / "bad.png"))


def test_plot_groups_writes_a_pca_and_a_tsne_plot(tmp_path, rng):
    groups = {"real": rng.uniform(-1, 1, (12, 1, 8, 8)), "generated": rng.uniform(-1, 1, (9, 1, 8, 8))}
    pca_path, tsne_path = embedding.plot_groups(groups, str(tmp_path), "test", seed=0)
    assert pca_path.endswith("embedding_pca.png") and tsne_path.endswith("embedding_tsne.png")
    for path in (pca_path, tsne_path):
        assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pick_per_class_takes_up_to_count_of_each_class():
    class Set:   # the parts of a data.ImageSet that pick_per_class reads
        def __init__(self, labels, class_names, n=8):
            self.labels, self.class_names, self.n = labels, class_names, n

        def __len__(self):
            return self.n
    labelled = Set(np.array([0, 1, 1, 0, 1, 1, 0, 1]), ["AD", "NC"])
    picked = embedding.pick_per_class(labelled, 4, np.random.default_rng(0))
    assert list(picked) == ["real AD", "real NC"]
    assert sorted(picked["real AD"]) == [0, 3, 6] and len(picked["real NC"]) == 4
    assert set(picked["real NC"]) <= {1, 2, 4, 5, 7}
    unlabelled = Set(None, None)
    only = embedding.pick_per_class(unlabelled, 5, np.random.default_rng(0), name="real AD")
    assert list(only) == ["real AD"] and len(set(only["real AD"])) == 5
