"""cupyx for the CuPy stand-in: the synchronisation detector only (see cupy/_standin.py)."""
from cupy._standin import DeviceSynchronized, allow_synchronize  # noqa: F401
