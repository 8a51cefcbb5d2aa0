"""Errors a user can act on, and `main`, which turns them into one line and an exit code."""
import sys

import data
import nn

from . import distributed


class ExperimentError(Exception):
    """A failure the user can act on. main() prints the message and exits with `code`."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


class CheckpointError(ExperimentError):
    """A checkpoint is missing, unreadable, or from another model."""


class NonFiniteLoss(ExperimentError):
    """A loss became nan or inf; the last good checkpoint is left as it was."""


class Interrupted(ExperimentError):
    """Ctrl-C: the script saved a checkpoint and stops."""

    def __init__(self, message):
        super().__init__(message, code=130)


def main(fn):
    """Run `fn()`; turn the errors a user can cause into a message on stderr and an exit code
    (1; 2 for an unusable device or bad flags; 130 for Ctrl-C), never a traceback. A file that
    cannot be read or written (a full disk, a permission) is one of them: the message says the
    cause and the file (files are written atomically, so nothing is left half-written)."""
    try:
        fn()
    except Interrupted as error:
        _stop(error, str(error), error.code)
    except KeyboardInterrupt as error:
        _stop(error, "\ninterrupted (nothing saved since the last checkpoint)", 130)
    except ExperimentError as error:
        _stop(error, f"error: {error}", error.code)
    except (data.DataError, nn.DeviceError, nn.CheckpointError) as error:
        _stop(error, f"error: {error}", 2 if isinstance(error, nn.DeviceError) else 1)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        _stop(error, f"error: a file could not be read or written: {error.strerror or error}{where}",
              1)


def _stop(error, message, code):
    """Print `message` on stderr and exit with `code`; in a data-parallel run, rank 0 says an error
    that every process met alike, and one met by one process alone stops them all
    (distributed.stop)."""
    distributed.stop(message, code, everywhere=getattr(error, "everywhere", False))
