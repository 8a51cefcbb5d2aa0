"""The stand-in's own bookkeeping: what a test reads to see what the GPU would have done.

    import cupy
    cupy._standin.reset()
    ...                                    # one training step
    counts = cupy._standin.counters()      # {"launches": 41, "host_reads": 1, ...}

or, for the counts of a block of code only:

    with cupy._standin.counting() as counts:
        ...
    counts.launches, counts.host_reads, counts.by_kind   # what ran inside the block

Counters (module-wide, one set per process, not per thread):
  launches          kernels a real GPU would launch: every ufunc call (operators included), every
                    reduction, matmul, copy (copy, astype, ascontiguousarray of a strided array,
                    a reshape that cannot be a view, fancy-index gather, setitem, concatenate,
                    stack, pad, where, clip, take), fill (zeros, ones, full, eye and their _like
                    forms, fill), every random draw, and ONE per call of a cupy.fuse function
                    (whatever it does inside). Views (slicing, transpose, reshape-as-view,
                    broadcast_to, as_strided) and `empty` launch nothing.
  host_reads        device-to-host reads, each of which waits for the GPU: .get(), .item(),
                    .tolist(), float(), int(), bool(), complex(), repr()/str()/format(), pickling,
                    and boolean-mask indexing (CuPy reads the mask's count back to size the result).
  syncs             explicit waits: cupy.cuda.Device().synchronize().
  host_to_device    host-to-device copies (cupy.asarray / cupy.array of host data, host index
                    arrays, host values stored through a fancy index); host_to_device_bytes: bytes.
  by_kind           launches by name ("ufunc:multiply", "reduce:sum", "matmul", ...).

Under cupyx.allow_synchronize(False) every host read and Device.synchronize() raises
cupyx.DeviceSynchronized, as on CuPy.
"""
import atexit
import collections
import contextlib
import json
import os
import sys
import threading
import warnings


class DeviceSynchronized(RuntimeError):
    """Raised when device synchronization is detected while disallowed (cupyx.allow_synchronize)."""

    def __init__(self, message=None):
        super().__init__(message or "Device synchronization was detected while disallowed.")


class _Counts:
    """One set of counters; with trace=True also `sites`: (what, "file:line") -> count, where
    `what` is a launch kind, "host read: <kind>" or "host to device", and the line is the first
    one outside the stand-in that led to it (the caller in braingen's code)."""

    def __init__(self, trace=False):
        self.launches = self.host_reads = self.syncs = 0
        self.host_to_device = self.host_to_device_bytes = 0
        self.by_kind = collections.Counter()
        self.reads_by_kind = collections.Counter()
        self.trace = trace
        self.sites = collections.Counter()

    def as_dict(self):
        return {"launches": self.launches, "host_reads": self.host_reads, "syncs": self.syncs,
                "host_to_device": self.host_to_device,
                "host_to_device_bytes": self.host_to_device_bytes,
                "by_kind": dict(self.by_kind), "reads_by_kind": dict(self.reads_by_kind)}

    def __repr__(self):
        return f"Counts({self.as_dict()})"


_totals = _Counts()
_open = []                       # the _Counts of every counting() block now open
_local = threading.local()       # allowed (synchronisation), fusing (inside a cupy.fuse call)
used = collections.Counter()     # API name -> calls: which of the stand-in's API a run used


def _write_usage(path):
    """Append this process's `used` (one JSON line) to `path`: CUPY_STANDIN_USAGE=path lists
    the API a whole test run used, child processes included."""
    if used:
        with open(path, "a") as f:
            f.write(json.dumps(dict(used)) + "\n")


if os.environ.get("CUPY_STANDIN_USAGE"):
    atexit.register(_write_usage, os.environ["CUPY_STANDIN_USAGE"])


def _each():
    yield _totals
    yield from _open


_STANDIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))    # tests/cupy_standin
_PACKAGES = tuple(os.path.join(_STANDIN, name) + os.sep for name in ("cupy", "cupyx"))


def _site():
    """"file:line" of the innermost frame outside the stand-in's packages."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGES):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"


def _record(counts, what, n=1):
    if counts.trace:
        counts.sites[(what, _site())] += n


def counters():
    """A snapshot of the process-wide counters, as a dict (see the module docstring)."""
    return _totals.as_dict()


def reset():
    """Set every process-wide counter back to zero (`used`, the API usage record, stays)."""
    global _totals
    _totals = _Counts()


@contextlib.contextmanager
def counting(trace=False):
    """Count what the block does: yields a live _Counts (attributes launches, host_reads, syncs,
    host_to_device, host_to_device_bytes, by_kind, reads_by_kind; with trace=True also sites,
    the lines of code that launched, read or copied: slower, for finding where launches come
    from)."""
    counts = _Counts(trace)
    _open.append(counts)
    try:
        yield counts
    finally:
        _open.remove(counts)


# ---- what the arrays report ------------------------------------------------------------------------

def fusing():
    return getattr(_local, "fusing", 0) > 0


@contextlib.contextmanager
def fused_call():
    """Inside a cupy.fuse call: ops launch nothing of their own, and non-elementwise ops raise."""
    _local.fusing = getattr(_local, "fusing", 0) + 1
    try:
        yield
    finally:
        _local.fusing -= 1


def not_in_fuse(name):
    """Raise if called inside a cupy.fuse function: CuPy's fusion only fuses elementwise and
    simple reduction operations."""
    if fusing():
        raise TypeError(f"{name} is not supported inside a cupy.fuse function: CuPy can only fuse "
                        "elementwise and simple reduction operations")


def launch(kind, n=1):
    """`n` kernel launches of `kind` (nothing inside a cupy.fuse call: the fusion counts one)."""
    if fusing():
        return
    for counts in _each():
        counts.launches += n
        counts.by_kind[kind] += n
        _record(counts, kind, n)


def _allowed():
    try:
        return _local.allowed
    except AttributeError:
        _local.allowed = True
        return True


def host_read(kind):
    """A device-to-host read (a wait for the GPU): counted, or DeviceSynchronized when
    synchronisation is disallowed."""
    not_in_fuse(kind)
    if not _allowed():
        raise DeviceSynchronized(f"Device synchronization was detected while disallowed: {kind}")
    for counts in _each():
        counts.host_reads += 1
        counts.reads_by_kind[kind] += 1
        _record(counts, f"host read: {kind}")


def sync(kind):
    """An explicit wait for the device (Device.synchronize), detected as CuPy does."""
    if not _allowed():
        raise DeviceSynchronized(f"Device synchronization was detected while disallowed: {kind}")
    for counts in _each():
        counts.syncs += 1


def host_to_device(nbytes):
    """A host-to-device copy of `nbytes` bytes (no wait, not a kernel)."""
    not_in_fuse("a host-to-device copy")
    for counts in _each():
        counts.host_to_device += 1
        counts.host_to_device_bytes += int(nbytes)
        _record(counts, "host to device")


@contextlib.contextmanager
def allow_synchronize(allow):
    """cupyx.allow_synchronize: allow or disallow device synchronisation in this thread. Like
    CuPy's, it warns that it is deprecated (CuPy v10 deprecated it; v14 still has it)."""
    warnings.warn("cupyx.allow_synchronize will be removed in future releases as it is not "
                  "possible to reliably detect synchronizations.", stacklevel=3)
    old = _allowed()
    _local.allowed = allow
    try:
        yield
    finally:
        _local.allowed = old
