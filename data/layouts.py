"""Finding the image files of a data folder: the OASIS layout, the ADNI layout, or any folder.

Nothing here opens an image; it only lists folders, so it is cheap and never writes anything.
"""

import os
import re
from dataclasses import dataclass

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
OASIS_SPLITS = ("train", "validate", "test")
OASIS_PREFIX = "keras_png_slices_"
OASIS_MASK_PREFIX = "keras_png_slices_seg_"   # segmentation masks: never loaded as images
ADNI_SPLITS = ("train", "test")
ADNI_CLASSES = ("NC", "AD")                 # the label of a class is its index: NC = 0, AD = 1
FOLDER_SPLITS = ("train", "all")            # a plain folder has no splits: both mean every image
LAYOUTS_HELP = (
    "recognised layouts: OASIS (folders keras_png_slices_train|validate|test anywhere under the path), "
    "ADNI (AD_NC/{train,test}/{AD,NC}/*.jpeg), or any folder of PNG/JPEG images (searched recursively)"
)


class DataError(ValueError):
    """A data set cannot be loaded as asked; the message says why and what would work."""


@dataclass
class FileListing:
    """The image files a request selects, in load order, before any of them is opened."""
    layout: str                 # "OASIS", "ADNI" or "folder"
    root: str                   # the resolved path the user gave
    paths: list                 # absolute file paths
    labels: list = None         # one int per path (ADNI), or None
    class_names: list = None    # label -> name (ADNI), or None
    description: str = ""       # for ImageSet.source

    def relative(self, path):
        """`path` relative to root (every listed path starts with root)."""
        return path[len(os.path.join(self.root, "")):]


def natural_key(text):
    """Sort key that orders 'slice_2' before 'slice_10' (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def is_hidden(name):
    """Dot files and macOS zip leftovers (`__MACOSX`, `._name`) are never data."""
    return name.startswith(".") or name == "__MACOSX"


def is_skipped_folder(name):
    """Hidden folders and OASIS mask folders are never searched for images."""
    return is_hidden(name) or name.startswith(OASIS_MASK_PREFIX)


def walk(root):
    """os.walk in a stable order, skipping hidden folders and OASIS mask folders."""
    for folder, subfolders, filenames in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not is_skipped_folder(name))
        yield folder, subfolders, filenames


def image_files_under(folder):
    """All PNG/JPEG files under `folder` (recursive), in natural order of their relative paths."""
    found = []
    for parent, _, filenames in walk(folder):
        relative_parent = os.path.relpath(parent, folder) if parent != folder else ""
        for name in filenames:
            if not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS):
                sort_key = natural_key(os.path.join(relative_parent, name))
                found.append((sort_key, os.path.join(parent, name)))
    return [path for _, path in sorted(found)]


def only_one(candidates, what, root):
    """The single folder in `candidates`; several copies are ambiguous, so that is an error."""
    if len(candidates) > 1:
        listed = ", ".join(os.path.relpath(c, root) for c in candidates)
        raise DataError(f"found {len(candidates)} {what} folders under {root}: {listed}; "
                        "point the path at the copy you want")
    return candidates[0]


def find_oasis_splits(root, folders):
    """{split: folder} for every keras_png_slices_<split> folder among `folders`."""
    found = {split: [f for f in folders if os.path.basename(f) == OASIS_PREFIX + split]
             for split in OASIS_SPLITS}
    return {split: only_one(matches, OASIS_PREFIX + split, root)
            for split, matches in found.items() if matches}


def find_adni_root(root, folders):
    """The folder among `folders` that holds {train,test}/{AD,NC}, or None."""
    candidates = [folder for folder in folders
                  if any(os.path.isdir(os.path.join(folder, split, name))
                         for split in ADNI_SPLITS for name in ADNI_CLASSES)]
    return only_one(candidates, "ADNI (AD_NC)", root) if candidates else None


def check_choice(value, valid, what, layout):
    if value not in valid:
        raise DataError(f"unknown {what} {value!r} for the {layout} layout; valid: {', '.join(valid)}")


def list_oasis(root, split_folders, split):
    check_choice(split, OASIS_SPLITS + ("all",), "split", "OASIS")
    wanted = [s for s in OASIS_SPLITS if s in split_folders] if split == "all" else [split]
    if split not in split_folders and split != "all":
        raise DataError(f"no {OASIS_PREFIX}{split} folder under {root} "
                        f"(found: {', '.join(OASIS_PREFIX + s for s in split_folders)})")
    paths = [path for s in wanted for path in image_files_under(split_folders[s])]
    return FileListing("OASIS", root, paths,
                       description=f"OASIS keras_png_slices ({split}) under {root}")


def list_adni(root, adni_root, split, classes):
    check_choice(split, ADNI_SPLITS + ("all",), "split", "ADNI")
    wanted_classes = ADNI_CLASSES if classes in (None, "both") else (classes,)
    check_choice(wanted_classes[0], ADNI_CLASSES, "class", "ADNI")
    wanted_splits = ADNI_SPLITS if split == "all" else (split,)
    if not any(os.path.isdir(os.path.join(adni_root, s)) for s in wanted_splits):
        raise DataError(f"no {split} folder in the ADNI folder {adni_root}")
    paths, labels = [], []
    for s in wanted_splits:
        for name in wanted_classes:
            folder = os.path.join(adni_root, s, name)
            files = image_files_under(folder) if os.path.isdir(folder) else []
            paths += files
            labels += [ADNI_CLASSES.index(name)] * len(files)
    which = "AD and NC" if len(wanted_classes) == 2 else wanted_classes[0]
    return FileListing("ADNI", root, paths, labels, list(ADNI_CLASSES),
                       f"ADNI AD_NC ({split}, {which}) under {root}")


def list_files(path, split="train", classes=None):
    """Detect the layout under `path` (OASIS, then ADNI, then any folder) and list the wanted files."""
    root = os.path.realpath(os.path.expanduser(str(path)))
    if not os.path.exists(root):
        raise DataError(f"data path {path} does not exist; {LAYOUTS_HELP}")
    if not os.path.isdir(root):
        raise DataError(f"data path {path} is not a folder; {LAYOUTS_HELP}")
    if os.path.basename(root).startswith(OASIS_MASK_PREFIX):
        raise DataError(f"{path} holds OASIS segmentation masks, which are never loaded as images; "
                        f"point at the folder that holds {OASIS_PREFIX}train instead")
    folders = [folder for folder, _, _ in walk(root)]
    oasis_folders = find_oasis_splits(root, folders)
    adni_root = None if oasis_folders else find_adni_root(root, folders)
    if classes not in (None, "both") and adni_root is None:
        raise DataError(f"a class filter ({classes!r}) needs the ADNI layout, "
                        f"but {path} is not one; {LAYOUTS_HELP}")
    if oasis_folders:
        return list_oasis(root, oasis_folders, split)
    if adni_root is not None:
        return list_adni(root, adni_root, split, classes)
    check_choice(split, FOLDER_SPLITS, "split", "plain-folder")
    return FileListing("folder", root, image_files_under(root),
                       description=f"image folder {root}")
