"""Argument checks shared by the layers and ops."""
import numpy as np


def int_pair(value, name, minimum):
    """An int or a pair of ints -> (h, w), each at least `minimum` (1 for kernel sizes and
    strides, 0 for paddings). Anything else is a ValueError that names the argument."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(isinstance(v, (int, np.integer)) for v in pair)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])
