"""cupy.cuda, as far as braingen touches it: one pretend device, its runtime queries, the
memory pools (which hold nothing: the stand-in keeps its arrays in host memory) and the null
stream. Device().synchronize() is a detected synchronisation (it raises under
cupyx.allow_synchronize(False), as on CuPy); Stream.synchronize() is counted but not detected."""
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

    @property
    def mem_info(self):
        return runtime.memGetInfo()

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


class Stream:
    """Only the null stream: synchronize() waits for nothing, but is counted as a sync."""

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.null = null

    def synchronize(self):
        S.used["cuda.Stream.synchronize"] += 1
        S.sync("Stream.synchronize", detected=False)

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


Stream.null = Stream(null=True)


def get_current_stream():
    return Stream.null


class MemoryPool:
    """CuPy's memory pool interface; the stand-in's arrays live in host memory, so it holds none."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        return None

    def set_limit(self, size=None, fraction=None):
        return None

    def get_limit(self):
        return 0


class PinnedMemoryPool(MemoryPool):
    pass
