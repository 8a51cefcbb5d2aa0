"""SSIM and the generation metrics built on it, against a slow direct computation."""
import numpy as np
import pytest

from evaluation import ssim as metrics


def slow_ssim(x, y, data_range):
    """Wang et al. 2004 by the definition: loop over every 11x11 window that fits in the image."""
    k = np.arange(-5, 6)
    window = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5 ** 2))
    window /= window.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx, vy = (window * (px - mx) ** 2).sum(), (window * (py - my) ** 2).sum()
            cov = (window * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2)
                          / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def noisy(image, level, rng):
    return image + level * rng.standard_normal(image.shape)


@pytest.fixture
def pair(rng):
    a = rng.uniform(-1, 1, (16, 16))
    return a, 0.6 * a + 0.4 * rng.uniform(-1, 1, (16, 16))


def test_identical_images_score_one(rng):
    a = rng.uniform(-1, 1, (32, 24))
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    stack = rng.uniform(-1, 1, (3, 1, 20, 20))            # channel axis of 1 is squeezed
    np.testing.assert_allclose(metrics.ssim_batch(stack, stack), 1.0, atol=1e-12)


def test_matches_slow_reference(pair, rng):
    a, b = pair
    assert metrics.ssim(a, b) == pytest.approx(slow_ssim(a, b, 2.0), abs=1e-10)
    c, d = rng.uniform(0, 255, (2, 13, 19))               # non-square, other data range
    assert metrics.ssim(c, d, data_range=255) == pytest.approx(slow_ssim(c, d, 255), abs=1e-10)


def test_symmetric(pair):
    a, b = pair
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-14)


def test_data_range_matters(pair):
    a, b = pair
    small, large = metrics.ssim(a, b, data_range=1.0), metrics.ssim(a, b, data_range=50.0)
    assert small < large        # bigger constants C1, C2 pull SSIM towards 1
    assert small == pytest.approx(slow_ssim(a, b, 1.0), abs=1e-10)


def test_more_noise_lowers_ssim(rng):
    clean = np.clip(np.cumsum(rng.standard_normal((48, 48)), axis=1) / 10, -1, 1)  # smooth-ish
    scores = [metrics.ssim(clean, noisy(clean, level, rng)) for level in (0.02, 0.1, 0.3, 1.0)]
    assert all(later < earlier for earlier, later in zip(scores, scores[1:]))
    assert scores[0] > 0.9 and scores[-1] < 0.3


