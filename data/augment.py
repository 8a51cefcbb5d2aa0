"""Seeded augmentation of brain slices: left-right flip, small affine, smooth elastic deformation.

All three are folded into one coordinate map per image, and every image of the batch is resampled in
one vectorised bilinear pass (zero, i.e. background, outside the frame). Coordinates are normalised
to [-1, 1] across the image, so the settings below mean the same at every image size.

The work runs on the images' device (NumPy or CuPy, whichever holds them), but every random number
is drawn on the host from the NumPy generator given, in the same order on both devices: a GPU batch
equals the CPU batch of the same seed up to float rounding.
"""

import numpy as np

from nn.backend import get_array_module

# OASIS slices are registered to an atlas, so real brains differ in shape and size far more than in
# position: the elastic part and the zoom carry the "other brains", rotation and shift stay small.
# (Shifts also cost the course metric most: augmented copies of the bundled slices score a
# nearest-neighbour SSIM of 0.58 against the originals with 3% shifts and 5 degrees, 0.68 with
# the settings below; measured at 64x64, docs/dcgan.md.)
FLIP_PROBABILITY = 0.5
MAX_ROTATION_DEGREES = 3.0
MAX_SCALE_CHANGE = 0.07        # zoom factor drawn from [0.93, 1.07]
MAX_SHIFT = 0.01               # up to 1% of the image side in x and in y
ELASTIC_STD = 0.012            # standard deviation of the elastic displacement, fraction of the side
ELASTIC_CONTROL_POINTS = 8     # random displacements on an 8x8 lattice, smoothed over the frame


def pixel_centres(size):
    """Normalised coordinates (-1..1) of the centres of `size` pixels."""
    return (2 * np.arange(size, dtype=np.float32) + 1) / size - 1


def smoothing_matrix(size, control_points):
    """(size, control_points) Gaussian weights from a coarse lattice to every pixel.

    `K @ noise @ K.T` is a separable Gaussian smoothing of lattice noise, evaluated at every pixel.
    Rows have unit L2 norm, so unit-variance noise gives a field of unit variance everywhere.
    """
    lattice = np.linspace(-1, 1, control_points, dtype=np.float32)
    spacing = lattice[1] - lattice[0]
    weights = np.exp(-0.5 * ((pixel_centres(size)[:, None] - lattice[None, :]) / spacing) ** 2)
    return (weights / np.linalg.norm(weights, axis=1, keepdims=True)).astype(np.float32)


