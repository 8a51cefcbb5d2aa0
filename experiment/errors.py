"""Errors a user can act on, and `main`, which turns them into one line and an exit code."""
import sys

import data
import nn


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
        print(error, file=sys.stderr)
        sys.exit(error.code)
    except KeyboardInterrupt:
        print("\ninterrupted (nothing saved since the last checkpoint)", file=sys.stderr)
        sys.exit(130)
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.code)
    except (data.DataError, nn.DeviceError, nn.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, nn.DeviceError) else 1)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: a file could not be read or written: {error.strerror or error}{where}",
              file=sys.stderr)
        sys.exit(1)
