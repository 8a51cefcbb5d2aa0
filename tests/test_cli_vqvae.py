"""train_vqvae.py end to end through the command line, at tiny sizes: every stage writes its outputs,
each stage resumes to the same result as an uninterrupted run, generate.py reads the checkpoint;
on the device under test (`pytest --device gpu` runs them on CuPy)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn
from conftest import child_env

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--image-size", "16", "--channels", "8", "--res-channels", "4", "--res-blocks", "1",
        "--codes", "48", "--code-dim", "4", "--batch-size", "8", "--steps-per-epoch", "2",
        "--prior-channels", "4", "--prior-layers", "2", "--augment-copies", "1",
        "--samples", "6", "--prior-batch-size", "8", "--prior-levels", "4",
        "--prior-dropout", "0.2"]
# 16x16 slices, 4x4 code maps; a prior conditioned on 4 slice levels, with dropout (so the resume
# test also checks that the dropout masks continue exactly), 2 steps a prior epoch


def run(script, *args, expect=0):
    env = child_env(OPENBLAS_NUM_THREADS="1")      # the CuPy stand-in too, where a session uses it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stdout + result.stderr
    return result.stdout + result.stderr


def train(out, *args, device="cpu", expect=0):
    return run("train_vqvae.py", "--out", str(out), *TINY, "--device", device, *args, expect=expect)


def events(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, device):
    """All three stages uninterrupted: 4 VQ-VAE epochs, 4 prior epochs (2 steps each), sampling."""
    out = tmp_path_factory.mktemp("vqvae_full")
    text = train(out, "--epochs", "4", "--prior-epochs", "4", device=device)
    return out, text


def test_every_stage_writes_its_outputs(full_run):
    out, text = full_run
    for name in ["checkpoint.npz", "metrics.jsonl", "config.json", "losses.png",
                 "vqvae_losses.png", "prior_losses.png", "reconstructions.png", "codes.png",
                 "samples.png", "sample_grid.png", "reconstructions/epoch_001.png",
                 "reconstructions/epoch_004.png",
                 "samples/img_0000.png", "samples/img_0003.png"]:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    logged = {e["event"]: e for e in events(out)}
    assert -1 <= logged["reconstruction"]["held_out_ssim_mean"] <= 1
    for key in ("held_out_ssim_std", "held_out_codes_used", "held_out_perplexity"):
        assert key in logged["reconstruction"], key
    assert logged["prior"]["held_out_nll_bits"] > 0
    for key in ("nn_ssim", "pairwise_ssim", "heldout_pairwise_ssim", "recall", "coverage"):
        assert key in logged["sample_quality"], key
    assert logged["sample_quality"]["codes_used_in_samples"] > 0
    epochs = [e for e in events(out) if e["event"] == "epoch"]
    assert [e["step"] for e in epochs] == list(range(2, 17, 2))   # global steps across stages
    assert "codes_used" in epochs[0]
    for epoch in epochs[4:]:                                   # every prior epoch: both bits
        assert epoch["train_nll_bits"] > 0 and epoch["held_out_nll_bits"] > 0
    assert text.count("prior bits per code:") == 4
    assert "held-out reconstruction SSIM" in text and "nearest-neighbour SSIM" in text
    assert "8 steps of 8 slices (" in text                     # not augmented by default


def test_held_out_bits_are_on_maps_the_prior_never_saw(full_run):
    """The held-out maps are the codes of every fifth slice; the prior's training maps are all of
    the other slices (plain, then augmented), each with its slice's level."""
    import argparse
    import data
    import experiment
    import settings.vqvae
    from models.pixelcnn import mean_bits
    out, _ = full_run
    saved = experiment.load_checkpoint(os.path.join(out, "checkpoint.npz"))
    dataset = data.load_images(None, image_size=16, split="all")
    train_images, held_images = data.split_held_out(dataset.images)
    model, prior = settings.vqvae.build(argparse.Namespace(**saved["config"]))
    model.load_state_dict(saved["vqvae"])
    prior.load_state_dict(saved["prior"])
    model.eval()
    held = nn.Tensor(data.to_float(held_images)[:, None])
    np.testing.assert_array_equal(saved["held_codes"], model.encode(held))
    n = len(train_images)
    assert len(saved["prior_codes"]) == 2 * n and saved["prior_slices"].max() < n
    plain = data.to_float(train_images[saved["prior_slices"][:n]])[:, None]
    np.testing.assert_array_equal(saved["prior_codes"][:n], model.encode(nn.Tensor(plain)))
    train_levels, held_levels = data.split_held_out(data.slice_levels(dataset.files, 4))
    np.testing.assert_array_equal(saved["prior_labels"], train_levels[saved["prior_slices"]])
    np.testing.assert_array_equal(saved["held_labels"], held_levels)
    logged = [e for e in events(out) if e["event"] == "prior"][-1]
    assert logged["held_out_nll_bits"] == pytest.approx(
        mean_bits(prior, saved["held_codes"], saved["held_labels"]), rel=1e-6)


