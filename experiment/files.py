"""Files that are either complete or absent: write to a temporary file, then rename it.

    with atomic_write(run.path("losses.png")) as f:     # a binary file; mode="w" for text
        figure.savefig(f, format="png")

The temporary file sits in the same folder (".losses.png.<random>.tmp"), so os.replace is a
rename within one file system, which the operating system performs at once: a reader, or a run
resumed after `kill -9`, sees the old file or the new one, never half of one. If writing fails
(a full disk, a permission), the temporary file is removed and the error goes on; the old file
is untouched. A process killed while writing leaves its temporary file behind; the next run in
that folder removes it (`remove_temporaries`).

Checkpoints also call os.fsync before the rename (nn.save), so they survive a power cut too;
pictures and logs do not need that.
"""
import contextlib
import os
import secrets
import shutil

TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside `path` for writing; on success rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}"
                                     f"{TEMPORARY_SUFFIX}")
    # O_EXCL: a new file, never someone else's; mode 0o666 less the umask, like open() (tempfile's
    # files are private, 0o600, which other users of a lab machine could not look at)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def copy_atomically(source, destination):
    """shutil.copyfile, but `destination` is complete or absent (see atomic_write)."""
    with open(source, "rb") as original, atomic_write(destination) as copy:
        shutil.copyfileobj(original, copy)


def remove_temporaries(folder):
    """Delete the temporary files that killed writers left under `folder` (".<name>.<random>.tmp",
    from atomic_write, nn.save and the image cache). Call it only while no other process writes
    there (the run holds the folder's lock)."""
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
                os.remove(os.path.join(parent, name))
                removed.append(os.path.join(parent, name))
    return removed
