"""A cache of decoded, resized images, so that a large folder loads in seconds the second time.

One .npz file per request (data path, image size, split, classes) in a folder the caller chooses,
never inside the data folder. The file also stores a fingerprint of the folder's file list (names,
sizes, modification times); when the folder changes, the fingerprint no longer matches and the
cache is rebuilt and replaced.

A cache file is never trusted blindly: it also stores a SHA-256 checksum of its arrays, and a file
that cannot be read (truncated, not a zip, a failed CRC), lacks an array, has a wrong checksum or
images of the wrong shape is treated as absent: the images are decoded again and the file is
replaced (written atomically, so a run killed while writing it leaves no half file).
"""

import hashlib
import json
import os
import tempfile
import warnings

import numpy as np

from .layouts import DataError

CACHE_VERSION = 2   # bump when the way images are decoded or resized changes (2: checksums)
ARRAYS = ("images", "kept", "skipped", "reasons")


def digest(value):
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def cache_path(cache_dir, root, image_size, split, classes):
    """Where the cache of this request lives; refuses a cache folder inside the data folder."""
    cache_dir = os.path.realpath(os.path.expanduser(str(cache_dir)))
    if os.path.commonpath([cache_dir, root]) == root:
        raise DataError(f"cache_dir {cache_dir} is inside the data folder {root}; "
                        "the loaders never write there, choose a folder outside it")
    key = digest([CACHE_VERSION, root, image_size, split, classes])[:20]
    return os.path.join(cache_dir, f"images-{image_size}px-{key}.npz")


def fingerprint(paths):
    """A digest of the file list: every path with its size and modification time."""
    entries = []
    for path in paths:
        info = os.stat(path)
        entries.append([path, info.st_size, info.st_mtime_ns])
    return digest([CACHE_VERSION, entries])


def checksum(arrays):
    """SHA-256 of the arrays' names, dtypes, shapes and bytes, in a fixed order."""
    h = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {array.dtype.str} {array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def read_cache(path, expected_fingerprint, image_size):
    """The cached arrays as a dict, or None if there is no usable cache for this file list:
    no file, a stale fingerprint, or a damaged file (see the module docstring)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["fingerprint"]) != expected_fingerprint:
                return None
            arrays = {name: stored[name] for name in ARRAYS}
            intact = str(stored["checksum"]) == checksum(arrays)
    except Exception:          # truncated, not a zip, a failed CRC, a missing array, ...
        intact = False
    if intact:
        images, kept = arrays["images"], arrays["kept"]
        intact = (images.dtype == np.uint8 and images.shape[1:] == (image_size, image_size)
                  and kept.dtype == bool and len(images) == kept.sum())
    if not intact:
        warnings.warn(f"the image cache {path} is damaged; decoding the images again",
                      stacklevel=3)
        return None
    return arrays


def write_cache(path, fingerprint_value, **arrays):
    """Write the arrays (plus the fingerprint and their checksum) atomically: a temporary file,
    then os.replace."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp",
                                         prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, fingerprint=np.array(fingerprint_value),
                     checksum=np.array(checksum(arrays)), **arrays)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
