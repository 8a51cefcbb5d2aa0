"""PCA features, precision/recall/density/coverage and KID, against known answers, straightforward
loops and (where installed) scikit-learn."""
import math

import numpy as np
import pytest

from evaluation import coverage, features, kid


# ---- features ------------------------------------------------------------------------------------

def smooth_images(rng, n, size=12, latent=5):
    """Images in [-1, 1] that vary along a few directions, like slices of one brain."""
    basis = rng.standard_normal((latent, size * size))
    return np.tanh(0.3 * rng.standard_normal((n, latent)) @ basis).reshape(n, 1, size, size)


def test_pca_features_match_sklearn(rng):
    decomposition = pytest.importorskip("sklearn.decomposition")
    train, other = smooth_images(rng, 40), smooth_images(rng, 9)
    ours = features.PCAFeatures().fit(train, dims=6)
    theirs = decomposition.PCA(n_components=6, svd_solver="full").fit(train.reshape(40, -1))
    expected = theirs.transform(other.reshape(9, -1))
    got = ours.transform(other) * ours.scale
    signs = np.sign((got * expected).sum(axis=0))         # each axis may point either way
    np.testing.assert_allclose(got, expected * signs, atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio, theirs.explained_variance_ratio_,
                               rtol=1e-10)


def test_pca_features_known_properties(rng):
    train = smooth_images(rng, 30)
    pca = features.PCAFeatures().fit(train, dims=100)
    assert pca.dims == 29                                  # capped at n - 1
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(29), atol=1e-12)
    f = pca.transform(train)
    assert f.dtype == np.float64 and f.shape == (30, 29)
    np.testing.assert_allclose(f.mean(axis=0), 0.0, atol=1e-12)
    assert (f ** 2).mean() == pytest.approx(1.0, rel=1e-12)  # the single scale c
    # with all n - 1 axes the training images are rebuilt exactly, and distances kept (times c)
    rebuilt = pca.mean + (f * pca.scale) @ pca.components
    np.testing.assert_allclose(rebuilt, train.reshape(30, -1), atol=1e-12)
    pixel_distance = np.linalg.norm(train[3] - train[17])
    assert np.linalg.norm(f[3] - f[17]) * pca.scale == pytest.approx(pixel_distance, rel=1e-10)
    largest = pca.components[np.arange(29), np.abs(pca.components).argmax(axis=1)]
    assert np.all(largest > 0)                              # the sign convention


def test_pca_features_float32_chunks_and_subset(rng, monkeypatch):
    train = smooth_images(rng, 25)
    pca = features.PCAFeatures().fit(train, dims=4)
    whole = pca.transform(train)
    monkeypatch.setattr(features, "TRANSFORM_CHUNK", 7)
    np.testing.assert_allclose(pca.transform(train), whole, atol=1e-12)
    np.testing.assert_allclose(pca.transform(train.astype(np.float32)), whole, atol=1e-5)
    subset = features.PCAFeatures().fit(train, dims=4, max_images=10, seed=1)
    assert subset.dims == 4 and not np.allclose(subset.mean, pca.mean)


