"""cupy.random for the stand-in: RandomState (cuRAND's legacy interface: braingen's dropout masks)
and default_rng / Generator (for noise drawn on the device, issue 22), drawing on the "device"
(one launch per draw), float32 or float64 only, as CuPy.

The values come from NumPy's Philox generator seeded with the same seed: reproducible within the
stand-in, but NOT the values cuRAND gives on a GPU (nothing may compare them with a GPU's).
"""
import numpy as np

from .. import _core
from .. import _standin as S
from ..cuda import curand


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"cupy.random only supports float32 and float64 (got {dtype})")
    return dtype


def _seed_int(seed):
    """CuPy's checks (RandomState.seed): an integer from 0 to 2**64 - 1; a NumPy array is
    hashed (here with Python's hash, not CuPy's md5)."""
    if seed is None:
        return int.from_bytes(np.random.bytes(8), "little")
    if isinstance(seed, np.ndarray):
        return int(np.uint64(abs(hash(seed.tobytes()))))
    if isinstance(seed, _core.ndarray):
        raise TypeError("a seed must be a host value, not a cupy.ndarray")
    if np.asarray(seed).dtype.kind not in "biu":
        raise TypeError("Seed must be an integer.")
    if not 0 <= int(seed) < 2 ** 64:
        raise ValueError("Seed must be an integer between 0 and 2**64 - 1")
    return int(seed)


def _draw(kind, values, launches=1):
    S.not_in_fuse(f"cupy.random {kind}")
    S.launch(f"random:{kind}", launches)
    return _core._new(values)


class RandomState:
    """cupy.random.RandomState(seed=None, method=CURAND_RNG_PSEUDO_DEFAULT)."""

    def __init__(self, seed=None, method=curand.CURAND_RNG_PSEUDO_DEFAULT):
        S.used["random.RandomState"] += 1
        self.method = method
        self.seed(seed)

    def seed(self, seed=None):
        """Reseed (cheap on a counter-based generator: no kernel counted)."""
        S.used["random.RandomState.seed"] += 1
        self._generator = np.random.Generator(np.random.Philox(_seed_int(seed)))

    def random_sample(self, size=None, dtype=float):
        S.used["random.RandomState.random_sample"] += 1
        values = self._generator.random(size, dtype=_float_dtype(dtype))
        return _draw("random_sample", values, 2)       # cuRAND's draw, then CuPy's mod-1 kernel

    def standard_normal(self, size=None, dtype=float):
        S.used["random.RandomState.standard_normal"] += 1
        return _draw("standard_normal",
                     self._generator.standard_normal(size, dtype=_float_dtype(dtype)))


class Generator:
    """cupy.random.Generator (made by default_rng): random and standard_normal."""

    def __init__(self, seed=None):
        self._generator = np.random.Generator(np.random.Philox(_seed_int(seed)))

    def random(self, size=None, dtype=np.float64, out=None):
        S.used["random.Generator.random"] += 1
        values = self._generator.random(size, dtype=_float_dtype(dtype))
        return self._into(_draw("random", values), out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        S.used["random.Generator.standard_normal"] += 1
        values = self._generator.standard_normal(size, dtype=_float_dtype(dtype))
        return self._into(_draw("standard_normal", values), out)

    @staticmethod
    def _into(result, out):
        if out is None:
            return result
        _core._device(out)[...] = result._a
        return out


def default_rng(seed=None):
    S.used["random.default_rng"] += 1
    return Generator(seed)
