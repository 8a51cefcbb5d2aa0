"""train_dcgan.py and generate.py as a user runs them: real subprocesses on tiny settings, on the
device under test (`pytest --device gpu` runs them on CuPy)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_script as run
import experiment
import nn

TINY = ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "8",
        "--samples", "8", "--seed", "3", "--dropout", "0.2",   # dropout: its RNG must resume too
        "--real-label", "0.9", "--lr-d", "1e-4"]

pytestmark = pytest.mark.slow


def train(out, *args, device="cpu", check=True):
    return run("train_dcgan.py", "--out", out, *TINY, "--device", device, *args, check=check)


def assert_same_weights(path_a, path_b):
    a, b = experiment.load_checkpoint(path_a), experiment.load_checkpoint(path_b)
    assert a["step"] == b["step"]
    for part in ("generator", "discriminator", "generator_ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            np.testing.assert_array_equal(a[part][key], b[part][key], err_msg=f"{part}.{key}")
    for part in ("optimizer_g", "optimizer_d"):
        for index, state in a[part]["state"].items():
            for key, value in state.items():
                np.testing.assert_array_equal(value, b[part]["state"][index][key])
    np.testing.assert_array_equal(a["history"]["loss_d"], b["history"]["loss_d"])


def assert_clean_error(result, code, *phrases):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory, device):
    """One tiny complete run on the device under test, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("runs") / "dcgan"
    result = train(out, "--epochs", "2", "--steps-per-epoch", "3", device=device)
    return out, result


def test_a_tiny_run_writes_every_output(finished):
    out, result = finished
    assert sorted(os.listdir(out / "samples")) == ["epoch_001.png", "epoch_002.png"]
    grid = Image.open(out / "samples" / "epoch_002.png")
    assert grid.mode == "L" and grid.size == (3 * 18 + 2, 3 * 18 + 2)       # 8 images, 3 per row
    assert Image.open(out / "losses.png").size[0] >= 400
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "report", "sample_quality"]
    assert [r["step"] for r in records[1:]] == [3, 6, 6, 6]
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(records[1])
    report = records[-2]
    assert 0 <= report["nn_ssim_mean"] <= 1 and report["n_samples"] == 8 and report["n_real"] == 132
    assert "nearest-neighbour SSIM" in result.stdout
    assert result.stdout.count("epoch ") >= 2                       # one line per epoch (no tty)
    checkpoint = experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")
    assert checkpoint["step"] == 6 and checkpoint["epoch"] == 2
    assert checkpoint["config"]["ngf"] == 4 and len(checkpoint["history"]["loss_g"]) == 6
    average, last = checkpoint["generator_ema"], checkpoint["generator"]   # samples come from the
    assert average.keys() == last.keys()                                     # average of G's weights
    assert any(not np.array_equal(average[k], last[k]) for k in average)
    assert json.load(open(out / "config.json"))["image_size"] == 16


def test_a_checkpoint_holds_only_numpy_arrays(finished):
    """Whatever the device, a checkpoint is plain NumPy: np.load reads every member without
    pickle, and the weights are float32."""
    out, _ = finished
    with np.load(out / "checkpoint.npz", allow_pickle=False) as members:
        for name in members.files:
            value = members[name]
            assert type(value) is np.ndarray and value.dtype != object, name
            if name.startswith(("generator/", "discriminator/")) and value.dtype.kind == "f":
                assert value.dtype == np.float32, name
    loaded = experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")
    assert all(type(v) is np.ndarray for v in loaded["generator"].values())


