"""NumPy (CPU) or CuPy (GPU): finding the array module and moving arrays between devices.

Op code never consults a global switch: it asks `get_array_module(array)` which library the
array belongs to and uses that. Moving data from one device to another is always explicit
(`Tensor.to("gpu")`, `Module.to("gpu")`), and an op that sees arrays from both is an error.

The GPU needs CuPy 12 or newer (CUPY_FLOOR): an older CuPy is refused with a message naming its
version, like a missing CuPy or a missing CUDA device.
"""
import re
import warnings

import numpy as np

DEVICES = ("cpu", "gpu")
CUPY_FLOOR = 12   # oldest CuPy major version supported: ScatterAdd (nn/ops.py) needs cupy.add.at


class DeviceError(RuntimeError):
    """The GPU was asked for but cannot be used, or arrays from two devices were mixed."""


def _import_cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def gpu_unavailable_reason():
    """Why "gpu" cannot be used right now, or None when it can."""
    cupy = _import_cupy()
    if cupy is None:
        return ("CuPy is not installed, so the GPU cannot be used. Install the CuPy build that "
                "matches your CUDA version, e.g. `pip install cupy-cuda12x`, or use --device cpu.")
    too_old = cupy_too_old(cupy.__version__)
    if too_old:
        return too_old
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        return (f"CuPy is installed but no CUDA device can be used ({error}). Check the NVIDIA "
                "driver with `nvidia-smi`, or use --device cpu.")
    if count == 0:
        return "CuPy is installed but no CUDA device was found. Use --device cpu."
    return None


def cupy_too_old(version):
    """A message when CuPy `version` (e.g. "11.6.0") is older than CUPY_FLOOR, else None."""
    found = re.match(r"\d+", str(version))
    if found and int(found.group()) >= CUPY_FLOOR:
        return None
    return (f"CuPy {version} is installed, but braingen needs CuPy {CUPY_FLOOR} or newer (it uses "
            "cupy.add.at). Upgrade it, e.g. `pip install -U cupy-cuda12x`, or use --device cpu.")


def gpu_available():
    return gpu_unavailable_reason() is None


def array_module_for(device):
    """The array library behind a device name: numpy for "cpu", cupy for "gpu"."""
    if device == "cpu":
        return np
    if device == "gpu":
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise DeviceError(reason)
        return _import_cupy()
    raise ValueError(f"unknown device {device!r}: use one of {DEVICES}")


def is_cupy_array(array):
    return type(array).__module__.startswith("cupy")


def get_array_module(array):
    """numpy or cupy, whichever `array` belongs to (numpy for Python scalars)."""
    if is_cupy_array(array):
        return _import_cupy()
    return np


def device_of(array):
    return "gpu" if is_cupy_array(array) else "cpu"


def to_device(array, device):
    """A copy of `array` on `device` (the same array when it is already there)."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get()
    return array_module_for("gpu").asarray(array)


_fused = {}   # (array module, function) -> cupy.fuse(function): one kernel, compiled on first use
_unfused = set()   # functions CuPy could not fuse: they run as plain array code


def elementwise(xp, function):
    """`function` of arrays and scalars, element by element, as ONE kernel on xp's device:
    cupy.fuse(function) on CuPy (made once per function), the function itself on NumPy.

    A fused function may only use element-wise operations, astype and where (no indexing,
    reshaping or new arrays: pass views in instead); it may return a tuple of arrays, and it
    may update its array arguments in place. On NumPy it runs as written, so a fused function
    that repeats the plain code's operations in their order gives the same bits. Scalars go in
    in the arrays' dtype (x.dtype.type(c)): CuPy compiles one kernel per set of dtypes."""
    if xp is np or function in _unfused:
        return function
    if (xp, function) not in _fused:
        fused = xp.fuse(kernel_name=function.__name__)(function)

        def fused_or_plain(*args):
            """The fused kernel; should CuPy refuse to compile it (its fusion rules differ
            between versions), the same function unfused from then on: right, with more launches."""
            try:
                return fused(*args)
            except Exception as error:                  # raised before anything ran
                warnings.warn(f"cupy.fuse could not compile {function.__name__} ({error}); "
                              f"it runs unfused: the same values, more kernel launches")
                _unfused.add(function)
                _fused.pop((xp, function), None)
                return function(*args)

        _fused[xp, function] = fused_or_plain
    return _fused[xp, function]


def to_numpy(array):
    """A NumPy array, copied from the GPU when needed."""
    return array.get() if is_cupy_array(array) else np.asarray(array)