def test_ssim_batch_matches_ssim_per_pair(rng):
    a, b = rng.uniform(-1, 1, (2, 5, 17, 21))
    expected = [metrics.ssim(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(metrics.ssim_batch(a, b), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.ssim_batch(a, b, chunk=2), expected, atol=1e-12)
    one_against_all = metrics.ssim_batch(a[:1], b)                  # (1, H, W) vs (N, H, W)
    np.testing.assert_allclose(one_against_all, [metrics.ssim(a[0], y) for y in b], atol=1e-12)


def test_ssim_matrix_matches_ssim(rng):
    x, y = rng.uniform(-1, 1, (4, 15, 15)), rng.uniform(-1, 1, (6, 15, 15))
    expected = [[metrics.ssim(p, q) for q in y] for p in x]
    np.testing.assert_allclose(metrics.ssim_matrix(x, y), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.ssim_matrix(x, y, chunk=4), expected, atol=1e-12)


def test_nearest_neighbour_finds_the_planted_copy(rng):
    real = rng.uniform(-1, 1, (20, 24, 24))
    samples = np.stack([rng.uniform(-1, 1, (24, 24)), real[7], noisy(real[3], 0.05, rng)])
    scores, index = metrics.nearest_neighbour_ssim(samples, real, chunk=6, return_index=True)
    assert scores[1] == pytest.approx(1.0, abs=1e-12) and index[1] == 7
    assert index[2] == 3 and 0.8 < scores[2] < 1.0
    assert scores[0] < 0.2
    np.testing.assert_allclose(scores, metrics.nearest_neighbour_ssim(samples, real), atol=1e-12)


def test_pairwise_ssim(rng):
    same = np.repeat(rng.uniform(-1, 1, (1, 16, 16)), 5, axis=0)
    assert metrics.pairwise_ssim(same) == pytest.approx(1.0, abs=1e-12)
    different = rng.uniform(-1, 1, (6, 16, 16))
    expected = np.mean([metrics.ssim(different[i], different[j])
                        for i in range(6) for j in range(i + 1, 6)])
    assert metrics.pairwise_ssim(different) == pytest.approx(expected, abs=1e-12)
    assert abs(expected) < 0.1


def test_pairwise_subsampling_is_seeded(rng):
    images = rng.uniform(-1, 1, (12, 12, 12))
    first = metrics.pairwise_ssim(images, max_pairs=10, seed=3)
    assert first == metrics.pairwise_ssim(images, max_pairs=10, seed=3)
    assert first != metrics.pairwise_ssim(images, max_pairs=10, seed=4)


def test_pair_ranks_cover_every_pair_once():
    i, j = metrics._pair_from_rank(np.arange(21), 7)
    every_pair = [(a, b) for a in range(7) for b in range(a + 1, 7)]
    assert sorted(zip(i.tolist(), j.tolist())) == every_pair


def test_cupy_like_arrays_are_copied_to_the_host(rng):
    class FakeGpuArray:                         # nn.backend knows CuPy arrays by their module
        __module__ = "cupy"

        def __init__(self, array):
            self.array = array

        def get(self):
            return self.array

    a = rng.uniform(-1, 1, (16, 16))
    assert metrics.ssim(FakeGpuArray(a), a) == pytest.approx(1.0, abs=1e-12)


BAD_SHAPES = [((16, 16), (16, 17)),           # different sizes
              ((3, 16, 16), (2, 16, 16)),    # different counts
              ((10, 10), (10, 10)),          # smaller than the window
              ((2, 3, 16, 16), (2, 3, 16, 16)),  # three channels
              ((16,), (16,))]                # not an image


@pytest.mark.parametrize("a_shape, b_shape", BAD_SHAPES)
def test_bad_shapes_raise(a_shape, b_shape):
    with pytest.raises(ValueError):
        metrics.ssim_batch(np.zeros(a_shape), np.zeros(b_shape))


def test_other_errors(rng):
    a = rng.uniform(-1, 1, (16, 16))
    with pytest.raises(ValueError, match="data_range"):
        metrics.ssim(a, a, data_range=0)
    with pytest.raises(ValueError, match="single"):
        metrics.ssim(np.stack([a, a]), np.stack([a, a]))
    with pytest.raises(ValueError, match="smaller than"):
        metrics.nearest_neighbour_ssim(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="two images"):
        metrics.pairwise_ssim(a[None])


def test_agrees_with_scikit_image(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a = rng.uniform(-1, 1, (40, 33))
    b = 0.5 * a + 0.5 * rng.uniform(-1, 1, (40, 33))
    expected = skimage_metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=2.0)
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_large_images_are_searched_in_float32_within_1e_6_of_float64(rng):
    """nearest_neighbour_ssim compares images larger than 64x64 in float32 (twice as fast)."""
    real = rng.uniform(-1, 1, (9, 96, 96))
    samples = np.clip(real[[1, 4, 7]] + rng.normal(0, 0.3, (3, 96, 96)), -1, 1)
    exact = metrics.ssim_matrix(samples, real)                       # float64
    single = metrics.ssim_matrix(samples, real, dtype=np.float32)
    np.testing.assert_allclose(single, exact, atol=1e-6)
    assert np.abs(single - exact).max() > 0                           # really computed apart
    values, index = metrics.nearest_neighbour_ssim(samples, real, return_index=True)
    np.testing.assert_allclose(values, exact.max(axis=1), atol=1e-6)
    assert index.tolist() == [1, 4, 7]


def test_a_search_among_candidates_finds_the_match_and_never_exceeds_the_exact_score(rng):
    """nearest_neighbour_ssim(candidates=k): SSIM only against each sample's k nearest real
    images by pixel distance; a lower bound of the exact search, equal when the match is near."""
    real = rng.uniform(-1, 1, (12, 24, 24))
    samples = np.clip(real[[2, 9, 5]] + rng.normal(0, 0.2, (3, 24, 24)), -1, 1)
    exact, index = metrics.nearest_neighbour_ssim(samples, real, return_index=True)
    found, where = metrics.nearest_neighbour_ssim(samples, real, return_index=True, candidates=1)
    assert where.tolist() == index.tolist() == [2, 9, 5]
    np.testing.assert_allclose(found, exact, atol=1e-12)
    unrelated = rng.uniform(-1, 1, (4, 24, 24))                     # no real image is near
    few = metrics.nearest_neighbour_ssim(unrelated, real, candidates=2)
    everyone = metrics.nearest_neighbour_ssim(unrelated, real)
    assert np.all(few <= everyone) and np.any(few < everyone)
    np.testing.assert_allclose(metrics.nearest_neighbour_ssim(unrelated, real, candidates=12),
                               everyone, atol=1e-12)


def test_large_searches_use_candidates_by_the_pair_pixel_budget(rng, monkeypatch):
    real = rng.uniform(-1, 1, (10, 16, 16))
    samples = rng.uniform(-1, 1, (3, 16, 16))
    exact = metrics.nearest_neighbour_ssim(samples, real)
    monkeypatch.setattr(metrics, "SEARCH_PAIR_PIXELS", 3 * 10 * 256 - 1)   # just over budget
    monkeypatch.setattr(metrics, "MIN_CANDIDATES", 2)
    seen = {}
    original = metrics.ssim_matrix
    monkeypatch.setattr(metrics, "ssim_matrix", lambda *a, wanted=None, **k: (
        seen.setdefault("wanted", wanted), original(*a, wanted=wanted, **k))[1])
    budgeted = metrics.nearest_neighbour_ssim(samples, real)
    assert seen["wanted"].sum(axis=1).tolist() == [9, 9, 9]         # budget // (3 x 256) = 9
    assert np.all(budgeted <= exact + 1e-12)


def test_ssim_matrix_computes_only_the_wanted_pairs(rng):
    x, y = rng.uniform(-1, 1, (3, 16, 16)), rng.uniform(-1, 1, (5, 16, 16))
    wanted = rng.random((3, 5)) < 0.5
    full = metrics.ssim_matrix(x, y, chunk=2)
    part = metrics.ssim_matrix(x, y, chunk=2, wanted=wanted)
    np.testing.assert_allclose(part[wanted], full[wanted], atol=1e-12)
    assert np.all(part[~wanted] == -np.inf)
