"""The held-out rule, the same everywhere: of a data set's images, in the loader's order, every
fifth one (index % 5 == 4) is held out.

train_vqvae.py never trains on the held-out slices (they measure its reconstructions and its
prior's bits per code), and every sample score (evaluation/report.py, compare.py) uses them as
the "as good as real" reference against the other four fifths.
"""
import numpy as np

HELD_OUT_EVERY, HELD_OUT_INDEX = 5, 4       # image i is held out when i % 5 == 4


def split_held_out(array):
    """(training part, held-out part) of any array whose first axis runs over the images (the
    images themselves, or their slice levels)."""
    held = np.arange(len(array)) % HELD_OUT_EVERY == HELD_OUT_INDEX
    return array[~held], array[held]