def random_affine(rng, count):
    """(count, 2, 2) matrices and (count, 2) shifts mapping output to input coordinates (x, y)."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, count))
    zoom = rng.uniform(1 - MAX_SCALE_CHANGE, 1 + MAX_SCALE_CHANGE, count)
    flip = np.where(rng.random(count) < FLIP_PROBABILITY, -1.0, 1.0)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    matrix = np.stack([np.stack([cos * flip, -sin], axis=1),
                       np.stack([sin * flip, cos], axis=1)], axis=1)
    shift = rng.uniform(-2 * MAX_SHIFT, 2 * MAX_SHIFT, (count, 2))
    return matrix.astype(np.float32), shift.astype(np.float32)


def smooth_lattice_noise(noise, smooth):
    """`smooth @ noise[b] @ smooth.T` for a stack of (G, G) noise maps, in two matrix products.

    Written as two single large products rather than a batched matmul of many tiny matrices, which
    is slow when BLAS threads compete for busy cores.
    """
    count, points, _ = noise.shape
    size = smooth.shape[0]
    left = smooth @ noise.transpose(1, 0, 2).reshape(points, count * points)    # (S, count*G)
    left = left.reshape(size, count, points).transpose(1, 0, 2).reshape(count * size, points)
    return (left @ smooth.T).reshape(count, size, size)


def random_elastic_field(rng, count, size, xp=np):
    """(count, 2, size, size) smooth random displacements (x then y), in pixels, on xp's device
    (the lattice noise is drawn on the host from `rng`)."""
    noise = rng.standard_normal((count, 2, ELASTIC_CONTROL_POINTS, ELASTIC_CONTROL_POINTS),
                                dtype=np.float32)
    return elastic_field(noise, size, xp)


def elastic_field(noise, size, xp=np):
    """(count, 2, size, size) displacements in pixels, on xp's device, from (count, 2, G, G)
    lattice noise N(0, 1) on the host."""
    count = len(noise)
    noise = noise.reshape(count * 2, ELASTIC_CONTROL_POINTS, ELASTIC_CONTROL_POINTS)
    noise *= np.float32(ELASTIC_STD * size)
    smooth = xp.asarray(smoothing_matrix(size, ELASTIC_CONTROL_POINTS))
    field = smooth_lattice_noise(xp.asarray(noise), smooth)
    return field.reshape(count, 2, size, size)


def bilinear_sample(images, x, y):
    """Sample (B, H, W) uint8 images at pixel coordinates x, y of shape (B, H, W); zero outside.

    The images get a one-pixel border of zeros, and the coordinates are clipped into that border,
    so samples outside the frame read background and samples near the edge fade into it.
    The four neighbours are gathered from the uint8 pixels (small, so the gathers stay in cache)
    and blended in float32. Returns float32 on the 0..255 scale, on the images' device.
    """
    xp = get_array_module(images)
    count, height, width = images.shape
    row = width + 2
    padded = xp.zeros((count, height + 2, row), dtype=np.uint8)
    padded[:, 1:-1, 1:-1] = images
    x = xp.clip(x + 1, 0, width + 1)                 # coordinates in the padded frame
    y = xp.clip(y + 1, 0, height + 1)
    x0 = xp.minimum(xp.floor(x), width)              # left/top neighbour, so x0 + 1 stays inside
    y0 = xp.minimum(xp.floor(y), height)
    wx, wy = x - x0, y - y0
    index = (y0 * row + x0).astype(np.intp)          # exact in float32 for images up to ~4000 px
    index += (xp.arange(count) * (height + 2) * row)[:, None, None]
    flat = padded.reshape(-1)
    top_left = xp.take(flat, index).astype(np.float32)
    top_right = xp.take(flat[1:], index)
    bottom_left = xp.take(flat[row:], index).astype(np.float32)
    bottom_right = xp.take(flat[row + 1:], index)
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    return top + (bottom - top) * wy


def augment(images, rng, share=(0, 1)):
    """Randomly flipped, rotated, scaled, shifted and elastically deformed copies of uint8 images.

    images: (B, S, S) uint8, NumPy or CuPy; `rng`: a NumPy Generator (every draw happens on the
    host). Returns (B, S, S) float32 on the same 0..255 scale, on the images' device.
    share=(rank, processes): the images are rows rank, rank + processes, ... of a batch of
    B x processes images (data-parallel training): the parameters are drawn for that whole batch
    and these images get their rows', as in one process.
    """
    xp = get_array_module(images)
    count, size, _ = images.shape
    rank, processes = share
    matrix, shift = random_affine(rng, count * processes)
    noise = rng.standard_normal((count * processes, 2, ELASTIC_CONTROL_POINTS,
                                 ELASTIC_CONTROL_POINTS), dtype=np.float32)
    matrix, shift, noise = (np.ascontiguousarray(a[rank::processes]) for a in (matrix, shift, noise))
    matrix, shift = xp.asarray(matrix), xp.asarray(shift)
    half = np.float32(size / 2)
    # Pixel (row i, column j) samples the input at pixel  half * (matrix @ (u_j, u_i) + shift + 1) - 0.5.
    u = xp.asarray(pixel_centres(size))
    from_column = half * matrix[:, :, 0, None] * u + (half * (shift + 1) - 0.5)[:, :, None]  # (B, 2, S)
    from_row = half * matrix[:, :, 1, None] * u                                             # (B, 2, S)
    source = from_column[:, :, None, :] + from_row[:, :, :, None]                           # (B, 2, S, S)
    source += elastic_field(noise, size, xp)
    return bilinear_sample(images, source[:, 0], source[:, 1])
