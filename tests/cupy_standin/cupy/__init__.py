"""A strict CuPy stand-in for tests: NumPy underneath, CuPy 13's rules on top, no GPU needed.

It lets CI run braingen's GPU path (`--device gpu`) on a machine without a GPU and catch what
would fail on one. It is test code (tests/cupy_standin/), importable only when a test puts this
folder on sys.path / PYTHONPATH (tests/conftest.py: `pytest --device gpu` without CuPy, and the
`cupy_standin` fixture); it never shadows a real CuPy in a normal run. `cupy.__standin__` is True.

What it enforces, as CuPy 13 does (each rule has a test in tests/test_cupy_standin.py that fails
on plain NumPy):
  * its own `ndarray` type, `type(a).__module__ == "cupy"`;
  * `__array__` raises TypeError: np.asarray(device array), a NumPy array indexed by a device
    array, Pillow or matplotlib given a device array all fail as on a GPU;
  * a NumPy array (any shape, 0-d included) in arithmetic, a ufunc, where, clip, matmul,
    concatenate/stack, ... is a TypeError ("Unsupported type"); Python numbers and NumPy scalars
    are accepted. Host data reaches the device only through asarray/array, ndarray.set, index
    arrays and values stored through a fancy index (counted as host-to-device copies); storing
    a non-0-d NumPy array through a BASIC index (`a[...] = host`) is CuPy's fill() and raises
    ValueError, as on CuPy;
  * NumPy functions given device arrays (`__array_function__`) and NumPy ufuncs
    (`__array_ufunc__`) run the stand-in's own version where it has one, else raise TypeError;
  * views share memory: basic slicing (0-d results included), transpose, swapaxes, squeeze,
    reshape/ravel when a view is possible (else a counted copy), broadcast_to and
    cupy.lib.stride_tricks.as_strided; writes through them reach the base array;
  * reductions (sum, mean, max, argmax, ...) return 0-d device arrays, never NumPy scalars;
  * add.at only for the dtypes CuPy's atomicAdd supports: int32, float16, float32, float64,
    uint32, uint64 (int64 is refused with CuPy's TypeError; checked in CuPy v12-v14's
    _routines_indexing.pyx);
  * out-of-range integer array indices WRAP around (a[[1, 3]] of a 3-element array is
    a[[1, 0]]), in getitem, setitem, take and add.at, as CuPy's indexing kernels do (NumPy raises
    IndexError; CuPy never checks);
  * host reads are counted, and raise cupyx.DeviceSynchronized under
    cupyx.allow_synchronize(False): .get(), .item(), .tolist(), float(), int(), bool(),
    complex(), repr()/str()/format(), pickling, boolean-mask indexing and nonzero (CuPy reads the
    count back); Device().synchronize() likewise; there is no __index__ (range(device_scalar)
    fails, as on CuPy);
  * kernel launches are counted (cupy._standin: counters(), reset(), counting(); see there),
    so tests can assert launches and host reads per training step;
  * type promotion is CuPy 13's, not NumPy 2's: with a Python number or a NumPy scalar, an
    array's dtype wins when the array's kind (bool < int < float < complex) is at least the
    scalar's, and the scalar takes part with the smallest type holding its VALUE (legacy
    value-based casting; NumPy scalars are treated like Python scalars). So
    float32 array * np.float64(0.5) is float32 (NumPy 2 and CuPy 14: float64), int8 array + 1000
    is int16, float32 array * 1e300 is float64. 0-d DEVICE arrays are arrays, not scalars:
    float32 array * 0-d float64 device array is float64. (cupy/_core/_kernel.pyx,
    _check_should_use_min_scalar, v13.6.0.) The stand-in computes the same on NumPy 1.26 and 2.x;
  * cupy.fuse(f): f runs on the device arrays, counted as ONE launch per call; inside it only
    elementwise operations, astype, where, clip and reductions are allowed (indexing, reshape,
    matmul, creation, random draws and host reads raise TypeError), as CuPy only fuses
    elementwise and reduction operations. Called with no device array it is the plain function.

What it does NOT do, and why:
  * no cupy.ElementwiseKernel / RawKernel: honouring them would mean compiling CUDA C; use
    cupy.fuse, which the stand-in runs faithfully (AttributeError on ElementwiseKernel tells you).
  * no speed, memory or asynchrony: every op runs at once on the CPU; memory pools report 0 bytes
    and the pretend device reports 80 GiB free. Only a real GPU shows kernel speed and memory.
  * random draws are reproducible but are NOT cuRAND's values.
  * float-to-integer casts of negative or infinite values follow NumPy, not CUDA (CuPy gives 0 /
    the saturated value); duplicate indices in a scatter store the last value (undefined on CuPy).
  * inside cupy.fuse, promotion of a float64 scalar PARAMETER with float32 arrays follows the rule
    above; real CuPy 13's fusion decides it from NumPy's can_cast, which differs between NumPy 1
    and 2: pass scalars to a fused function already in the arrays' dtype (np.float32(lr)).
  * launch counts are one per call (a reduction or matmul may be several kernels on a GPU; eye
    and pad count 2); they measure Python-level launches, the thing a launch-bound step pays for.
  * only the API below exists: anything else is an AttributeError, on purpose (add it here, after
    checking CuPy 13 has it with the same behaviour).

The API: what braingen used in a whole `pytest --device gpu` run (CUPY_STANDIN_USAGE lists it),
the ufuncs behind ndarray's operators, and cupy.fuse, get_array_module and cupy.random's
Generator for issue 22's fused optimizer and device noise:
  module: ndarray, ufunc, array, asarray, ascontiguousarray, empty, empty_like, zeros,
    zeros_like, ones, ones_like, full, arange, eye, concatenate, stack, where (3 arguments),
    clip, matmul, take, pad (constant), broadcast_to, sum, mean, max, min, argmax, argmin;
    ufuncs: add (and add.at), subtract, multiply, divide/true_divide, floor_divide, power,
    remainder/mod, negative, positive, absolute/abs, invert, bitwise_and, bitwise_or,
    bitwise_xor, less, less_equal, greater, greater_equal, equal, not_equal, sqrt, square, exp,
    log, log1p, tanh, floor, maximum, minimum; fuse, get_array_module, get_default_memory_pool,
    __version__ ("13.6.0"), __standin__;
  cupy.random: RandomState(seed, method) with seed, random_sample, standard_normal;
    default_rng / Generator with random, standard_normal;
  cupy.cuda: Device (id, use, synchronize, with), get_device_id, MemoryPool (used_bytes,
    total_bytes, free_all_blocks), runtime (getDeviceCount, getDevice, setDevice, memGetInfo,
    runtimeGetVersion, driverGetVersion, getDeviceProperties), curand (CURAND_RNG_PSEUDO_*);
  cupy.lib.stride_tricks.as_strided; cupyx: allow_synchronize, DeviceSynchronized.
  ndarray: shape, ndim, size, dtype, itemsize, nbytes, strides, flags, device, T, len(), iter(),
    get, item, tolist, copy, astype, reshape, transpose, repeat, sum, mean, max, min, argmax,
    argmin, [] (get and set), the arithmetic, comparison, bitwise and in-place operators, @,
    abs(), -, +, ~, float(), int(), bool(), complex(), repr(), str(), format(), copy.copy /
    deepcopy, pickle.
"""
import builtins

