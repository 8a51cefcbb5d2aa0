"""load_images: a data folder (or the bundled set) -> an ImageSet of uint8 images of one size."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import cache
from .layouts import OASIS_SPLITS, DataError, check_choice, list_files
from .transforms import greyscale_array, resize_square

BUNDLED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mni152_axial_256.npz")
BUNDLED_SPLITS = OASIS_SPLITS + ("all",)
BUNDLED_TEST_SLICE, BUNDLED_VALIDATE_SLICE = 4, 9   # of every 10 neighbouring slices


@dataclass
class ImageSet:
    """Images ready for batching. labels/class_names are None when the layout has no classes."""
    images: np.ndarray          # uint8 (N, S, S)
    labels: np.ndarray          # int64 (N,) or None
    class_names: list           # label -> name, or None
    files: list                 # one name per image, relative to the data path
    source: str                 # human-readable description

    def __len__(self):
        return len(self.images)


def read_image(path, image_size):
    """(uint8 (S, S) array, None) for a readable image, or (None, reason) for a broken one."""
    try:
        with Image.open(path) as image:
            pixels = greyscale_array(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return None, f"{type(error).__name__}: {error}"
    return resize_square(pixels, image_size), None


def read_images(paths, image_size):
    """Decode and resize all files (in threads; Pillow releases the GIL while decoding).

    Returns (images (M, S, S) uint8, kept: bool per path, reasons: {path: why it was skipped}).
    """
    images = np.zeros((len(paths), image_size, image_size), dtype=np.uint8)
    kept = np.ones(len(paths), dtype=bool)
    reasons = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda path: read_image(path, image_size), paths)
        for index, (pixels, reason) in enumerate(results):
            if reason is None:
                images[index] = pixels
            else:
                kept[index] = False
                reasons[paths[index]] = reason
    return (images if kept.all() else images[kept]), kept, reasons


def report_skipped(reasons, listing, strict):
    """Warn about each unreadable file and give a count; with strict=True the first is an error."""
    for path, reason in reasons.items():
        if strict:
            raise DataError(f"cannot read image {path} ({reason}); "
                            "fix or remove it, or load without strict to skip unreadable files")
        warnings.warn(f"skipping unreadable image {path} ({reason})", stacklevel=4)
    if reasons:
        warnings.warn(f"skipped {len(reasons)} of {len(listing.paths)} images that could not be "
                      f"read under {listing.root}", stacklevel=4)


def list_request(path, split, classes):
    """The files a folder request selects; a request without any is an error."""
    listing = list_files(path, split, classes)
    if not listing.paths:
        raise DataError(f"no PNG/JPEG images found under {path} ({listing.description})")
    return listing


def load_folder(path, image_size, split, classes, strict, cache_dir):
    listing = list_request(path, split, classes)
    stored = None
    if cache_dir is not None:
        cache_file = cache.cache_path(cache_dir, listing.root, image_size, split, classes)
        fingerprint = cache.fingerprint(listing.paths)
        stored = cache.read_cache(cache_file, fingerprint, image_size)
    if stored is None:
        images, kept, reasons = read_images(listing.paths, image_size)
        if cache_dir is not None:
            cache.write_cache(cache_file, fingerprint, images=images, kept=kept,
                              skipped=np.array(list(reasons), dtype=str),
                              reasons=np.array(list(reasons.values()), dtype=str))
    else:
        images, kept = stored["images"], stored["kept"]
        reasons = dict(zip(stored["skipped"].tolist(), stored["reasons"].tolist()))
    report_skipped(reasons, listing, strict)
    if not kept.any():
        raise DataError(f"none of the {len(listing.paths)} images under {path} could be read")
    files = [listing.relative(p) for p, ok in zip(listing.paths, kept) if ok]
    labels = None
    if listing.labels is not None:
        labels = np.array(listing.labels, dtype=np.int64)[kept]
    return ImageSet(images, labels, listing.class_names, files,
                    f"{listing.description}, {len(files)} images")


def bundled_split(count, split):
    """Indices of the bundled slices in `split`: every 10th slice is test, another 10th validate."""
    position = np.arange(count) % 10
    if split == "all":
        return np.arange(count)
    if split == "test":
        return np.flatnonzero(position == BUNDLED_TEST_SLICE)
    if split == "validate":
        return np.flatnonzero(position == BUNDLED_VALIDATE_SLICE)
    return np.flatnonzero((position != BUNDLED_TEST_SLICE) & (position != BUNDLED_VALIDATE_SLICE))


def check_bundled_request(split, classes):
    """The bundled set has the splits of BUNDLED_SPLITS and no classes."""
    if classes not in (None, "both"):
        raise DataError(f"a class filter ({classes!r}) needs the ADNI layout; the bundled set "
                        "has no classes")
    check_choice(split, BUNDLED_SPLITS, "split", "bundled")


def load_bundled(image_size, split, classes=None):
    """The bundled MNI ICBM152 2009a axial slices (see data/README.md), resized to image_size."""
    check_bundled_request(split, classes)
    with np.load(BUNDLED_FILE, allow_pickle=False) as stored:
        slices, z_mm = stored["images"], stored["z_mm"]
    chosen = bundled_split(len(slices), split)
    images = np.stack([resize_square(slices[i], image_size) for i in chosen])
    files = [f"mni152_axial_z{int(z_mm[i]):+04d}mm" for i in chosen]
    source = f"bundled MNI ICBM152 2009a template, {len(chosen)} axial slices ({split})"
    return ImageSet(images, None, None, files, source)


def load_images(path=None, image_size=64, split="train", classes=None, strict=False,
                cache_dir=None):
    """Load a data set as uint8 images of shape (N, image_size, image_size).

    path: None for the bundled set; otherwise a folder holding the OASIS layout (anywhere under it),
        the ADNI AD_NC layout, or any PNG/JPEG images (recursive), detected in that order.
    split: "train" (default), "validate", "test" or "all" for OASIS and the bundled set;
        "train", "test" or "all" for ADNI; "train" or "all" (both: every image) for a plain folder.
    classes: ADNI only: "AD", "NC", or None/"both". Labels: NC = 0, AD = 1 (see class_names).
    strict: raise DataError on the first unreadable image instead of skipping it with a warning.
    cache_dir: a folder (outside the data folder) for a cache of the decoded images; None: no cache.
    """
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if path is None:
        return load_bundled(int(image_size), split, classes)
    return load_folder(path, int(image_size), split, classes, strict, cache_dir)


def count_images(path=None, split="train", classes=None):
    """How many image files load_images(path, split=split, classes=classes) would read, found by
    listing folders without opening any image (unreadable files count too). Raises DataError for
    every request load_images refuses before decoding: a missing folder, an unknown split or
    class, a folder without images. The scripts call it before they write anything."""
    if path is None:
        check_bundled_request(split, classes)
        with np.load(BUNDLED_FILE, allow_pickle=False) as stored:
            return len(bundled_split(len(stored["z_mm"]), split))
    return len(list_request(path, split, classes).paths)
