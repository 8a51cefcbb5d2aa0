"""Pictures of a run: image grids and single images (PNG, Pillow), loss curves and rows of images
with captions (PNG, matplotlib).

    pictures.save_grid(batch, path, value_range=(-1, 1), nrow=None)   # (N, 1, H, W) or (N, H, W)
    pictures.save_images(batch, folder, prefix="img_")              # img_0000.png, img_0001.png, ...
    pictures.plot_losses(history, path, title="")                   # {"step": [...], name: [...]}
    pictures.image_rows(path, [{"images": originals, "label": "originals"}, {"images": copies}])

Inputs may be NumPy or CuPy arrays (or nn.Tensors); nothing here needs a display. Every file is
written atomically (files.atomic_write): a run killed while drawing leaves the previous picture.
"""
import os

import numpy as np
from PIL import Image

import data
import nn

from .files import atomic_write


def save_png(pixels, path):
    """Write a uint8 array (H, W) as a greyscale PNG, atomically."""
    with atomic_write(path) as f:
        Image.fromarray(pixels).save(f, format="PNG")
    return path


def save_figure(figure, path):
    """Write a matplotlib Figure as a PNG, atomically."""
    with atomic_write(path) as f:
        figure.savefig(f, format="png")
    return path


def _as_uint8_stack(batch, value_range):
    """(N, 1, H, W) / (N, H, W) floats in value_range -> uint8 (N, H, W)."""
    if isinstance(batch, nn.Tensor):
        batch = batch.data
    batch = nn.backend.to_numpy(batch)
    if batch.ndim == 4:
        if batch.shape[1] != 1:
            raise ValueError(f"expected single-channel images (N, 1, H, W), got {batch.shape}")
        batch = batch[:, 0]
    if batch.ndim != 3:
        raise ValueError(f"expected images of shape (N, 1, H, W) or (N, H, W), got {batch.shape}")
    return batch if batch.dtype == np.uint8 else data.to_uint8(batch, value_range)


def grid(batch, value_range=(-1, 1), nrow=None, padding=2, background=0):
    """Tile N images into one uint8 picture, `nrow` images per row (default: about square)."""
    pictures = _as_uint8_stack(batch, value_range)
    n, h, w = pictures.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    canvas = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding), background,
                     dtype=np.uint8)
    for i, picture in enumerate(pictures):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        canvas[top:top + h, left:left + w] = picture
    return canvas


def save_grid(batch, path, value_range=(-1, 1), nrow=None, padding=2):
    """Write the grid of `batch` as a greyscale PNG at `path`."""
    return save_png(grid(batch, value_range, nrow, padding), path)


def save_images(batch, folder, prefix="img_", value_range=(-1, 1)):
    """Write each image as its own PNG: <folder>/<prefix>0000.png, ... Returns the paths."""
    os.makedirs(folder, exist_ok=True)
    pictures = _as_uint8_stack(batch, value_range)
    digits = max(4, len(str(len(pictures) - 1)))
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(save_png(picture, os.path.join(folder, f"{prefix}{i:0{digits}d}.png")))
    return paths


def upscale(batch, size):
    """Nearest-neighbour upscaling of (N, 1, R, R) to (N, 1, size, size), for equal-sized grids."""
    factor = size // batch.shape[-1]
    return batch.repeat(factor, axis=2).repeat(factor, axis=3)


def moving_average(values, window):
    """Mean of the last `window` values at every position (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_losses(history, path, title=""):
    """Plot every series of `history` against history["step"]: raw values faint, moving average bold.

    Uses matplotlib's object API with the Agg canvas, so no display (and no pyplot state) is needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.asarray(history.get("step", []), dtype=np.float64)
    names = [name for name in history if name != "step" and len(history[name]) == len(steps)]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    window = max(1, len(steps) // 50)
    for i, name in enumerate(names):
        colour = f"C{i % 10}"
        values = np.asarray(history[name], dtype=np.float64)
        axes.plot(steps, values, color=colour, alpha=0.25, linewidth=0.7)
        axes.plot(steps, moving_average(values, window), color=colour, linewidth=1.8, label=name)
    axes.set_xlabel("training step")
    axes.set_ylabel("value")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if names:
        axes.legend(loc="upper right")
    figure.tight_layout()
    return save_figure(figure, path)


def image_rows(path, rows, n=8):
    """A figure of up to `n` images per row, without axes (matplotlib, Agg canvas). `rows` is a
    list of dicts: "images" (N, H, W) or (N, 1, H, W); optionally "label" (written above the
    row's first image), "captions" (one per image) and imshow's "cmap", "vmin", "vmax",
    "interpolation" (default: grey, values from -1 to 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(n * 1.1, len(rows) * 1.1 * 1.1), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), n, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        images = np.asarray(row["images"])
        images = images[:, 0] if images.ndim == 4 else images
        style = {"cmap": "gray", "vmin": -1, "vmax": 1}
        style.update({k: row[k] for k in ("cmap", "vmin", "vmax", "interpolation") if k in row})
        for i in range(min(n, len(images))):
            axes[r, i].imshow(images[i], **style)
            if "captions" in row:
                axes[r, i].set_title(row["captions"][i], fontsize=8)
        if "label" in row:
            axes[r, 0].set_title(row["label"], fontsize=8, loc="left")
    figure.tight_layout()
    return save_figure(figure, path)
