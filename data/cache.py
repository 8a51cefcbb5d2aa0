"""A cache of decoded, resized images, so that a large folder loads in seconds the second time.

One .npz file per request (data path, image size, split, classes) in a folder the caller chooses,
never inside the data folder. The file also stores a fingerprint of the folder's file list (names,
sizes, modification times); when the folder changes, the fingerprint no longer matches and the
cache is rebuilt and replaced.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

from .layouts import DataError

CACHE_VERSION = 1   # bump when the way images are decoded or resized changes


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


def read_cache(path, expected_fingerprint):
    """The cached arrays as a dict, or None if there is no usable cache for this file list."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["fingerprint"]) != expected_fingerprint:
                return None
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, EOFError):     # missing, truncated or foreign file
        return None


def write_cache(path, fingerprint_value, **arrays):
    """Write the arrays (plus the fingerprint) atomically: a temporary file, then os.replace."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, fingerprint=np.array(fingerprint_value), **arrays)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
