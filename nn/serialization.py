"""nn.save / nn.load: checkpoints as .npz files, without pickle (loading never runs code).

What can be saved: a (nested) dict with string keys whose leaves are arrays (NumPy or CuPy,
numeric or bool; CuPy arrays are copied to NumPy), numbers, strings, bools, None, and lists
(or tuples) of those; a whole training checkpoint such as

    {"generator": G.state_dict(), "optim_g": opt_g.state_dict(), "epoch": 3, "config": {...}}

The file format (a plain NumPy .npz, readable with np.load(path, allow_pickle=False)):
- every array is a member named by its path, the keys joined with "/", e.g.
  "generator/conv1.weight" or "optim_g/state/0/exp_avg" (a list item's key is its index);
- one member "__structure__" holds, as a JSON string, the whole object with every array
  replaced by {"__array__": "<member name>"}; numbers, strings, bools and None live there.
Loading rebuilds the object: dicts, lists (tuples come back as lists), NumPy arrays with their
dtypes. A plain .npz written by np.savez (no "__structure__") loads as a flat dict of arrays.

`save` writes to a temporary file in the same folder and then renames it over `path`
(os.replace, atomic), so an interrupted save never destroys the previous checkpoint. The path
is used exactly as given (no ".npz" is appended).
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import is_cupy_array, to_numpy

STRUCTURE_KEY = "__structure__"
ARRAY_MARK = "__array__"


class CheckpointError(ValueError):
    """A file could not be saved or loaded as a checkpoint (the message says why)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """nn.load was given a path where no file exists."""


# ---- saving ------------------------------------------------------------------------------------

def _split(obj, path, arrays):
    """The JSON-ready skeleton of `obj`; its arrays are put into `arrays` under their paths."""
    where = "/".join(path) or "the top level"
    if isinstance(obj, np.ndarray) or is_cupy_array(obj):
        array = to_numpy(obj)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"nn.save: the array at {where} has dtype {array.dtype}; only "
                            f"numeric and bool arrays can be saved without pickle")
        name = "/".join(path)
        if name in arrays or name == STRUCTURE_KEY:
            raise ValueError(f"nn.save: two arrays would be stored under the same name {name!r}")
        arrays[name] = array
        return {ARRAY_MARK: name}
    if isinstance(obj, dict):
        skeleton = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"nn.save: dict keys must be strings, got {key!r} "
                                f"({type(key).__name__}) at {where}")
            skeleton[key] = _split(value, path + [key], arrays)
        return skeleton
    if isinstance(obj, (list, tuple)):
        return [_split(value, path + [str(i)], arrays) for i, value in enumerate(obj)]
    if isinstance(obj, np.generic):  # a NumPy scalar becomes a plain Python number
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"nn.save: cannot save a {type(obj).__name__} at {where}; use dicts, lists, "
                    f"arrays, numbers, strings, bools or None (e.g. model.state_dict())")


def _write_npz(file, arrays):
    """The .npz format: a zip of .npy members (what np.savez writes), never pickled."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def save(obj, path):
    """Save `obj` (a nested dict of arrays, numbers, strings, ...) to `path` atomically."""
    arrays = {}
    skeleton = _split(obj, [], arrays)
    arrays[STRUCTURE_KEY] = np.array(json.dumps(skeleton))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            _write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


# ---- loading -----------------------------------------------------------------------------------

def _join(skeleton, arrays, path):
    if isinstance(skeleton, dict) and set(skeleton) == {ARRAY_MARK}:
        name = skeleton[ARRAY_MARK]
        if name not in arrays:
            raise CheckpointError(f"{path}: the structure refers to a missing array {name!r}")
        return arrays[name]
    if isinstance(skeleton, dict):
        return {key: _join(value, arrays, path) for key, value in skeleton.items()}
    if isinstance(skeleton, list):
        return [_join(value, arrays, path) for value in skeleton]
    return skeleton


def _read_arrays(path):
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} holds a single .npy array, not an .npz checkpoint "
                              f"written by nn.save")
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def load(path):
    """Load what `save` wrote. Raises CheckpointError naming the path when the file is
    missing (CheckpointNotFoundError, also a FileNotFoundError), not an .npz, or damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"no checkpoint file at {path!r}")
    try:
        arrays = _read_arrays(path)
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"{path!r} is not a readable .npz checkpoint (damaged, truncated "
                              f"or another format): {type(error).__name__}: {error}") from error
    if STRUCTURE_KEY not in arrays:
        return arrays  # a plain .npz from np.savez: a flat dict of arrays
    try:
        skeleton = json.loads(arrays.pop(STRUCTURE_KEY).item())
    except ValueError as error:
        raise CheckpointError(f"{path!r}: its {STRUCTURE_KEY} entry is not valid JSON "
                              f"({error})") from error
    return _join(skeleton, arrays, path)