def test_resume_equals_an_uninterrupted_run(finished, tmp_path, device):
    out, _ = finished
    train(tmp_path / "split", "--epochs", "1", "--steps-per-epoch", "3", device=device)
    resumed = train(tmp_path / "split", "--epochs", "2", "--resume", device=device)
    assert "resumed from" in resumed.stdout
    assert_same_weights(out / "checkpoint.npz", tmp_path / "split" / "checkpoint.npz")
    assert sorted(os.listdir(tmp_path / "split" / "samples")) == ["epoch_001.png", "epoch_002.png"]


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_result(tmp_path, device):
    args = ["--epochs", "2", "--steps-per-epoch", "40", "--device", device]
    straight = tmp_path / "straight"
    train(straight, *args)
    cut = tmp_path / "cut"
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_dcgan.py"), "--out", cut,
                                *TINY, *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stdout:                      # wait until epoch 1 is done, then Ctrl-C
        if line.startswith("epoch "):
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "checkpoint saved" in stderr and "--resume" in stderr
    saved = experiment.load_checkpoint(cut / "checkpoint.npz", "dcgan")
    assert 40 <= saved["step"] < 80                   # stopped part-way, after a finished step
    train(cut, "--epochs", "2", "--resume", device=device)
    assert_same_weights(straight / "checkpoint.npz", cut / "checkpoint.npz")


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path, device):
    if device != "gpu":
        pytest.skip("needs a GPU checkpoint: run with --device gpu")
    out = tmp_path / "moved"
    train(out, "--epochs", "1", "--steps-per-epoch", "3", device="gpu")
    resumed = train(out, "--epochs", "2", "--resume", device="cpu")
    assert "resumed from" in resumed.stdout and "on cpu" in resumed.stdout
    checkpoint = experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")
    assert checkpoint["step"] == 6 and checkpoint["config"]["device"] == "cpu"
    assert len(checkpoint["history"]["loss_d"]) == 6
    assert np.isfinite(checkpoint["history"]["loss_g"]).all()
    with open(out / "metrics.jsonl") as f:
        assert [json.loads(line)["event"] for line in f][-4:] == ["resume", "epoch", "report",
                                                                  "sample_quality"]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    result = train(tmp_path / "empty", "--resume", check=False)
    assert_clean_error(result, 1, "no checkpoint at", "--resume")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
    result = train(tmp_path, "--resume", check=False)
    assert_clean_error(result, 1, "cannot read the checkpoint", "checkpoint.npz")
    result = run("generate.py", "--checkpoint", tmp_path / "checkpoint.npz", check=False)
    assert_clean_error(result, 1, "cannot read the checkpoint")


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    experiment.save_checkpoint(tmp_path / "checkpoint.npz", {
        "format": experiment.FORMAT, "model": "vqvae", "config": {}, "step": 1, "epoch": 0})
    result = train(tmp_path, "--resume", check=False)
    assert_clean_error(result, 1, "holds a vqvae checkpoint, but a dcgan checkpoint is needed")


def test_gpu_without_cupy_exits_2_naming_cupy(tmp_path):
    if nn.gpu_available():
        pytest.skip("a usable GPU is present")
    result = train(tmp_path, "--device", "gpu", check=False)
    assert_clean_error(result, 2, "CuPy")
    assert not os.path.exists(tmp_path / "checkpoint.npz")
    result = run("generate.py", "--checkpoint", "whatever.npz", "--device", "gpu", check=False)
    assert_clean_error(result, 2, "CuPy")


def test_a_missing_data_folder_is_a_clear_error(tmp_path):
    result = train(tmp_path / "out", "--data", tmp_path / "no-such-folder", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no-such-folder" in result.stderr


def test_generate_writes_n_images_a_grid_and_metrics(finished, tmp_path, device):
    out, _ = finished
    result = run("generate.py", "--checkpoint", out / "checkpoint.npz", "--n", "5", "--seed", "1",
                 "--out", tmp_path / "gen", "--metrics", "--device", device)
    files = sorted(os.listdir(tmp_path / "gen"))
    assert [f for f in files if f.startswith("img_")] == [f"img_{i:04d}.png" for i in range(5)]
    assert "grid.png" in files and "metrics.json" in files
    assert Image.open(tmp_path / "gen" / "img_0003.png").size == (16, 16)
    report = json.load(open(tmp_path / "gen" / "metrics.json"))
    assert report["n_samples"] == 5 and report["model"] == "dcgan" and report["step"] == 6
    assert "nearest-neighbour SSIM" in result.stdout
    again = run("generate.py", "--checkpoint", out / "checkpoint.npz", "--n", "5", "--seed", "1",
                "--out", tmp_path / "again", "--device", device)
    assert again.returncode == 0
    assert (Image.open(tmp_path / "gen" / "grid.png").tobytes()
            == Image.open(tmp_path / "again" / "grid.png").tobytes())     # seeded
    wrong = run("generate.py", "--checkpoint", out / "checkpoint.npz", "--truncation", "0.7",
                "--out", tmp_path / "x", check=False)
    assert_clean_error(wrong, 2, "dcgan checkpoints do not take --truncation")


def test_a_nan_loss_stops_clearly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys,
                                                                     device):
    import train_dcgan
    real_step, calls = train_dcgan.train_step, []

    def fails_at_step_5(*args):
        losses = real_step(*args)
        calls.append(1)
        return dict(losses, loss_g=float("nan")) if len(calls) == 5 else losses
    monkeypatch.setattr(train_dcgan, "train_step", fails_at_step_5)
    monkeypatch.setattr(sys, "argv", ["train_dcgan.py", "--out", str(tmp_path), *TINY,
                                      "--epochs", "3", "--steps-per-epoch", "3", "--device", device])
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as caught:
            experiment.main(train_dcgan.train)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "loss_g became nan at step 5" in err and "last good checkpoint" in err and "step 3" in err
    assert experiment.load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 3