def interrupt_after_first_epoch(out, device, *args):
    """Start a training run, press Ctrl-C (SIGINT) once its first epoch line appears; the run must
    save a checkpoint and exit with code 130."""
    env = child_env(OPENBLAS_NUM_THREADS="1")      # the CuPy stand-in too, where a session uses it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_vqvae.py"), "--out",
                                str(out), *TINY, "--device", device, *args], cwd=ROOT, env=env,
                               text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch"):
            process.send_signal(signal.SIGINT)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=300) == 130, "".join(lines)
    assert "checkpoint saved" in "".join(lines)


def test_each_stage_resumes_to_the_uninterrupted_result(full_run, tmp_path, device):
    out, _ = full_run
    reference = nn.load(os.path.join(out, "checkpoint.npz"))
    part = tmp_path / "parts"
    schedule = ["--epochs", "4", "--prior-epochs", "4"]

    interrupt_after_first_epoch(part, device, "--stage", "vqvae", *schedule)
    train(part, "--stage", "vqvae", "--resume", *schedule, device=device)
    resumed = nn.load(os.path.join(part, "checkpoint.npz"))
    for name, value in reference["vqvae"].items():
        np.testing.assert_array_equal(resumed["vqvae"][name], value, err_msg=name)

    interrupt_after_first_epoch(part, device, "--stage", "prior", *schedule)
    train(part, "--stage", "prior", *schedule, device=device)
    resumed = nn.load(os.path.join(part, "checkpoint.npz"))
    for name, value in reference["prior"].items():
        np.testing.assert_array_equal(resumed["prior"][name], value, err_msg=name)
    for name, value in reference["vqvae"].items():      # --stage prior leaves the VQ-VAE alone
        np.testing.assert_array_equal(resumed["vqvae"][name], value, err_msg=name)
    for name in ("prior_codes", "prior_labels", "held_codes", "held_labels"):
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    assert int(resumed["step"]) == int(reference["step"]) == 16

    train(part, "--stage", "sample", *schedule, device=device)
    for i in range(4):
        name = f"samples/img_{i:04d}.png"
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(part, name), "rb") as b:
            assert a.read() == b.read(), name


def test_prior_stage_needs_a_trained_vqvae(tmp_path):
    text = train(tmp_path / "empty", "--stage", "prior", expect=1)
    assert "no checkpoint" in text and "Traceback" not in text


def test_generate_reads_the_checkpoint(full_run, tmp_path, device):
    out, _ = full_run
    text = run("generate.py", "--checkpoint", os.path.join(out, "checkpoint.npz"), "--n", "3",
               "--out", str(tmp_path / "generated"), "--temperature", "0.5", "--device", device)
    assert os.path.exists(tmp_path / "generated" / "img_0002.png"), text
    assert os.path.exists(tmp_path / "generated" / "grid.png")


def test_generate_draws_one_level_and_refuses_levels_the_prior_lacks(full_run, tmp_path, device):
    out, _ = full_run
    checkpoint = os.path.join(out, "checkpoint.npz")
    run("generate.py", "--checkpoint", checkpoint, "--n", "2", "--level", "3",
        "--out", str(tmp_path / "top"), "--device", device)
    assert os.path.exists(tmp_path / "top" / "img_0001.png")
    text = run("generate.py", "--checkpoint", checkpoint, "--level", "4",
               "--out", str(tmp_path / "bad"), expect=2)
    assert "--level 4: use a whole number from 0 (lowest slices) to 3" in text
    assert "Traceback" not in text and not os.path.exists(tmp_path / "bad")


def test_a_run_saved_before_slice_levels_still_samples_unconditionally(tmp_path, device):
    """A checkpoint from before --prior-levels (no level in its settings, no labels with its code
    maps, an unconditional prior) continues with --stage sample and feeds generate.py, which
    refuses --level for it."""
    out = tmp_path / "old"
    train(out, "--epochs", "1", "--prior-epochs", "1", "--prior-levels", "0", device=device)
    path = os.path.join(out, "checkpoint.npz")
    saved = nn.load(path)
    config = saved["config"]
    config = json.loads(config) if isinstance(config, str) else dict(config)
    for key in ("prior_levels", "prior_batch_size", "prior_dropout", "augment"):
        del config[key]
    saved["config"] = json.dumps(config) if isinstance(saved["config"], str) else config
    del saved["prior_slices"], saved["version"]          # as version 1 (before these settings)
    nn.save(saved, path)
    text = run("train_vqvae.py", "--out", str(out), "--stage", "sample", "--temperature", "1.0",
               "--device", device)                       # its saved settings: no levels
    assert "nearest-neighbour SSIM" in text
    assert [e for e in events(out) if e["event"] == "sample_quality"][-1]["temperature"] == 1.0
    written = json.load(open(os.path.join(out, "config.json")))
    assert written["prior_levels"] == 0 and written["prior_dropout"] == 0.0
    text = run("generate.py", "--checkpoint", path, "--n", "2", "--out", str(tmp_path / "g"),
               "--device", device)
    assert os.path.exists(tmp_path / "g" / "img_0001.png"), text
    text = run("generate.py", "--checkpoint", path, "--level", "0", "--out",
               str(tmp_path / "bad"), expect=2)
    assert "--level 0: this run's prior has no slice levels" in text
