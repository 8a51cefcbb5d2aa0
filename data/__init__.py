"""From image files to batches: the bundled default set, OASIS/ADNI/any-folder loaders, batching.

    import data
    ds = data.load_images(path=None, image_size=64, split="train")   # ImageSet, uint8 (N, 64, 64)
    loader = data.BatchLoader(ds.images, batch_size=32, seed=0)
    for batch in loader.epoch(0):                                    # float32 (32, 1, 64, 64)
        ...

See data/README.md for the layouts, the bundled set's provenance, augmentation and caching.
"""

from .batching import BatchLoader
from .held_out import split_held_out
from .layouts import DataError
from .levels import check_positions_known, slice_levels
from .loading import ImageSet, count_images, load_images
from .transforms import to_float, to_uint8

__all__ = ["BatchLoader", "DataError", "ImageSet", "check_positions_known", "count_images",
           "load_images", "slice_levels", "split_held_out", "to_float", "to_uint8"]