def test_features_refuse_bad_images(rng):
    images = smooth_images(rng, 6)
    pca = features.PCAFeatures()
    with pytest.raises(ValueError, match="fit"):
        pca.transform(images)
    pca.fit(images, dims=2)
    with pytest.raises(ValueError, match="data.to_float"):
        pca.transform(((images + 1) * 127.5).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        pca.transform(images[:, 0])
    with pytest.raises(ValueError, match="fitted on"):
        pca.transform(images[:, :, :8, :8])
    with pytest.raises(ValueError, match="NaN"):
        pca.transform(np.full_like(images, np.nan))
    assert features.PixelFeatures().fit(images).transform(images).shape == (6, 144)


# ---- precision, recall, density, coverage ------------------------------------------------------

def loop_prdc(real, fake, k):
    """The four definitions of coverage.py written as plain loops over points."""
    def radius(points, i):
        return sorted(math.dist(points[i], points[l]) for l in range(len(points)) if l != i)[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    inside = [[math.dist(y, x) < r for x, r in zip(real, real_r)] for y in fake]  # [j][i]
    precision = sum(any(row) for row in inside) / len(fake)
    recall = sum(any(math.dist(x, y) < r for y, r in zip(fake, fake_r)) for x in real) / len(real)
    density = sum(sum(row) for row in inside) / (k * len(fake))
    covered = sum(any(inside[j][i] for j in range(len(fake))) for i in range(len(real)))
    return {"precision": precision, "recall": recall, "density": density,
            "coverage": covered / len(real)}


def test_squared_distances_match_differences(rng):
    a, b = rng.standard_normal((7, 4)), rng.standard_normal((5, 4))
    direct = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(coverage.squared_distances(a, b), direct, atol=1e-12)
    assert coverage.squared_distances(a, a).min() >= 0.0    # clipped, never negative


def test_prdc_matches_loop_implementation(rng):
    real = rng.standard_normal((40, 3))
    fake = 0.8 * rng.standard_normal((30, 3)) + 0.4        # overlapping, not equal
    got = coverage.prdc(real, fake, k=5)
    assert got == loop_prdc(real.tolist(), fake.tolist(), 5)
    assert 0 < got["precision"] < 1 or 0 < got["recall"] < 1   # a non-trivial case


def test_radii_match_sklearn_nearest_neighbours(rng, monkeypatch):
    neighbors = pytest.importorskip("sklearn.neighbors")
    x = rng.standard_normal((50, 6))
    distances, _ = neighbors.NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x)
    # sklearn's first neighbour of each point is the point itself, at distance 0
    np.testing.assert_allclose(coverage.kth_neighbour_radii(x, k=5), distances[:, 5], rtol=1e-10)
    monkeypatch.setattr(coverage, "ROW_BLOCK", 8)           # several row blocks, same answer
    np.testing.assert_allclose(coverage.kth_neighbour_radii(x, k=5), distances[:, 5], rtol=1e-10)


def test_radii_without_sklearn_exclude_the_point_itself():
    x = np.array([[0.0], [1.0], [3.0], [7.0], [15.0], [31.0], [63.0]])
    # distances from 0: 1, 3, 7, ...; the 2nd neighbour of 0 is 3, of 63 is 63 - 15 = 48
    radii = coverage.kth_neighbour_radii(x, k=2)
    assert radii[0] == 3.0 and radii[-1] == 48.0 and radii[1] == 2.0


def test_identical_sets_score_one(rng):
    # whole-number coordinates: every squared distance is exact in float64, whatever order the
    # matrix product sums in (x @ x.T and x @ copy.T take different BLAS routines, whose
    # rounding could otherwise put a ball's edge point inside it)
    x = rng.integers(-50, 50, (60, 8)).astype(np.float64)
    distances = np.sort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)
    assert (distances[:, 5] != distances[:, 4]).all() and (distances[:, 5] != distances[:, 6]).all()
    got = coverage.prdc(x, x.copy(), k=5)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    # each ball (radius: the 5th neighbour, self excluded) holds its centre and 4 neighbours
    # strictly inside: 5 of the k * 60 counts per ball, density exactly 1
    assert got["density"] == 1.0


def test_disjoint_far_apart_sets_score_zero(rng):
    real = rng.standard_normal((30, 4))
    fake = rng.standard_normal((25, 4)) + 100.0
    assert coverage.prdc(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0,
                                         "coverage": 0.0}


def test_dropped_mode_halves_recall_and_coverage(rng):
    centres = np.array([[0.0] * 5, [50.0] * 5])
    real = np.concatenate([c + rng.standard_normal((100, 5)) for c in centres])
    fake = centres[0] + rng.standard_normal((100, 5))       # fresh, but only the first mode
    got = coverage.prdc(real, fake)
    assert got["precision"] > 0.9
    assert 0.4 < got["recall"] <= 0.5 and 0.4 < got["coverage"] <= 0.5


