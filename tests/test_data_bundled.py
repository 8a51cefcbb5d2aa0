"""The bundled MNI ICBM152 2009a slices: the file, its notice, splits, and that they are brains."""

import os

import numpy as np
import pytest

import data
from data import loading

DATA_DIR = os.path.dirname(loading.BUNDLED_FILE)


def test_bundled_file_reads_with_numpy_alone():
    with np.load(loading.BUNDLED_FILE, allow_pickle=False) as stored:
        images, z_mm = stored["images"], stored["z_mm"]
    assert images.dtype == np.uint8 and images.shape[1:] == (256, 256)
    assert 120 <= len(images) <= 150 and z_mm.shape == (len(images),)
    assert np.all(np.diff(z_mm) == 1)                     # consecutive 1 mm axial slices
    assert os.path.getsize(loading.BUNDLED_FILE) < 5e6


def test_notice_sits_beside_the_data():
    with open(os.path.join(DATA_DIR, "MNI-ICBM152-2009-LICENSE.txt")) as file:
        notice = file.read()
    assert "Copyright (C) 1993-2004 Louis Collins" in notice
    assert "provided that the above copyright notice appear in all copies" in notice


def test_splits_partition_the_slices():
    parts = {split: data.load_images(None, image_size=16, split=split)
             for split in ("train", "validate", "test", "all")}
    assert all(ds.labels is None and ds.class_names is None for ds in parts.values())
    names = [set(parts[s].files) for s in ("train", "validate", "test")]
    assert sum(len(n) for n in names) == len(parts["all"]) == len(set().union(*names))
    assert len(names[2]) >= 10 and len(names[0]) >= 100
    assert "bundled MNI ICBM152 2009a" in parts["train"].source
    with pytest.raises(data.DataError, match="unknown split 'dev'.*bundled.*valid: train, validate, test, all"):
        data.load_images(None, split="dev")
    with pytest.raises(data.DataError, match="class filter.*bundled set has no classes"):
        data.load_images(None, classes="AD")


@pytest.mark.parametrize("image_size", [32, 64, 256])
def test_slices_are_centred_brains_filling_the_frame(image_size):
    images = data.load_images(None, image_size=image_size, split="all").images
    assert images.shape[1:] == (image_size, image_size)
    brain = images > 10
    area = brain.mean(axis=(1, 2))
    assert area.min() > 0.03 and area.max() > 0.35        # every slice has brain; mid slices fill it
    middle = images[len(images) // 2].astype(np.float32)
    rows, cols = np.nonzero(middle > 10)
    centre = (image_size - 1) / 2
    assert abs(rows.mean() - centre) < 0.08 * image_size and abs(cols.mean() - centre) < 0.04 * image_size
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert 0.8 * image_size < height < image_size and width < height    # long axis is vertical
    assert np.abs(middle - middle[:, ::-1]).mean() < 0.1 * middle.mean()   # symmetric template
    assert images[:, 0, :].max() < 5 and images[:, :, 0].max() < 5      # background border


def test_anterior_is_up():
    """Low slices show the cerebellum, which lies posterior: at the bottom of the frame."""
    images = data.load_images(None, image_size=64, split="all").images
    lowest = images[:10] > 10
    rows = np.nonzero(lowest)[1]
    assert rows.mean() > 32
