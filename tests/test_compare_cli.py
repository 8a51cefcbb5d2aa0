"""compare.py and report.html as a user meets them: tiny runs of all three models (16x16, a few
steps each, made by the training scripts), compared end to end in a subprocess; every bad input of
issue 16 refused with one line and exit code 2, writing nothing; the pages the runs wrote."""
import csv
import hashlib
import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import compare
import data
import experiment
from evaluation import comparison
from generate import SAMPLERS
from test_compare import check_page_against_run, parse_page

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "dcgan": ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "8",
              "--samples", "8", "--epochs", "2", "--steps-per-epoch", "3"],
    "stylegan": ["--image-size", "16", "--batch-size", "8", "--steps-per-epoch", "2",
                 "--phase-images", "24", "--fade-images", "16", "--fmap-base", "32",
                 "--fmap-max", "8", "--z-dim", "8", "--w-dim", "8", "--samples", "8",
                 "--epochs", "3"],                                  # 8x8, then 16x16 from step 3
    "vqvae": ["--image-size", "16", "--channels", "8", "--res-channels", "4", "--res-blocks", "1",
              "--codes", "16", "--code-dim", "4", "--batch-size", "8", "--steps-per-epoch", "2",
              "--prior-channels", "4", "--prior-layers", "2", "--augment-copies", "0",
              "--samples", "8", "--epochs", "2", "--prior-epochs", "2"],   # 4x4 code maps
}

pytestmark = pytest.mark.slow