import numpy as np

from . import _core, _standin, cuda, lib, random  # noqa: F401
from ._core import FUNCTIONS as _FUNCTIONS
from ._core import ndarray, ufunc  # noqa: F401

__version__ = "13.6.0"         # the CuPy whose rules the stand-in follows
__standin__ = True

globals().update(_FUNCTIONS)      # NB: this module's sum, max and min are CuPy's now


def get_array_module(*args):
    """cupy if any argument is a device array, else numpy (for code that runs on both, such as
    a cupy.fuse function)."""
    import cupy
    return cupy if builtins.any(isinstance(a, ndarray) for a in args) else np


_memory_pool = cuda.MemoryPool()


def get_default_memory_pool():
    return _memory_pool


class _Fused:
    """A function fused into one kernel (cupy.fuse): see the package docstring."""

    def __init__(self, func, kernel_name=None):
        self.func, self.name = func, kernel_name or func.__name__
        self.__name__, self.__doc__ = func.__name__, func.__doc__

    def __call__(self, *args):
        _standin.used[f"fuse:{self.name}"] += 1
        if not builtins.any(isinstance(a, ndarray) for a in args):
            return self.func(*args)                  # NumPy arrays or scalars: the plain function
        for a in args:
            if not isinstance(a, ndarray) and not _core._is_scalar(a):
                raise TypeError(f"Unsupported type {type(a)}")
        _standin.not_in_fuse("a call of a fused function")
        with _standin.fused_call():
            result = self.func(*args)
        _standin.launch(f"fuse:{self.name}")
        return result


def fuse(*args, **kwargs):
    """cupy.fuse, as a decorator with or without arguments (kernel_name=...)."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return _Fused(args[0])
    return lambda func: _Fused(func, kwargs.get("kernel_name"))
