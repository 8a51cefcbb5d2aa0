"""The pieces of compare.py and report.html without training: the held-out rule, the real sets, the
table, the scores of constructed sample sets, and a report built from a hand-made run folder."""
import html
import json
import math
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import data
from evaluation import comparison, report


def brain_like(rng, n, size=16):
    """uint8 images that vary along a few smooth directions, like neighbouring slices."""
    basis = rng.standard_normal((4, size * size))
    x = np.tanh(0.4 * rng.standard_normal((n, 4)) @ basis).reshape(n, size, size)
    return ((x + 1) * 127.5).round().astype(np.uint8)


# ---- the held-out rule and the real sets ---------------------------------------------------------

def test_the_held_out_rule_is_every_fifth_image():
    images = np.arange(23)[:, None, None] * np.ones((1, 2, 2), dtype=np.int64)
    train, held = data.split_held_out(images)
    assert held[:, 0, 0].tolist() == [4, 9, 14, 19]
    assert train[:, 0, 0].tolist() == [i for i in range(23) if i % 5 != 4]
    assert comparison.saw_heldout("dcgan") and comparison.saw_heldout("stylegan")
    assert not comparison.saw_heldout("vqvae")


def test_real_sets_cap_held_out_at_n_and_training_at_max_train(rng):
    images = brain_like(rng, 100)                      # 80 training, 20 held-out
    train, heldout = comparison.real_sets(images, n_samples=64)
    assert train.shape == (80, 1, 16, 16) and heldout.shape == (20, 1, 16, 16)
    assert train.dtype == np.float32 and -1 <= train.min() and train.max() <= 1
    index = np.arange(100)
    np.testing.assert_allclose(heldout[:, 0], images[index % 5 == 4] / 127.5 - 1, atol=1e-6)
    small_train, small_held = comparison.real_sets(images, n_samples=8, max_train=30, seed=1)
    assert small_train.shape[0] == 30 and small_held.shape[0] == 8
    held_rows = {row.tobytes() for row in heldout}
    assert all(row.tobytes() in held_rows for row in small_held)     # a subset, in data order
    positions = [next(i for i, h in enumerate(heldout) if np.array_equal(h, s)) for s in small_held]
    assert positions == sorted(positions)
    again = comparison.real_sets(images, n_samples=8, max_train=30, seed=1)
    np.testing.assert_array_equal(again[1], small_held)              # seeded
    with pytest.raises(ValueError, match="at least 6 held-out"):
        comparison.real_sets(images[:25], n_samples=64)                # only 5 held-out


# ---- scores and the table ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judged():
    images = brain_like(np.random.default_rng(1), 110)
    train, heldout = comparison.real_sets(images, n_samples=22)
    return comparison.Judge(train, heldout), train, heldout


def test_the_reference_row_scores_held_out_images_like_samples(judged):
    judge, train, heldout = judged
    ref = judge.reference
    assert ref["n_images"] == len(heldout) == 22
    row, _ = judge.score(heldout)                                      # held-out as "samples"
    for key, _, _ in comparison.COLUMNS:
        assert row[key] == pytest.approx(ref[key]), key
    assert ref["closer_than_heldout"] == 0.5 and ref["distance_ratio"] == 1.0


def test_copies_are_flagged_and_a_collapse_shows(judged):
    judge, train, heldout = judged
    copies, copying = judge.score(train[:30])
    assert copies["nn_ssim"] == pytest.approx(1.0)
    assert copies["copy_fraction"] == 1.0 and copies["closer_than_heldout"] == 1.0
    assert copies["distance_ratio"] < 1e-5 and copies["precision"] == 1.0
    assert np.all(copying["sample_distances"] < 1e-5)          # 0 up to the rounding of |a - b|^2
    np.testing.assert_array_equal(copying["sample_nearest"], np.arange(30))
    collapsed, _ = judge.score(np.repeat(heldout[:1], 30, axis=0))   # one real image, 30 times
    assert collapsed["pairwise_ssim"] == pytest.approx(1.0)
    assert collapsed["pairwise_ssim"] > 2 * judge.reference["pairwise_ssim"]
    assert collapsed["recall"] == 0.0 and collapsed["coverage"] < 0.1
    assert collapsed["kid"] > judge.reference["kid"] + 5 * judge.reference["kid_std"]


def test_markdown_and_csv_tables_hold_every_row_and_note():
    rows = [{"label": "real held-out vs training (reference)", "model": "real", "nn_ssim": 0.9451,
             "kid": -0.3271, "kid_std": 0.126, "precision": 1.0},
            {"label": "dcgan: runs/a", "model": "dcgan", "step": 3000, "nn_ssim": 0.634,
             "kid": 0.5, "kid_std": 0.25, "precision": 0.75, "saw_heldout": True, "marks": [2]}]
    text = comparison.markdown_table(rows, ["first note", "second, with a comma"])
    lines = text.splitlines()
    assert lines[0].startswith("|  | step | NN-SSIM | pairwise SSIM | precision")
    assert lines[2].startswith("| *measured on* |  | *pixels: SSIM* | *pixels: SSIM* | *PCA feat")
    assert lines[3].startswith("| real held-out vs training (reference) |  | 0.945 |  | 1.000 |")
    assert "| dcgan: runs/a [2] | 3000 | 0.634 |" in lines[4]
    assert "0.500 +- 0.250" in lines[4] and "-0.327 +- 0.126" in lines[3]
    assert lines[-2:] == ["1. first note", "2. second, with a comma"]
    csv = comparison.csv_text(rows).splitlines()
    header = csv[0].split(",")
    assert header[:4] == ["label", "model", "path", "step"] and "kid_std" in header
    dcgan = csv[2].split(",")
    assert dcgan[header.index("nn_ssim")] == "0.634" and dcgan[header.index("step")] == "3000"
    assert dcgan[header.index("saw_heldout")] == "True"


