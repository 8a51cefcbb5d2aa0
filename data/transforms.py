"""Pixel-level transforms: greyscale, square padding, resizing, and uint8 <-> float scaling."""

import numpy as np
from PIL import Image

VALUE_RANGES = ((-1.0, 1.0), (0.0, 1.0))


def greyscale_array(image):
    """A Pillow image of any mode -> 2-D uint8 array (colour is converted, 16-bit is rescaled)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max())
        scaled = values * (255.0 / top) if top > 0 else values
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def pad_to_square(pixels):
    """Pad a 2-D array with zeros (background) on both sides of its short axis, centred."""
    height, width = pixels.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.zeros((side, side), dtype=pixels.dtype)
    square[top:top + height, left:left + width] = pixels
    return square


def resize_square(pixels, size):
    """Pad a 2-D uint8 array to a square, then resize it to (size, size) with Pillow.

    Lanczos when shrinking (sharp, little aliasing), bicubic when enlarging.
    """
    square = pad_to_square(pixels)
    if square.shape[0] == size:
        return square
    method = Image.LANCZOS if square.shape[0] > size else Image.BICUBIC
    return np.asarray(Image.fromarray(square).resize((size, size), method), dtype=np.uint8)


def check_value_range(value_range):
    """Return value_range as a tuple of two floats, or raise ValueError if it is not supported."""
    low, high = (float(v) for v in value_range)
    if (low, high) not in VALUE_RANGES:
        raise ValueError(f"value_range must be (-1, 1) or (0, 1), got {tuple(value_range)}")
    return low, high


def to_float(images, value_range=(-1, 1)):
    """uint8 images (0..255) -> float32 images in value_range. Works on NumPy and CuPy arrays."""
    low, high = check_value_range(value_range)
    return images.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)


def to_uint8(images, value_range=(-1, 1)):
    """Float images in value_range -> uint8 (0..255), clipped and rounded. Inverse of to_float."""
    low, high = check_value_range(value_range)
    scaled = (images - np.float32(low)) * np.float32(255.0 / (high - low))
    return scaled.clip(0, 255).round().astype(np.uint8)
