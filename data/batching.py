"""Seeded, resumable mini-batches: uint8 images in memory -> float32 batches on the chosen device.

Each batch goes to the device as uint8 and is augmented and scaled there (data/augment.py), so on
the GPU the training thread only draws the random numbers and copies a quarter of the bytes.
"""

import numpy as np

from nn.backend import array_module_for

from .augment import augment
from .layouts import DataError
from .transforms import check_value_range, to_float

DEVICES = ("cpu", "gpu")


class BatchLoader:
    """Shuffled (and by default augmented) float32 batches of shape (B, 1, S, S).

    Everything random in epoch e (the shuffle order and each batch's augmentation) is drawn from
    generators seeded with (seed, e) and (seed, e, batch index) only, so a run resumed at
    `epoch(e, start_batch=k)` sees exactly the batches an uninterrupted run would have seen.

    share=(rank, processes): a process of a data-parallel run (experiment/distributed.py) takes
    rows rank, rank + processes, ... of every batch. The order and every augmentation parameter
    are still drawn for the whole batch, so its rows are exactly those rows of the one-process
    batch, whatever the number of processes.
    """

    def __init__(self, images, batch_size=32, seed=0, device="cpu", augment=True,
                 value_range=(-1, 1), drop_last=True):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(f"BatchLoader wants uint8 images of shape (N, S, S), "
                            f"got {images.dtype} {images.shape}")
        if int(batch_size) < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if drop_last and batch_size > len(images):
            raise DataError(f"batch_size {batch_size} is larger than the {len(images)} images and "
                            "drop_last=True would leave no batch; use a smaller batch size")
        if int(seed) < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed}")
        if device not in DEVICES:
            raise DataError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        self.images = images
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = device
        self.augment = augment
        self.value_range = check_value_range(value_range)
        self.drop_last = drop_last
        self.xp = array_module_for(device)   # numpy, or cupy (a clear error when it is unusable)

    def __len__(self):
        """Batches per epoch."""
        full, rest = divmod(len(self.images), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def order(self, epoch):
        """The shuffled image indices of `epoch`."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

    def batch(self, epoch, index, order=None, share=(0, 1)):
        """Batch number `index` of `epoch` (computes the epoch's order unless it is given); with
        `share` (rank, processes), that process's rows of it."""
        order = self.order(epoch) if order is None else order
        rank, processes = share
        rows = order[index * self.batch_size:(index + 1) * self.batch_size][rank::processes]
        pixels = self.xp.asarray(self.images[rows])   # to the device as uint8, a quarter of float32
        if self.augment:                   # on the device; the random draws on the host
            pixels = augment(pixels, np.random.default_rng([self.seed, epoch, index]), share)
        return to_float(pixels, self.value_range)[:, None, :, :]

    def epoch(self, epoch, start_batch=0, share=(0, 1)):
        """Yield the batches of `epoch` (this `share` of each), from batch number `start_batch` on."""
        if not 0 <= start_batch <= len(self):
            raise DataError(f"start_batch must be in 0..{len(self)}, got {start_batch}")
        order = self.order(epoch)
        for index in range(start_batch, len(self)):
            yield self.batch(epoch, index, order, share)