# ---- report.html from a hand-made run folder -----------------------------------------------------

class PageParser(HTMLParser):
    """Collects <img src>, every element with data-record/data-field (and its text), and tags."""

    def __init__(self):
        super().__init__()
        self.images, self.numbers, self.tags, self._open = [], [], set(), None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if "data-field" in attrs:
            self._open = [int(attrs["data-record"]), attrs["data-field"], ""]

    def handle_data(self, text):
        if self._open is not None:
            self._open[2] += text

    def handle_endtag(self, tag):
        if self._open is not None and tag == "span":
            self.numbers.append(tuple(self._open))
            self._open = None


def parse_page(path):
    parser = PageParser()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser


def field(record, name):
    """A field of a record, nested dicts addressed as parent.child (as the page names them)."""
    value = record
    for part in name.split(".") if name not in record else [name]:
        value = value[part]
    return value


def check_page_against_run(folder):
    """Every picture the page shows exists; every number on it equals metrics.jsonl's; returns the
    parsed page."""
    page = parse_page(os.path.join(folder, "report.html"))
    for src in page.images:
        assert not src.startswith(("http:", "https:", "//", "/")), src
        assert os.path.isfile(os.path.join(folder, src)), src
    assert "script" not in page.tags and "link" not in page.tags
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        records = {n: json.loads(line) for n, line in enumerate(f, 1)}
    assert page.numbers, "the page shows no numbers from metrics.jsonl"
    for line, name, text in page.numbers:
        value = field(records[line], name)
        if isinstance(value, int):
            assert text == str(value), (line, name, text, value)
        else:
            assert math.isclose(float(text), value, rel_tol=1e-3, abs_tol=1e-12), \
                (line, name, text, value)
    return page


def test_report_of_a_hand_made_run_shows_every_picture_and_logged_number(tmp_path):
    grid = np.zeros((20, 20), dtype=np.uint8)
    for name in ["samples/epoch_001.png", "samples/epoch_002.png", "losses.png", "codes.png",
                 "phases/res_8/samples.png", "samples/img_0000.png", "cache/ignored.png",
                 "memorisation.png"]:
        os.makedirs(os.path.dirname(tmp_path / name) or tmp_path, exist_ok=True)
        Image.fromarray(grid).save(tmp_path / name)
    records = [
        {"event": "start", "time": 1.7e9, "model": "dcgan", "device": "cpu", "config": {},
         "command": "python train_dcgan.py --epochs 2"},
        {"event": "epoch", "time": 1.7e9, "epoch": 1, "step": 3, "loss_d": 1.3862, "tiny": 2.5e-7},
        {"event": "epoch", "time": 1.7e9, "epoch": 2, "step": 6, "loss_d": 0.25},
        {"event": "report", "time": 1.7e9, "step": 6, "nn_ssim_mean": 0.63412,
         "seconds_per_image": {"8": 0.0045, "16": 0.009}, "label": "text"},
        {"event": "sample_quality", "step": 6, "n_samples": 64, "saw_heldout": True, "notes": ["a note"],
         **{key: 0.5 + i / 100 for i, (key, _, _) in enumerate(comparison.COLUMNS)},
         **{"heldout_" + key: 0.9 - i / 100 for i, (key, _, _) in enumerate(comparison.COLUMNS)},
         "kid_std": 0.125, "heldout_kid_std": 0.0625},
    ]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"image_size": 16, "split": "all", "data": None}, f)

    path = report.build_report(str(tmp_path))
    assert path == os.path.join(str(tmp_path), "report.html")
    page = check_page_against_run(tmp_path)
    assert sorted(page.images) == sorted(["samples/epoch_001.png", "samples/epoch_002.png",
                                          "losses.png", "codes.png", "phases/res_8/samples.png",
                                          "memorisation.png"])
    shown = {(line, name) for line, name, _ in page.numbers}
    for key, _, _ in comparison.COLUMNS:                              # both rows of the table
        assert (5, key) in shown and (5, "heldout_" + key) in shown, key
    assert {(2, "loss_d"), (2, "tiny"), (3, "loss_d"), (4, "nn_ssim_mean"),
            (4, "seconds_per_image.8"), (5, "kid_std")} <= shown
    text = open(path, encoding="utf-8").read()
    assert "python train_dcgan.py --epochs 2" in text and "a note" in text
    assert html.escape(comparison.SAW_HELDOUT_NOTE) in text and "1 single images" in text


def test_evenly_spaced_epoch_grids_keep_the_first_and_last():
    items = [f"samples/epoch_{i:03d}.png" for i in range(1, 41)]
    shown = report.evenly_spaced(items, 12)
    assert len(shown) == 12 and shown[0] == items[0] and shown[-1] == items[-1]
    assert report.evenly_spaced(items[:5], 12) == items[:5]
