"""BatchLoader (shapes, ranges, seeding, resuming, devices), augmentation and uint8 <-> float."""

import sys

import numpy as np
import pytest

import data
from data import augment as aug


def toy_images(count=10, size=16):
    """Image i holds a bright square whose position and value identify it."""
    images = np.zeros((count, size, size), dtype=np.uint8)
    for i in range(count):
        images[i, 4:12, 4:12] = 10 + 12 * i
    return images


def all_batches(loader, epoch, start_batch=0):
    return [batch.copy() for batch in loader.epoch(epoch, start_batch)]


# --- to_float / to_uint8 -----------------------------------------------------------------------

@pytest.mark.parametrize("value_range", [(-1, 1), (0, 1)])
def test_to_float_and_back_is_exact(value_range):
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    floats = data.to_float(every_value, value_range)
    assert floats.dtype == np.float32
    assert floats.min() == value_range[0] and floats.max() == value_range[1]
    np.testing.assert_array_equal(data.to_uint8(floats, value_range), every_value)


def test_to_uint8_clips_and_rounds():
    values = np.array([-3.0, -1.0, 0.0, 0.999, 2.0], dtype=np.float32)
    assert data.to_uint8(values).tolist() == [0, 0, 128, 255, 255]
    assert data.to_uint8(np.float32([0.6 / 255, 0.4 / 255]), (0, 1)).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"value_range must be \(-1, 1\) or \(0, 1\)"):
        data.to_float(np.zeros(3, np.uint8), (0, 255))


# --- BatchLoader -------------------------------------------------------------------------------

@pytest.mark.parametrize("drop_last, expected", [(True, [4, 4]), (False, [4, 4, 2])])
def test_batch_count_and_shapes(drop_last, expected):
    loader = data.BatchLoader(toy_images(10), batch_size=4, drop_last=drop_last)
    batches = all_batches(loader, 0)
    assert len(loader) == len(expected) == len(batches)
    assert [len(b) for b in batches] == expected
    assert all(b.shape[1:] == (1, 16, 16) and b.dtype == np.float32 for b in batches)


@pytest.mark.parametrize("value_range", [(-1, 1), (0, 1)])
def test_without_augmentation_each_image_comes_once_in_range(value_range):
    images = toy_images(10)
    loader = data.BatchLoader(images, batch_size=3, augment=False, value_range=value_range,
                              drop_last=False)
    seen = np.concatenate(all_batches(loader, 5))[:, 0]
    assert seen.min() == value_range[0] and seen.max() <= value_range[1]
    order = np.argsort(data.to_uint8(seen, value_range)[:, 8, 8])
    np.testing.assert_array_equal(data.to_uint8(seen[order], value_range), images)
    assert not np.array_equal(order, np.arange(10))     # it was shuffled


def test_augmented_batches_stay_in_range_and_look_like_the_images():
    images = data.load_images(None, image_size=32, split="all").images
    loader = data.BatchLoader(images, batch_size=16, seed=1)
    batch = next(loader.epoch(0))
    assert batch.min() >= -1 and batch.max() <= 1 and batch.dtype == np.float32
    assert batch[:, :, 0, 0].max() == -1            # corners stay background
    assert (batch > -0.9).mean() > 0.2              # brain is still there


def test_same_seed_same_batches_other_seed_or_epoch_other_batches():
    images = toy_images(12)
    first = all_batches(data.BatchLoader(images, batch_size=4, seed=3), 2)
    again = all_batches(data.BatchLoader(images, batch_size=4, seed=3), 2)
    other_seed = all_batches(data.BatchLoader(images, batch_size=4, seed=4), 2)
    other_epoch = all_batches(data.BatchLoader(images, batch_size=4, seed=3), 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other_seed[0])
    assert not np.array_equal(first[0], other_epoch[0])
    plain = data.BatchLoader(images, batch_size=4, seed=3, augment=False)
    assert not np.array_equal(plain.order(0), plain.order(1))      # a new shuffle every epoch


@pytest.mark.parametrize("augment", [True, False])
def test_resuming_mid_epoch_gives_the_same_batches(augment):
    images = toy_images(20)
    uninterrupted = all_batches(data.BatchLoader(images, batch_size=4, seed=7, augment=augment), 1)
    fresh_loader = data.BatchLoader(images, batch_size=4, seed=7, augment=augment)
    resumed = all_batches(fresh_loader, 1, start_batch=3)
    assert len(resumed) == 2
    for a, b in zip(uninterrupted[3:], resumed):
        np.testing.assert_array_equal(a, b)
    assert all_batches(fresh_loader, 1, start_batch=len(fresh_loader)) == []