def test_expected_coverage_matches_monte_carlo(rng):
    """Naeem et al. 2020, Lemma 2, against 300 draws of real and fake from one distribution."""
    for n_real, n_fake in ((30, 10), (20, 40)):
        values = [coverage.prdc(rng.standard_normal((n_real, 3)),
                                rng.standard_normal((n_fake, 3)))["coverage"] for _ in range(300)]
        error = np.std(values) / np.sqrt(len(values))
        assert abs(np.mean(values) - coverage.expected_coverage(n_real, n_fake)) < 4 * error
    assert coverage.expected_coverage(10 ** 6, 10 ** 6) == pytest.approx(1 - 2.0 ** -5, rel=1e-4)


def test_prdc_refuses_bad_input(rng):
    with pytest.raises(ValueError, match="more than k"):
        coverage.prdc(rng.standard_normal((5, 2)), rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="dimensions"):
        coverage.prdc(rng.standard_normal((10, 2)), rng.standard_normal((10, 3)))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        coverage.prdc(rng.standard_normal(10), rng.standard_normal((10, 1)))


# ---- KID ----------------------------------------------------------------------------------------

def loop_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, term by term."""
    d = len(x[0])

    def k(a, b):
        return (sum(p * q for p, q in zip(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2.0 * xy


def test_mmd2_matches_loop_implementation(rng):
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((7, 3)) + 0.3
    value = kid.mmd2_unbiased(x, y)
    assert value == pytest.approx(loop_mmd2(x.tolist(), y.tolist()), abs=1e-10)
    assert kid.mmd2_unbiased(y, x) == pytest.approx(value, abs=1e-12)


def test_kid_with_whole_sets_is_the_estimator(rng):
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((9, 4)) + 0.5
    mean, std = kid.kid(x, y, subset_size=50, n_subsets=4)   # capped at 9: every subset is all
    assert mean == pytest.approx(loop_mmd2(x.tolist(), y.tolist()), abs=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_near_zero_for_one_distribution_and_growing_with_shift(rng):
    real = rng.standard_normal((400, 8))
    same = rng.standard_normal((400, 8))
    values = [kid.kid(real, same, subset_size=200, n_subsets=20)[0]]
    for shift in (0.25, 0.5, 1.0):
        values.append(kid.kid(real, rng.standard_normal((400, 8)) + shift, 200, 20)[0])
    assert abs(values[0]) < 0.1 * values[2]               # well below a half-sigma shift's
    assert 0 < values[1] < values[2] < values[3]


def test_kid_is_seeded_and_refuses_tiny_sets(rng):
    x, y = rng.standard_normal((30, 3)), rng.standard_normal((40, 3))
    assert kid.kid(x, y, 10, 5, seed=3) == kid.kid(x, y, 10, 5, seed=3)
    assert kid.kid(x, y, 10, 5, seed=3) != kid.kid(x, y, 10, 5, seed=4)
    with pytest.raises(ValueError, match="at least 2"):
        kid.kid(x[:1], y)


def test_the_gram_route_gives_the_svd_of_wide_centred_rows():
    """singular_values_and_axes works on X X^T when there are more pixels than images; it must
    agree with LAPACK's SVD of X (axes up to sign), and its axes must be orthonormal."""
    from evaluation.features import singular_values_and_axes
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 300)) @ np.diag(np.linspace(3, 0.1, 300))
    x -= x.mean(axis=0)
    s, vt = singular_values_and_axes(x)
    _, s_ref, vt_ref = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(s[:11], s_ref[:11], rtol=1e-9)
    assert s[11] < 1e-6 * s[0] and not vt[11].any()          # centred: rank n - 1
    np.testing.assert_allclose(np.abs((vt[:11] * vt_ref[:11]).sum(axis=1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(vt[:11] @ vt[:11].T, np.eye(11), atol=1e-9)
