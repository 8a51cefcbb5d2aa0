"""cupy.cuda, as far as braingen touches it: one pretend device, its runtime queries and the
memory pool (which holds nothing: the stand-in keeps its arrays in host memory).
Device().synchronize() is a counted synchronisation, detected (it raises under
cupyx.allow_synchronize(False)) as on CuPy."""
from .. import _standin as S
from . import curand, runtime  # noqa: F401


class Device:
    """The one pretend GPU, number 0."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id >= runtime.getDeviceCount():
            raise runtime.CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def use(self):
        return self

    def synchronize(self):
        S.used["cuda.Device.synchronize"] += 1
        S.sync("Device.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


def get_device_id():
    return 0


class MemoryPool:
    """CuPy's memory pool, as gpu_check reads it; the stand-in's arrays live in host memory, so
    it holds none."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        return None
