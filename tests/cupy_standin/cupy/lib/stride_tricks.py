"""cupy.lib.stride_tricks.as_strided: a view with the given shape and strides (in bytes) of the
same memory (no kernel); writes through it reach the original array, as on CuPy."""
import numpy as np

from .. import _core
from .. import _standin as S


def as_strided(x, shape=None, strides=None):
    S.used["lib.stride_tricks.as_strided"] += 1
    S.not_in_fuse("as_strided")
    return _core._wrap(np.lib.stride_tricks.as_strided(_core._device(x), shape=shape,
                                                       strides=strides))
