"""cupy.cuda.runtime for the stand-in: one pretend device (an 80 GiB one, so that the scripts'
memory checks pass for any setting a course would use). Its name says what it is."""
NAME = b"CuPy stand-in (NumPy on the CPU, no GPU)"
TOTAL_BYTES = 80 * 2 ** 30


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    if device != 0:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")


def memGetInfo():
    """(free, total) bytes of the pretend device."""
    return TOTAL_BYTES, TOTAL_BYTES


def runtimeGetVersion():
    return 12040


def driverGetVersion():
    return 12040


def getDeviceProperties(device):
    setDevice(device)
    return {"name": NAME, "totalGlobalMem": TOTAL_BYTES, "major": 0, "minor": 0,
            "multiProcessorCount": 1}

