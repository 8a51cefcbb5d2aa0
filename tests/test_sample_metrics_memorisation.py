"""The memorisation numbers and figure, and the one-call report, on constructed and bundled data."""
import numpy as np
import pytest
from PIL import Image

import data
from evaluation import coverage, memorisation, sample_quality
from evaluation.features import PixelFeatures


def image_distribution(rng, size=16, latent=6):
    """draw(m): m images in [-1, 1] that vary along a few directions of pixel space."""
    basis = rng.standard_normal((latent, size * size))
    return lambda m: np.tanh(0.3 * rng.standard_normal((m, latent)) @ basis).reshape(
        m, 1, size, size)


@pytest.fixture
def draw(rng):
    return image_distribution(rng)


@pytest.fixture
def sets(draw, rng):
    """Training, held-out and fresh images from one distribution, and noisy training copies."""
    train, heldout, fresh = draw(150), draw(60), draw(60)
    source = rng.choice(150, size=60, replace=False)
    copies = train[source] + 0.01 * rng.standard_normal((60, 1, 16, 16))
    return train, heldout, fresh, copies, source


def rows(images):
    return PixelFeatures().transform(images)


def test_copies_are_flagged_and_fresh_images_are_not(sets):
    train, heldout, fresh, copies, source = sets
    copied = memorisation.memorisation(rows(train), rows(heldout), rows(copies))
    assert copied["copy_fraction"] == 1.0
    assert copied["closer_than_heldout"] > 0.99 and copied["distance_ratio"] < 0.2
    # the nearest training image of every copy is the one it was copied from
    np.testing.assert_array_equal(copied["sample_nearest"], source)
    assert len(copied["most_copied"]) == 8
    order = copied["sample_distances"][copied["most_copied"]]
    assert np.all(np.diff(order) >= 0) and order[-1] <= np.sort(copied["sample_distances"])[7]

    new = memorisation.memorisation(rows(train), rows(heldout), rows(fresh))
    assert new["copy_fraction"] < 0.2
    assert 0.3 < new["closer_than_heldout"] < 0.7 and 0.7 < new["distance_ratio"] < 1.4


def loop_nearest(queries, train):
    best = [min(range(len(train)), key=lambda t: ((q - train[t]) ** 2).sum()) for q in queries]
    distances = [np.sqrt(((q - train[t]) ** 2).mean()) for q, t in zip(queries, best)]
    return np.array(distances), np.array(best)


def test_nearest_training_matches_loop_and_blocks(rng, monkeypatch):
    train, queries = rng.standard_normal((23, 10)), rng.standard_normal((7, 10))
    expected_d, expected_i = loop_nearest(queries, train)
    monkeypatch.setattr(memorisation, "TRAIN_BLOCK", 5)
    d, i = memorisation.nearest_training(queries, train)
    np.testing.assert_array_equal(i, expected_i)
    np.testing.assert_allclose(d, expected_d, rtol=1e-12)


def test_nearest_training_matches_sklearn(rng):
    neighbors = pytest.importorskip("sklearn.neighbors")
    train, queries = rng.standard_normal((60, 12)), rng.standard_normal((15, 12))
    distances, index = neighbors.NearestNeighbors(n_neighbors=1).fit(train).kneighbors(queries)
    d, i = memorisation.nearest_training(queries, train)
    np.testing.assert_array_equal(i, index[:, 0])
    np.testing.assert_allclose(d, distances[:, 0] / np.sqrt(12), rtol=1e-10)


def test_closer_fraction_counts_pairs_and_matches_scipy(rng):
    a, b = np.array([1.0, 2.0, 2.0]), np.array([2.0, 3.0])
    # pairs (a < b): (1,2) (1,3) (2,3) (2,3) = 4; ties (2,2) twice = 1; of 6 pairs
    assert memorisation.closer_fraction(a, b) == pytest.approx(5 / 6)
    stats = pytest.importorskip("scipy.stats")
    a, b = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)
    u = stats.mannwhitneyu(b, a).statistic            # pairs with b > a, ties counted half
    assert memorisation.closer_fraction(a, b) == pytest.approx(u / (40 * 30), abs=1e-12)


