"""Folder loaders: OASIS, ADNI and plain-folder layouts, errors, the cache, and never writing.

Fixtures are tiny image trees built in tmp_path that mimic each layout.
"""

import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

import data
from data import loading

OASIS_COUNTS = {"train": 12, "validate": 3, "test": 2}


def write_image(path, pixels, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def make_oasis(root, nesting=""):
    """keras_png_slices_{train,validate,test} (+ seg twins) under root/nesting.

    Training slice n of case 001 is a flat 16x16 image of value 10 * n + 5, so order is visible.
    """
    base = os.path.join(root, nesting)
    for split, count in OASIS_COUNTS.items():
        for n in range(count):
            pixels = np.full((16, 16), 10 * n + 5, dtype=np.uint8)
            write_image(os.path.join(base, f"keras_png_slices_{split}", f"case_001_slice_{n}.nii.png"),
                        pixels)
            write_image(os.path.join(base, f"keras_png_slices_seg_{split}", f"seg_001_slice_{n}.nii.png"),
                        np.full((16, 16), 255, dtype=np.uint8))
    return root


def make_adni(root, per_class=None):
    """AD_NC/{train,test}/{AD,NC}/*.jpeg, 256 wide and 240 high. AD images are bright, NC dim."""
    per_class = per_class or {("train", "AD"): 3, ("train", "NC"): 2, ("test", "AD"): 1, ("test", "NC"): 2}
    for (split, name), count in per_class.items():
        value = 200 if name == "AD" else 100
        for n in range(count):
            write_image(os.path.join(root, "AD_NC", split, name, f"{1000 + n}_{n}.jpeg"),
                        np.full((240, 256), value, dtype=np.uint8))
    return root


def make_plain(root):
    """A plain folder: grey PNG, colour JPEG in a subfolder, an odd-sized PNG, and a text file."""
    write_image(os.path.join(root, "a.png"), np.full((8, 8), 50, dtype=np.uint8))
    write_image(os.path.join(root, "more", "b.jpg"), np.full((8, 8, 3), (255, 0, 0), dtype=np.uint8))
    write_image(os.path.join(root, "more", "c.PNG"), np.full((4, 16), 200, dtype=np.uint8))
    with open(os.path.join(root, "notes.txt"), "w") as file:
        file.write("not an image")
    return root


def snapshot(root):
    """Every file and folder under root with its size and modification time."""
    state = {}
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            path = os.path.join(folder, name)
            info = os.stat(path)
            state[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return state


# --- OASIS -------------------------------------------------------------------------------------

@pytest.mark.parametrize("nesting", ["", "keras_png_slices_data",
                                     os.path.join("keras_png_slices_data", "keras_png_slices_data")])
@pytest.mark.parametrize("split", ["train", "validate", "test", "all"])
def test_oasis_found_at_any_depth_with_each_split(tmp_path, nesting, split):
    root = make_oasis(str(tmp_path / "oasis"), nesting)
    ds = data.load_images(root, image_size=8, split=split)
    expected = sum(OASIS_COUNTS.values()) if split == "all" else OASIS_COUNTS[split]
    assert ds.images.shape == (expected, 8, 8) and ds.images.dtype == np.uint8
    assert len(ds.files) == expected and ds.labels is None and ds.class_names is None
    assert not any("seg" in name for name in ds.files)
    assert (ds.images < 255).all()          # no mask (all 255) was loaded
    assert "OASIS" in ds.source and str(expected) in ds.source


def test_oasis_files_in_natural_order(tmp_path):
    ds = data.load_images(make_oasis(str(tmp_path)), image_size=16)
    slice_numbers = [int(re.search(r"slice_(\d+)", name).group(1)) for name in ds.files]
    assert slice_numbers == list(range(OASIS_COUNTS["train"]))
    assert ds.images[:, 0, 0].tolist() == [10 * n + 5 for n in range(OASIS_COUNTS["train"])]
    assert ds.files[0] == os.path.join("keras_png_slices_train", "case_001_slice_0.nii.png")


def test_oasis_missing_split_and_unknown_split(tmp_path):
    root = str(tmp_path)
    write_image(os.path.join(root, "keras_png_slices_train", "case_001_slice_0.nii.png"),
                np.zeros((8, 8), np.uint8))
    with pytest.raises(data.DataError, match="no keras_png_slices_test folder.*found: keras_png_slices_train"):
        data.load_images(root, image_size=8, split="test")
    with pytest.raises(data.DataError, match="unknown split 'valid'.*valid: train, validate, test, all"):
        data.load_images(root, image_size=8, split="valid")


def test_oasis_two_copies_are_ambiguous(tmp_path):
    make_oasis(str(tmp_path / "copy1"))
    make_oasis(str(tmp_path / "copy2"))
    with pytest.raises(data.DataError, match="found 2 keras_png_slices_train folders.*copy1.*copy2"):
        data.load_images(str(tmp_path), image_size=8)


def test_mask_folder_is_never_loaded(tmp_path):
    root = make_oasis(str(tmp_path))
    with pytest.raises(data.DataError, match="segmentation masks"):
        data.load_images(os.path.join(root, "keras_png_slices_seg_train"), image_size=8)


def test_mask_folders_are_skipped_in_plain_folders(tmp_path):
    write_image(str(tmp_path / "keras_png_slices_seg_train" / "seg_001_slice_0.nii.png"),
                np.full((8, 8), 255, np.uint8))
    write_image(str(tmp_path / "other" / "x.png"), np.full((8, 8), 3, np.uint8))
    assert data.load_images(str(tmp_path), image_size=8).files == [os.path.join("other", "x.png")]


# --- ADNI --------------------------------------------------------------------------------------

def test_adni_labels_splits_and_padding(tmp_path):
    root = make_adni(str(tmp_path / "adni"))
    ds = data.load_images(root, image_size=256)
    assert ds.images.shape == (5, 256, 256) and ds.class_names == ["NC", "AD"]
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]     # NC first, then AD; NC = 0, AD = 1
    bright = ds.images[ds.labels == 1]
    assert np.abs(bright[:, 8:248].astype(int) - 200).max() <= 3       # JPEG is nearly exact
    assert (bright[:, :8] == 0).all() and (bright[:, 248:] == 0).all()   # 240 rows padded to 256
    assert data.load_images(root, image_size=32, split="test").images.shape == (3, 32, 32)
    assert len(data.load_images(root, image_size=32, split="all")) == 8


@pytest.mark.parametrize("classes, expected", [("AD", [1, 1, 1]), ("NC", [0, 0]), ("both", [0, 0, 1, 1, 1]),
                                               (None, [0, 0, 1, 1, 1])])
def test_adni_class_filter(tmp_path, classes, expected):
    ds = data.load_images(make_adni(str(tmp_path)), image_size=16, classes=classes)
    assert ds.labels.tolist() == expected
    assert all(os.sep + ds.class_names[label] + os.sep in name for name, label in zip(ds.files, ds.labels))


def test_adni_errors(tmp_path):
    root = make_adni(str(tmp_path), {("train", "AD"): 1})
    with pytest.raises(data.DataError, match="unknown class 'MCI'.*valid: NC, AD"):
        data.load_images(root, image_size=8, classes="MCI")
    with pytest.raises(data.DataError, match="unknown split 'validate'.*ADNI.*valid: train, test, all"):
        data.load_images(root, image_size=8, split="validate")
    with pytest.raises(data.DataError, match="no test folder"):
        data.load_images(root, image_size=8, split="test")


# --- plain folders -----------------------------------------------------------------------------

def test_plain_folder_recursive_colour_and_odd_sizes(tmp_path):
    ds = data.load_images(make_plain(str(tmp_path)), image_size=16)
    assert ds.files == ["a.png", os.path.join("more", "b.jpg"), os.path.join("more", "c.PNG")]
    assert ds.images.shape == (3, 16, 16) and ds.labels is None
    assert ds.images[0].min() == ds.images[0].max() == 50
    assert abs(int(ds.images[1, 8, 8]) - 76) <= 3        # pure red -> luminance 0.299 * 255
    odd = ds.images[2]                                    # 4x16 padded to 16x16, centred
    assert (odd[:6] == 0).all() and (odd[10:] == 0).all() and (odd[6:10] == 200).all()
    assert data.load_images(str(tmp_path), image_size=16, split="all").images.shape == (3, 16, 16)


def test_plain_folder_rejects_other_splits_and_class_filters(tmp_path):
    root = make_plain(str(tmp_path))
    with pytest.raises(data.DataError, match="unknown split 'test' for the plain-folder layout; valid: train, all"):
        data.load_images(root, image_size=8, split="test")
    with pytest.raises(data.DataError, match="class filter.*needs the ADNI layout"):
        data.load_images(root, image_size=8, classes="AD")


# --- bad input ---------------------------------------------------------------------------------

def test_missing_path_names_path_and_layouts(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(data.DataError, match=re.escape(missing) + " does not exist.*OASIS.*ADNI.*PNG/JPEG"):
        data.load_images(missing)


def test_path_that_is_a_file(tmp_path):
    path = tmp_path / "file.png"
    path.write_bytes(b"x")
    with pytest.raises(data.DataError, match="is not a folder"):
        data.load_images(str(path))


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(data.DataError, match="no PNG/JPEG images found under .*empty"):
        data.load_images(str(tmp_path / "empty"))


def test_corrupt_files_are_skipped_with_warnings(tmp_path):
    root = make_plain(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(UserWarning) as caught:
        ds = data.load_images(root, image_size=8)
    messages = [str(w.message) for w in caught]
    assert any("broken.png" in m for m in messages)
    assert any("skipped 1 of 4 images" in m for m in messages)
    assert len(ds) == 3 and "broken.png" not in ds.files


def test_strict_turns_a_corrupt_file_into_an_error(tmp_path):
    root = make_plain(str(tmp_path))
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(data.DataError, match="cannot read image .*broken.jpeg"):
        data.load_images(root, image_size=8, strict=True)


def test_truncated_png_is_corrupt(tmp_path):
    write_image(str(tmp_path / "good.png"), np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning) as caught:
        ds = data.load_images(str(tmp_path), image_size=8)
    assert ds.files == ["good.png"]
    assert "cut.png" in str(caught[0].message) and "skipped 1 of 2" in str(caught[1].message)
    assert caught[0].filename == __file__              # the warning points at the caller


def test_only_corrupt_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(data.DataError, match="none of the 1 images"):
        data.load_images(str(tmp_path), image_size=8)


@pytest.mark.parametrize("size", [0, -4, 3.5, "64"])
def test_bad_image_size(size):
    with pytest.raises(data.DataError, match="image_size must be a positive integer"):
        data.load_images(None, image_size=size)


def test_loaders_never_touch_the_data_folder(tmp_path):
    root = str(tmp_path / "all_layouts")
    make_oasis(os.path.join(root, "oasis"), "keras_png_slices_data")
    make_adni(os.path.join(root, "adni"))
    make_plain(os.path.join(root, "plain"))
    with open(os.path.join(root, "plain", "bad.png"), "wb") as file:
        file.write(b"corrupt")
    before = snapshot(root)
    cache_dir = str(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):                          # the second round reads the cache
            data.load_images(root, image_size=8, split="all", cache_dir=cache_dir)
            data.load_images(os.path.join(root, "adni"), image_size=8, classes="AD", cache_dir=cache_dir)
            data.load_images(os.path.join(root, "plain"), image_size=8, cache_dir=cache_dir)
        with pytest.raises(data.DataError):
            data.load_images(os.path.join(root, "plain"), image_size=8, strict=True, cache_dir=cache_dir)
    assert snapshot(root) == before
    assert len(os.listdir(cache_dir)) == 3


# --- cache -------------------------------------------------------------------------------------

def refuse_to_decode(path, image_size):
    raise AssertionError(f"decoded {path} although the cache should have been used")


def test_cache_is_reused(tmp_path, monkeypatch):
    root, cache_dir = make_oasis(str(tmp_path / "oasis")), str(tmp_path / "cache")
    first = data.load_images(root, image_size=8, cache_dir=cache_dir)
    assert len(os.listdir(cache_dir)) == 1
    monkeypatch.setattr(loading, "read_image", refuse_to_decode)
    second = data.load_images(root, image_size=8, cache_dir=cache_dir)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.files == second.files and first.source == second.source


def test_cache_is_keyed_on_size_split_and_classes(tmp_path):
    root, cache_dir = make_adni(str(tmp_path / "adni")), str(tmp_path / "cache")
    data.load_images(root, image_size=8, cache_dir=cache_dir)
    assert data.load_images(root, image_size=16, cache_dir=cache_dir).images.shape[1:] == (16, 16)
    assert len(data.load_images(root, image_size=8, split="test", cache_dir=cache_dir)) == 3
    assert data.load_images(root, image_size=8, classes="AD", cache_dir=cache_dir).labels.tolist() == [1, 1, 1]
    assert len(os.listdir(cache_dir)) == 4


def test_cache_is_rebuilt_when_the_folder_changes(tmp_path):
    root, cache_dir = str(tmp_path / "plain"), str(tmp_path / "cache")
    make_plain(root)
    assert len(data.load_images(root, image_size=8, cache_dir=cache_dir)) == 3
    write_image(os.path.join(root, "d.png"), np.full((8, 8), 9, np.uint8))          # a new file
    assert len(data.load_images(root, image_size=8, cache_dir=cache_dir)) == 4
    write_image(os.path.join(root, "a.png"), np.full((8, 8), 77, np.uint8))         # a changed file
    os.utime(os.path.join(root, "a.png"), ns=(1, 1))
    ds = data.load_images(root, image_size=8, cache_dir=cache_dir)
    assert ds.images[ds.files.index("a.png")].max() == 77
    os.remove(os.path.join(root, "d.png"))                                          # a removed file
    assert len(data.load_images(root, image_size=8, cache_dir=cache_dir)) == 3
    assert [n for n in os.listdir(cache_dir) if not n.endswith(".tmp")] == os.listdir(cache_dir)
    assert len(os.listdir(cache_dir)) == 1


def test_cache_keeps_warning_about_skipped_files(tmp_path):
    root, cache_dir = make_plain(str(tmp_path / "plain")), str(tmp_path / "cache")
    with open(os.path.join(root, "bad.png"), "wb") as file:
        file.write(b"corrupt")
    for _ in range(2):
        with pytest.warns(UserWarning) as caught:
            assert len(data.load_images(root, image_size=8, cache_dir=cache_dir)) == 3
        assert "bad.png" in str(caught[0].message) and "skipped 1 of 4" in str(caught[1].message)
    with pytest.raises(data.DataError, match="bad.png"):
        data.load_images(root, image_size=8, strict=True, cache_dir=cache_dir)


def test_damaged_cache_file_is_rebuilt(tmp_path):
    root, cache_dir = make_plain(str(tmp_path / "plain")), str(tmp_path / "cache")
    first = data.load_images(root, image_size=8, cache_dir=cache_dir)
    (cache_file,) = os.listdir(cache_dir)
    with open(os.path.join(cache_dir, cache_file), "wb") as file:
        file.write(b"half a file")
    with pytest.warns(UserWarning, match="is damaged"):
        second = data.load_images(root, image_size=8, cache_dir=cache_dir)
    np.testing.assert_array_equal(first.images, second.images)
    assert os.path.getsize(os.path.join(cache_dir, cache_file)) > 100


def test_cache_dir_inside_the_data_folder_is_refused(tmp_path):
    root = make_plain(str(tmp_path / "plain"))
    with pytest.raises(data.DataError, match="inside the data folder"):
        data.load_images(root, image_size=8, cache_dir=os.path.join(root, "cache"))
    assert not os.path.exists(os.path.join(root, "cache"))
