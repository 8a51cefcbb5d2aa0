"""data/levels.py: slice levels (the conditional prior's classes) from file names."""
import numpy as np
import pytest

import data
from data.levels import levels_of, slice_position


def test_bundled_levels_rise_with_z_and_cover_every_level():
    dataset = data.load_images(None, image_size=16, split="all")
    with np.load(data.loading.BUNDLED_FILE) as stored:
        z_mm = stored["z_mm"]
    positions = np.array([slice_position(name) for name in dataset.files])
    np.testing.assert_array_equal(positions, z_mm.astype(int))     # the names say z in mm
    for n in (1, 3, 8):
        levels = data.slice_levels(dataset.files, n)
        order = np.argsort(z_mm, kind="stable")
        assert (np.diff(levels[order]) >= 0).all()                  # monotone in z
        np.testing.assert_array_equal(np.unique(levels), np.arange(n))
    assert data.slice_levels(dataset.files, 8)[np.argmin(z_mm)] == 0


def test_equal_bins_between_the_lowest_and_highest_slice():
    np.testing.assert_array_equal(levels_of(np.array([-10.0, -5.0, 0.0, 4.9, 5.0, 10.0]), 4),
                                  [0, 1, 2, 2, 3, 3])


def test_oasis_names_give_the_slice_index():
    assert slice_position("keras_png_slices_train/case_402_slice_17.nii.png") == 17
    assert slice_position("mni152_axial_z-036mm") == -36
    np.testing.assert_array_equal(
        data.slice_levels([f"case_001_slice_{i}.nii.png" for i in range(32)], 2), [0] * 16 + [1] * 16)


def test_names_without_a_position_or_one_position_are_refused():
    with pytest.raises(data.DataError, match="slice level of brain_7.png.*--prior-levels 0"):
        data.slice_levels(["case_001_slice_3.nii.png", "brain_7.png"], 4)
    with pytest.raises(data.DataError, match="one level.*--prior-levels 0"):
        data.slice_levels(["a_slice_3.png", "b_slice_3.png"], 4)
    data.check_positions_known(None)                                # the bundled set: fine
