"""Slice levels: the class a conditional prior is given, from each slice's height in the head.

A slice's position is read from its file name (nothing is opened):

    bundled set   mni152_axial_z+012mm      -> 12    (height in MNI mm, from the npz's z_mm)
    OASIS         case_402_slice_17.nii.png -> 17    (the slice index within its volume)

Other data sets carry no position, and asking for levels there is an error that says to train an
unconditional prior instead (--prior-levels 0). The positions are cut into N equal bins between
the lowest and the highest slice of the data set,

    level = min(N - 1, floor(N (p - p_min) / (p_max - p_min)))        in 0 .. N-1,

so level 0 holds the lowest slices and the levels rise with the position.
"""
import os
import re

import numpy as np

from .layouts import DataError, list_files

POSITION_PATTERNS = (re.compile(r"_z([+-]?\d+)mm"),     # bundled: mni152_axial_z+012mm
                     re.compile(r"slice_(\d+)"))        # OASIS: case_402_slice_17.nii.png
NO_POSITION = "use --prior-levels 0 for a prior without slice levels"


def slice_position(name):
    """The position in a file name (see the module docstring), or None when it has none."""
    base = os.path.basename(name)
    for pattern in POSITION_PATTERNS:
        found = pattern.search(base)
        if found:
            return int(found.group(1))
    return None


def slice_positions(files):
    """Positions of every file (float64 (N,)); DataError naming the first file without one."""
    positions = [slice_position(name) for name in files]
    missing = [name for name, p in zip(files, positions) if p is None]
    if missing:
        raise DataError(f"cannot tell the slice level of {missing[0]} (the file name holds no "
                        f"z..mm or slice_N); {NO_POSITION}")
    return np.array(positions, dtype=np.float64)


def levels_of(positions, n):
    """Equal bins of the positions: int64 (N,) levels in 0..n-1 (formula in the docstring)."""
    low, high = positions.min(), positions.max()
    if high == low:
        raise DataError(f"all slices are at position {low:g}, so they have one level; {NO_POSITION}")
    return np.minimum(n - 1, np.floor(n * (positions - low) / (high - low))).astype(np.int64)


def slice_levels(files, n):
    """The level (0..n-1) of every file of a data set, from the names in ImageSet.files."""
    return levels_of(slice_positions(files), n)


def check_positions_known(path, split="train", classes=None):
    """Raise DataError unless every image a data request selects has a position: the bundled
    set (path None) always has; a folder's file names are read without opening any image."""
    if path is not None:
        listing = list_files(path, split, classes)
        slice_positions([listing.relative(p) for p in listing.paths])