def test_loader_errors():
    images = toy_images(5)
    with pytest.raises(data.DataError, match="batch_size 8 is larger than the 5 images"):
        data.BatchLoader(images, batch_size=8)
    assert len(data.BatchLoader(images, batch_size=8, drop_last=False)) == 1
    with pytest.raises(data.DataError, match="uint8 images of shape"):
        data.BatchLoader(images.astype(np.float32))
    with pytest.raises(data.DataError, match="device must be one of cpu, gpu"):
        data.BatchLoader(images, batch_size=2, device="tpu")
    with pytest.raises(ValueError, match="value_range"):
        data.BatchLoader(images, batch_size=2, value_range=(-2, 2))
    with pytest.raises(data.DataError, match="start_batch must be in 0..2"):
        next(data.BatchLoader(images, batch_size=2).epoch(0, start_batch=3))


def test_gpu_without_cupy_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)       # makes `import cupy` fail
    with pytest.raises(RuntimeError, match="CuPy.*pip install cupy"):
        data.BatchLoader(toy_images(4), batch_size=2, device="gpu")


def test_batches_on_the_device(device):
    """With `pytest --device gpu` (and CuPy), batches are augmented on the GPU and arrive as CuPy
    arrays equal to the CPU ones of the same seed, up to float rounding: every random number is
    drawn on the host in the same order on both devices."""
    images = toy_images(8)
    cpu = all_batches(data.BatchLoader(images, batch_size=4, seed=2), 0)
    here = list(data.BatchLoader(images, batch_size=4, seed=2, device=device).epoch(0))
    for a, b in zip(cpu, here):
        assert type(b).__module__.split(".")[0] == ("cupy" if device == "gpu" else "numpy")
        np.testing.assert_allclose(a, b.get() if device == "gpu" else b, atol=1e-5)


# --- augmentation ------------------------------------------------------------------------------

def test_bilinear_sample_identity_shift_and_outside():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 6, 5)).astype(np.uint8)
    rows, cols = np.meshgrid(np.arange(6, dtype=np.float32), np.arange(5, dtype=np.float32), indexing="ij")
    x, y = np.broadcast_to(cols, (2, 6, 5)), np.broadcast_to(rows, (2, 6, 5))
    np.testing.assert_array_equal(aug.bilinear_sample(images, x, y), images)
    shifted = aug.bilinear_sample(images, x + 1, y)
    np.testing.assert_array_equal(shifted[:, :, :-1], images[:, :, 1:])
    assert (shifted[:, :, -1] == 0).all()
    halfway = aug.bilinear_sample(images, x + 0.5, y + 0.5)
    np.testing.assert_allclose(halfway[:, 0, 0], images[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)
    assert (aug.bilinear_sample(images, x - 50, y) == 0).all()


def test_flip_alone_mirrors_about_half_the_images(monkeypatch):
    for setting in ("MAX_ROTATION_DEGREES", "MAX_SCALE_CHANGE", "MAX_SHIFT", "ELASTIC_STD"):
        monkeypatch.setattr(aug, setting, 0.0)
    images = np.zeros((32, 8, 8), dtype=np.uint8)
    images[:, :, :3] = 200                                       # bright left edge
    out = aug.augment(images, np.random.default_rng(0))
    same = np.all(np.abs(out - images) < 1e-3, axis=(1, 2))
    mirrored = np.all(np.abs(out - images[:, :, ::-1]) < 1e-3, axis=(1, 2))
    assert np.all(same | mirrored) and 8 <= mirrored.sum() <= 24


def test_elastic_field_is_smooth_and_of_the_set_size():
    field = aug.random_elastic_field(np.random.default_rng(0), 64, 64)
    assert field.shape == (64, 2, 64, 64) and field.dtype == np.float32
    assert abs(field.std() / (aug.ELASTIC_STD * 64) - 1) < 0.25
    neighbour_step = np.abs(np.diff(field, axis=-1)).mean()
    assert neighbour_step < 0.1 * np.abs(field).mean()          # smooth, not pixel noise


def test_augmentation_changes_images_but_keeps_them_brain_like():
    images = data.load_images(None, image_size=64, split="all").images[40:72]
    out = aug.augment(images, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    difference = np.abs(out - images).mean(axis=(1, 2))
    assert (difference > 1).all()                               # every image was changed
    area_before, area_after = (images > 20).sum(axis=(1, 2)), (out > 20).sum(axis=(1, 2))
    assert np.all(np.abs(area_after / area_before - 1) < 0.3)     # scale changes by at most ~15%
    flipped = np.abs(out - out[:, :, ::-1]).mean()
    assert flipped < 0.5 * np.abs(out).mean()                    # still roughly symmetric
