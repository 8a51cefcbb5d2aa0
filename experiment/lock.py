"""One run per output folder: a lock that a second process cannot take, and a dead one cannot keep.

`lock_folder(out)` opens <out>/.lock and takes an exclusive `fcntl.flock` on it, then writes its
own PID and command line into the file. A second process asking for the same folder finds the
lock taken and stops with a message naming the holder (read from the file).

Why flock and not a file that merely holds a PID: the operating system releases a flock when its
process ends, however it ends (`kill -9`, out of memory, a closed laptop's crash), so a lock left
behind by a killed run never blocks `--resume`; and taking it is one atomic call, so two runs
started at the same moment cannot both succeed. A PID file needs a liveness test
(os.kill(pid, 0)) that is fooled when the PID is reused by another process, and a
check-then-write that two processes can interleave. The lock file itself stays in the folder.

Locks are per process: asking again for a folder this process already holds returns at once
(tests start several runs in one process). Where fcntl does not exist (Windows) no lock is
taken. Network file systems may not honour flock.
"""
import os
import sys

from .errors import ExperimentError

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None

LOCK_FILE = ".lock"
_held = {}                   # real path of a folder -> the open lock file this process holds


def lock_folder(folder):
    """Create `folder` if needed and lock it for this process until it exits; raise
    ExperimentError naming the other process if one holds it."""
    key = os.path.realpath(folder)
    if key in _held or fcntl is None:
        return
    os.makedirs(folder, exist_ok=True)
    file = open(os.path.join(folder, LOCK_FILE), "a+")
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        error = _in_use(folder, file)
        file.close()
        raise error from None
    except OSError:          # a file system without locks (some network ones): run unlocked
        file.close()
        return
    file.seek(0)
    file.truncate()
    file.write(f"PID {os.getpid()}: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    file.flush()
    _held[key] = file


def check_free(folder):
    """Raise ExperimentError if another process holds `folder`'s lock; take nothing and write
    nothing (so a run can name the other one before refusing anything else)."""
    path = os.path.join(folder, LOCK_FILE)
    if fcntl is None or os.path.realpath(folder) in _held or not os.path.isfile(path):
        return
    with open(path) as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(folder, file) from None
        except OSError:      # a file system without locks: nothing to check
            pass


def _in_use(folder, file):
    """The error for a folder whose lock `file` another process holds, naming that process."""
    file.seek(0)
    holder = file.read().strip() or "another process"
    return ExperimentError(f"{folder} is in use by another run ({holder}); wait for it to finish "
                           "or stop it, or choose another --out")


def release(folder):
    """Give up this process's lock on `folder` (a finished run need not: exiting releases it)."""
    file = _held.pop(os.path.realpath(folder), None)
    if file is not None:
        file.close()             # closing the file releases the flock