def test_memorisation_figure_is_written(sets, tmp_path):
    train, heldout, _, copies, _ = sets
    result = memorisation.memorisation(rows(train), rows(heldout), rows(copies), n_most_copied=5)
    path = memorisation.plot_memorisation(result, copies, train, str(tmp_path / "f" / "m.png"))
    with Image.open(path) as image:
        assert image.size == (int((4 + 1.3 * 5) * 100), 320)
        assert np.asarray(image.convert("L")).std() > 10      # not a blank page


# ---- the one-call report ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled():
    """The bundled slices at 32x32, every fifth slice held out (as train_vqvae.py does)."""
    images = data.to_float(data.load_images(None, image_size=32, split="all").images)[:, None]
    index = np.arange(len(images))
    return images[index % 5 != 4], images[index % 5 == 4]


def test_report_keys_and_reference_row(bundled):
    train, heldout = bundled
    result = sample_quality.sample_quality(train, heldout, heldout.copy())
    keys = {"precision", "recall", "density", "coverage", "kid", "kid_std", "copy_fraction",
            "closer_than_heldout", "distance_ratio", "n_images", "prdc_images", "feature_dims"}
    assert set(result) == keys | {"heldout_" + key for key in keys}
    for key in keys:                  # the held-out images scored as samples: the same row
        assert result[key] == result["heldout_" + key]
    assert result["heldout_closer_than_heldout"] == 0.5
    assert result["heldout_distance_ratio"] == 1.0 and result["heldout_copy_fraction"] <= 0.1
    assert result["n_images"] == len(heldout) and result["feature_dims"] == 32


def test_held_out_slices_beat_broken_models(bundled, rng):
    train, heldout = bundled
    judge = sample_quality.SampleJudge(train, heldout)
    real = judge.reference
    collapsed = judge.score(np.repeat(heldout[12:13], len(heldout), axis=0))
    noise = judge.score(rng.uniform(-1, 1, heldout.shape))
    copier = judge.score(train[rng.choice(len(train), len(heldout), replace=False)])
    assert real["precision"] > 0.9 and real["coverage"] > 0.9
    assert collapsed["recall"] < 0.1 and collapsed["coverage"] < 0.2
    assert collapsed["kid"] > real["kid"] + 3 * real["kid_std"]
    assert noise["precision"] == noise["coverage"] == 0.0
    assert noise["kid"] > real["kid"] + 3 * real["kid_std"]
    assert copier["copy_fraction"] == 1.0 and copier["closer_than_heldout"] == 1.0


def test_more_samples_are_scored_at_the_held_out_count(draw):
    """Coverage grows with the number of samples; the judge scores subsets of the held-out size.

    Pixel features keep training, held-out and samples exchangeable, so that coverage of a
    perfect model has the expectation of Naeem et al.'s Lemma 2."""
    train, heldout, samples = draw(150), draw(25), draw(100)
    judge = sample_quality.SampleJudge(train, heldout, extractor=PixelFeatures(), kid_subsets=3)
    row = judge.score(samples)
    assert row["prdc_images"] == 25 and row["n_images"] == 100
    expected = coverage.expected_coverage(150, 25)          # 0.54
    assert abs(row["coverage"] - expected) < 0.12
    everything = coverage.prdc(judge.train_features, PixelFeatures().transform(samples))
    assert everything["coverage"] > coverage.expected_coverage(150, 100) - 0.1 > expected + 0.2


def test_other_extractors_plug_in_and_bad_input_is_refused(bundled):
    train, heldout = bundled
    judge = sample_quality.SampleJudge(train, heldout, extractor=PixelFeatures(), kid_subsets=3)
    assert judge.reference["feature_dims"] == 32 * 32
    with pytest.raises(ValueError, match="resize"):
        judge.score(np.zeros((10, 1, 16, 16)))
    with pytest.raises(ValueError, match="data.to_float"):
        judge.score(data.load_images(None, image_size=32, split="test").images[:, None])
