"""Runs killed with SIGKILL at many moments resume with --resume and end exactly where an
uninterrupted run ends (on the CPU: the same weights, optimizer states, loss history, log
records and sample pictures).

Each test runs one uninterrupted tiny run, then the same run in another folder killed again and
again: at chosen moments (tests/kill_at.py: after a training step, half-way through a checkpoint,
a picture, a log line or a copy) and at random times from outside. After each kill the run is
continued as a user would: with --resume when a checkpoint exists, else started again.

Where the kills go (21 at chosen moments, and up to 6 at random times): DCGAN takes 13 chosen
and the random ones, because it is the quickest script to restart and its epoch ends exercise
everything the Run does (samples, losses.png, log, checkpoint); the VQ-VAE takes 4 (across its
stages) and StyleGAN 4 (across its phases and copies), which share that Run.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")
pytestmark = pytest.mark.slow

DCGAN = ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "8",
         "--samples", "4", "--seed", "5", "--dropout", "0.2", "--epochs", "4",
         "--steps-per-epoch", "3"]
VQVAE = ["--image-size", "16", "--channels", "4", "--res-channels", "2", "--res-blocks", "1",
         "--codes", "8", "--code-dim", "2", "--batch-size", "8", "--steps-per-epoch", "2",
         "--epochs", "2", "--prior-epochs", "2", "--prior-channels", "2", "--prior-layers", "1",
         "--augment-copies", "1", "--samples", "2", "--prior-batch-size", "8"]
STYLEGAN = ["--image-size", "16", "--batch-size", "8", "--steps-per-epoch", "2", "--epochs", "3",
            "--phase-images", "24", "--fade-images", "16", "--fmap-base", "16", "--fmap-max", "4",
            "--z-dim", "4", "--w-dim", "4", "--mapping-layers", "1", "--samples", "4",
            "--reg-every", "2", "--seed", "1"]
TIMING_WORDS = ("time", "second", "elapsed")      # log fields that differ between two runs


def command(script, out, flags, kill=None):
    wrapper = [os.path.join(ROOT, "tests", "kill_at.py"), *kill] if kill else []
    return [sys.executable, *wrapper, os.path.join(ROOT, script), "--out", str(out), *flags]


def run(script, out, flags, kill=None):
    """Run to the end, or to the kill; resume when a checkpoint exists. Returns the exit code."""
    resume = ["--resume"] if os.path.exists(os.path.join(out, "checkpoint.npz")) else []
    result = subprocess.run(command(script, out, flags + resume, kill), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


def kill_at_random(script, out, flags, rng, longest, total_steps):
    """Start (or resume) the run, wait for its first line, kill it after a random delay of up to
    the time its remaining steps took in the uninterrupted run (`longest` for `total_steps`).
    Returns True if it was killed, False if it had finished first."""
    path = os.path.join(out, "checkpoint.npz")
    done = experiment.load_checkpoint(path)["step"] if os.path.exists(path) else 0
    resume = ["--resume"] if os.path.exists(path) else []
    process = subprocess.Popen(command(script, out, flags + resume), cwd=ROOT, env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdout.readline()                          # imports done, the run has started
    time.sleep(rng.uniform(0, longest * (1 - done / total_steps)))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=300)
    return process.returncode == -signal.SIGKILL


def kill_chain(script, out, flags, moments):
    """Kill the run at each of `moments` ((WHERE, N) for kill_at.py), resuming each time; then
    let it finish. Returns the number of kills."""
    for moment in moments:
        code = run(script, out, flags, kill=[moment[0], str(moment[1])])
        assert code == -signal.SIGKILL, f"{moment}: exit code {code}, the run was not killed there"
    assert run(script, out, flags) == 0
    return len(moments)


def log_records(out):
    """The metrics log without start/resume lines and without timings."""
    with open(os.path.join(out, experiment.METRICS)) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not any(word in k for word in TIMING_WORDS)}
            for r in records if r["event"] not in ("start", "resume")]


def assert_same_result(reference, out, parts):
    a = experiment.load_checkpoint(os.path.join(reference, "checkpoint.npz"))
    b = experiment.load_checkpoint(os.path.join(out, "checkpoint.npz"))
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for part in parts:
        compare(a[part], b[part], part)
    for name in a["history"]:
        np.testing.assert_array_equal(a["history"][name], b["history"][name], err_msg=name)
    assert log_records(reference) == log_records(out)
    pictures = [os.path.join(folder, name) for folder, _, names in os.walk(reference)
                for name in names if name.endswith(".png") and "embedding" not in name
                and "losses" not in name]
    assert pictures
    for path in pictures:                   # samples and reconstructions: the same pixels
        with open(path, "rb") as x, open(os.path.join(out, os.path.relpath(path, reference)),
                                          "rb") as y:
            assert x.read() == y.read(), path
    leftovers = [n for _, _, names in os.walk(out) for n in names if n.endswith(".tmp")]
    assert leftovers == []


def compare(x, y, where):
    if isinstance(x, dict):
        assert sorted(x) == sorted(y), where
        for key in x:
            compare(x[key], y[key], f"{where}.{key}")
    else:
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=where)


DCGAN_PARTS = ["generator", "discriminator", "generator_ema", "optimizer_g", "optimizer_d",
               "rng_noise", "rng_nn"]


@pytest.fixture(scope="module")
def dcgan_reference(tmp_path_factory):
    """The uninterrupted DCGAN run, and how long it took."""
    out = tmp_path_factory.mktemp("dcgan") / "reference"
    started = time.perf_counter()
    assert run("train_dcgan.py", out, DCGAN) == 0
    return out, time.perf_counter() - started


def test_dcgan_killed_at_13_chosen_moments_ends_with_the_same_weights(dcgan_reference, tmp_path):
    reference, _ = dcgan_reference
    # 12 steps in 4 epochs; each epoch ends with a sample grid, losses.png, a log line and a
    # checkpoint. The counts are per process: after a resume they start again at 1.
    moments = [("step", 2),          # before the first checkpoint: started again from scratch
               ("checkpoint", 1),    # half-way through the first checkpoint: none is kept
               ("picture", 1),       # half-way through the first sample grid
               ("log", 2),           # half-way through the first epoch line
               ("step", 4),          # after the first checkpoint (step 3): resumed at 3
               ("checkpoint", 1),    # half-way through the checkpoint at step 6
               ("picture", 2),       # half-way through losses.png
               ("log", 3),           # half-way through the epoch-3 line; checkpoint at 6
               ("step", 1),          # the first step after a resume
               ("picture", 1),       # the grid of epoch 3
               ("log", 1),           # half-way through the "resume" line
               ("checkpoint", 2),    # the last checkpoint (step 12); the one at 9 is kept
               ("log", 3)]           # the final report's line, after the last checkpoint
    assert kill_chain("train_dcgan.py", tmp_path, DCGAN, moments) == 13
    assert_same_result(reference, tmp_path, DCGAN_PARTS)


def test_dcgan_killed_at_random_times_ends_with_the_same_weights(dcgan_reference, tmp_path):
    reference, seconds = dcgan_reference
    rng, kills = np.random.default_rng(0), 0
    for _ in range(6):
        kills += kill_at_random("train_dcgan.py", tmp_path, DCGAN, rng, seconds, total_steps=12)
    assert run("train_dcgan.py", tmp_path, DCGAN) == 0
    assert kills >= 1                # usually 4-6; a kill that comes after the end is no kill
    assert_same_result(reference, tmp_path, DCGAN_PARTS)


def test_vqvae_killed_across_its_stages_ends_with_the_same_weights(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert run("train_vqvae.py", reference, VQVAE) == 0
    moments = [("checkpoint", 2),    # the VQ-VAE's last checkpoint (step 4), half-written
               ("step", 5),          # in the prior's first epoch, before the prior was saved
               ("checkpoint", 1),    # the prior's first checkpoint, half-written
               ("picture", 3)]       # sampling: in the middle of writing the samples
    assert kill_chain("train_vqvae.py", out, VQVAE, moments) == 4
    assert_same_result(reference, out, ["vqvae", "vqvae_optimizer", "prior", "prior_optimizer",
                                        "prior_codes", "held_codes", "rng_restart"])


def test_stylegan_killed_across_its_phases_ends_with_the_same_weights(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert run("train_stylegan.py", reference, STYLEGAN) == 0
    moments = [("copy", 1),          # copying phases/res_8/checkpoint.npz (step 3)
               ("step", 2),          # fading in 16x16, resumed from the phase checkpoint
               ("checkpoint", 2),    # the checkpoint at the end of training, half-written
               ("copy", 1)]          # copying phases/res_16/checkpoint.npz at the end
    assert kill_chain("train_stylegan.py", out, STYLEGAN, moments) == 4
    assert_same_result(reference, out, ["generator", "discriminator", "generator_ema",
                                        "optimizer_g", "optimizer_d", "rng"])
    for resolution in (8, 16):
        saved = experiment.load_checkpoint(out / "phases" / f"res_{resolution}" / "checkpoint.npz")
        assert int(saved["resolution"]) == resolution