def run(*args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(folder):
    """{relative path: md5} of every file under a folder: to check that it was only read."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.md5(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished tiny run of each model, trained by its script."""
    folder = tmp_path_factory.mktemp("runs")
    for model, args in TINY.items():
        result = run(os.path.join(ROOT, f"train_{model}.py"), "--out", folder / model, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "report: " in result.stdout
    return folder


# ---- end to end ----------------------------------------------------------------------------------

def test_compare_scores_three_models_on_one_table_and_only_reads_the_runs(runs, tmp_path):
    before = snapshot(runs)
    out = tmp_path / "comparison"
    result = run("compare.py", runs / "dcgan", runs / "stylegan", runs / "vqvae" / "checkpoint.npz",
                 "--n", "8", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(runs) == before                                  # runs are only read
    assert sorted(os.listdir(out)) == ["comparison.csv", "comparison.md", "memorisation_1_dcgan.png",
                                       "memorisation_2_stylegan.png", "memorisation_3_vqvae.png",
                                       "samples.png"]
    table = (out / "comparison.md").read_text()
    assert table in result.stdout                                    # printed too
    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["real", "dcgan", "stylegan", "vqvae"]
    assert [r["n_images"] for r in rows] == ["8"] * 4                # 8 held-out, 8 samples each
    assert [r["saw_heldout"] for r in rows[1:]] == ["True", "True", "False"]
    for row in rows:
        for key, _, _ in comparison.COLUMNS:
            assert np.isfinite(float(row[key])), (row["label"], key)
    lines = table.splitlines()
    note = next(line for line in lines if comparison.SAW_HELDOUT_NOTE in line)
    mark = f" [{note.split('.')[0]}] |"
    assert mark in lines[4] and mark in lines[5] and mark not in lines[6]   # dcgan, stylegan only
    assert "PCA features of the training images (d = 32" in table
    assert lines[3].startswith("| real held-out vs training (reference) |")

    # the dcgan row again, in this process: generate.py's sampler, the same real images and seed
    checkpoint = experiment.load_checkpoint(runs / "dcgan" / "checkpoint.npz")
    samples = SAMPLERS["dcgan"](checkpoint, 8, 0, "cpu")
    real = data.load_images(None, image_size=16, split="all")
    judge = comparison.Judge(*comparison.real_sets(real.images, 8))
    row, _ = judge.score(samples)
    for key, _, _ in comparison.COLUMNS:
        assert float(rows[1][key]) == pytest.approx(row[key], rel=1e-9, abs=1e-12), key
        assert float(rows[0][key]) == pytest.approx(judge.reference[key], rel=1e-9, abs=1e-12)


def test_runs_at_different_sizes_are_refused_or_resized_when_asked(runs, tmp_path):
    early = runs / "stylegan" / "phases" / "res_8" / "checkpoint.npz"      # reached only 8x8
    refused = run("compare.py", runs / "dcgan", early, "--n", "8", "--out", tmp_path / "x")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "different sizes" in refused.stderr and "--image-size" in refused.stderr
    assert "16x16" in refused.stderr and "8x8" in refused.stderr
    assert not os.path.exists(tmp_path / "x")
    resized = run("compare.py", runs / "dcgan", early, "--n", "8", "--image-size", "16",
                  "--out", tmp_path / "y")
    assert resized.returncode == 0, resized.stderr
    table = (tmp_path / "y" / "comparison.md").read_text()
    assert "samples resized from 8x8 to 16x16 (--image-size)" in table


# ---- report.html ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", list(TINY))
def test_each_run_wrote_a_report_whose_numbers_match_its_metrics_log(runs, model):
    folder = runs / model
    page = check_page_against_run(folder)
    records = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    quality = records[-1]
    assert quality["event"] == "sample_quality" and quality["n_samples"] == 8
    assert quality["saw_heldout"] == (model != "vqvae")
    command = records[0]["command"]                                 # the start record
    assert command.startswith("python ") and f"train_{model}.py" in command
    assert html.escape(command) in (folder / "report.html").read_text()
    line = len(records)
    shown = {(n, name) for n, name, _ in page.numbers if n == line}
    for key, _, _ in comparison.COLUMNS:                              # the run and the reference
        assert (line, key) in shown and (line, "heldout_" + key) in shown, key
    pngs = {os.path.relpath(os.path.join(r, f), folder).replace(os.sep, "/")
            for r, _, files in os.walk(folder) for f in files if f.endswith(".png")}
    singles = {p for p in pngs if os.path.basename(p).startswith("img_")}
    assert set(page.images) == pngs - singles                        # every picture of the run
    assert "memorisation.png" in page.images and "losses.png" in page.images


def test_compare_report_rebuilds_the_page_and_writes_nothing_else(runs):
    folder = runs / "vqvae"
    before = snapshot(folder)
    os.remove(folder / "report.html")
    result = run("compare.py", "--report", folder)
    assert result.returncode == 0, result.stderr
    after = snapshot(folder)
    assert set(after) == set(before)
    assert {k for k in after if after[k] != before[k]} <= {"report.html"}   # its write time
    check_page_against_run(folder)
    assert "reconstructions.png" in parse_page(folder / "report.html").images


# ---- bad input: one line, exit code 2, nothing written -------------------------------------------

def refused(monkeypatch, capsys, *args):
    """Run compare.py's main in this process; return its stderr, checking exit code 2."""
    monkeypatch.setattr(sys, "argv", ["compare.py", *map(str, args)])
    with pytest.raises(SystemExit) as caught:
        experiment.main(compare.main)
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_inputs_are_refused_with_one_line_and_nothing_written(runs, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "out"
    before = snapshot(runs)
    dcgan = runs / "dcgan"
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_run = tmp_path / "pictures"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("no checkpoint here")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    unknown = tmp_path / "unknown.npz"
    experiment.save_checkpoint(unknown, {"format": experiment.FORMAT, "model": "diffusion",
                                         "config": {}, "step": 1, "epoch": 0})
    bigger = tmp_path / "bigger.npz"
    config = dict(experiment.load_checkpoint(dcgan / "checkpoint.npz")["config"], image_size=32)
    experiment.save_checkpoint(bigger, {"format": experiment.FORMAT, "model": "dcgan",
                                        "config": config, "step": 1, "epoch": 0})
    elsewhere = tmp_path / "elsewhere.npz"
    config = dict(config, image_size=16, data=str(tmp_path / "other_data"))
    experiment.save_checkpoint(elsewhere, {"format": experiment.FORMAT, "model": "dcgan",
                                           "config": config, "step": 1, "epoch": 0})
    no_prior = tmp_path / "no_prior.npz"
    vq = experiment.load_checkpoint(runs / "vqvae" / "checkpoint.npz")
    experiment.save_checkpoint(no_prior, {"format": experiment.FORMAT, "model": "vqvae",
                                          "config": vq["config"], "step": 4, "epoch": 2,
                                          "vqvae": vq["vqvae"], "prior_steps": 0})
    cases = [
        ([tmp_path / "missing"], "does not exist"),
        ([empty], "is an empty folder, not a run"),
        ([not_a_run], "holds no checkpoint.npz, so it is not a run folder"),
        ([damaged], "cannot read the checkpoint"),
        ([unknown], "unknown model 'diffusion'"),
        ([dcgan, bigger], "different sizes"),
        ([dcgan, elsewhere], "trained on different data"),
        ([dcgan, no_prior, "--n", "8"], "no trained prior yet"),
        ([dcgan, "--n", "0"], "--n 0: the metrics need at least 6 samples"),
        ([dcgan, "--seed", "-1"], "--seed must not be negative"),
        ([dcgan, "--n", "8", "--out", dcgan / "scores"], "only reads"),
        ([dcgan, "--data", tmp_path / "no_such_data"], "check --data"),
        ([], "give at least one run folder"),
        (["--report", not_a_run], "not a run folder"),
    ]
    for args, phrase in cases:
        default_out = [] if "--out" in args or "--report" in args else ["--out", out]
        err = refused(monkeypatch, capsys, *args, *default_out)
        assert phrase in err, (args, err)
        assert not os.path.exists(out), args
    assert not os.path.exists(dcgan / "scores")
    assert snapshot(runs) == before


def test_an_unreadable_run_folder_is_refused(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    listdir = os.listdir

    def denied(path="."):          # as root chmod 000 would not stop us, so fake the refusal
        if os.path.abspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)
    monkeypatch.setattr(os, "listdir", denied)
    err = refused(monkeypatch, capsys, locked, "--out", tmp_path / "out")
    assert "cannot read the folder" in err and "Permission denied" in err
    err = refused(monkeypatch, capsys, "--report", locked)
    assert "cannot read the folder" in err
    assert not os.path.exists(tmp_path / "out")
