"""train_stylegan.py and generate.py as a user runs them: tiny progressive runs (8x8 -> 16x16) in
subprocesses. Schedule used here: 8 images a step, 8x8 for steps 0-2, 16x16 from step 3 with a
fade-in over steps 3-4; epochs of 2 steps, so epoch 2 ends in the middle of the 16x16 fade. On the
device under test (`pytest --device gpu` runs them on CuPy)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_script as run
import experiment

TINY = ["--image-size", "16", "--batch-size", "8", "--steps-per-epoch", "2",
        "--phase-images", "24", "--fade-images", "16", "--fmap-base", "32", "--fmap-max", "8",
        "--z-dim", "8", "--w-dim", "8", "--samples", "8", "--seed", "2", "--reg-every", "2"]

pytestmark = pytest.mark.slow


def train(out, *args, device="cpu", check=True):
    return run("train_stylegan.py", "--out", out, *TINY, "--device", device, *args, check=check)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, device):
    """One uninterrupted tiny run of 3 epochs (6 steps), shared by the tests below."""
    out = tmp_path_factory.mktemp("runs") / "stylegan"
    return out, train(out, "--epochs", "3", device=device)


def test_a_tiny_progressive_run_writes_every_output(finished):
    out, result = finished
    assert sorted(os.listdir(out / "samples")) == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert Image.open(out / "samples" / "epoch_001.png").size == (3 * 18 + 2, 3 * 18 + 2)
    for resolution in (8, 16):
        folder = out / "phases" / f"res_{resolution}"
        assert sorted(os.listdir(folder)) == ["checkpoint.npz", "losses.png", "samples.png"]
        grid = Image.open(folder / "samples.png")
        assert grid.size == (3 * (resolution + 2) + 2,) * 2           # drawn at that resolution
        saved = experiment.load_checkpoint(folder / "checkpoint.npz", "stylegan")
        assert int(saved["resolution"]) == resolution
    assert experiment.load_checkpoint(out / "phases" / "res_8" / "checkpoint.npz")["step"] == 3
    for name in ("losses.png", "embedding_pca.png", "embedding_tsne.png", "config.json"):
        assert os.path.getsize(out / name) > 0, name
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    events = [r["event"] for r in records]
    assert events == ["start", "curve", "epoch", "curve", "phase", "curve", "epoch", "epoch",
                      "curve", "phase", "sample_quality"]
    curve = [r for r in records if r["event"] == "curve"]          # scored every epoch and phase
    assert [(r["step"], r["images"], r["resolution"]) for r in curve] == \
        [(2, 16, 8), (3, 24, 8), (4, 32, 16), (6, 48, 16)]
    assert all(0 <= r[k] <= 1 for r in curve for k in ("nn_ssim", "recall", "coverage"))
    assert curve[0]["real_nn_ssim"] < curve[-1]["real_nn_ssim"] <= 1   # blocky 8x8: lower
    assert {"real_pairwise_ssim", "real_recall", "real_coverage"} <= set(curve[0])
    assert os.path.getsize(out / "learning_curve.png") > 0
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [(r["step"], r["resolution"], r["alpha"]) for r in epochs] == \
        [(2, 8, 1.0), (4, 16, 0.0), (6, 16, 1.0)]
    assert {"d_loss", "g_loss", "penalty", "d_real", "d_fake", "seconds_per_image"} <= set(epochs[0])
    scores = records[-1]
    assert scores["resolution"] == 16 and set(scores["seconds_per_image"]) == {"8", "16"}
    assert 0 <= scores["nn_ssim"] <= 1 and scores["n_samples"] == 8
    assert scores["nn_ssim"] == pytest.approx(curve[-1]["nn_ssim"], abs=1e-4)  # the same score
    checkpoint = experiment.load_checkpoint(out / "checkpoint.npz", "stylegan")
    assert checkpoint["step"] == 6 and int(checkpoint["resolution"]) == 16
    assert len(checkpoint["history"]["g_loss"]) == 6
    assert "reached 16x16" in result.stdout and "nearest-neighbour SSIM" in result.stdout


def test_resuming_in_the_middle_of_a_phase_equals_an_uninterrupted_run(finished, tmp_path, device):
    out, _ = finished
    part = tmp_path / "part"
    first = train(part, "--epochs", "2", device=device)        # stops after step 4: fading in 16x16
    assert "reached 16x16" in first.stdout
    halfway = experiment.load_checkpoint(part / "checkpoint.npz", "stylegan")
    assert halfway["step"] == 4 and int(halfway["resolution"]) == 16
    resumed = train(part, "--epochs", "3", "--resume", device=device)
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout
    a = experiment.load_checkpoint(part / "checkpoint.npz", "stylegan")
    b = experiment.load_checkpoint(out / "checkpoint.npz", "stylegan")
    assert a["step"] == b["step"] == 6
    for part_name in ("generator", "discriminator", "generator_ema"):
        for key in b[part_name]:
            np.testing.assert_array_equal(a[part_name][key], b[part_name][key],
                                          err_msg=f"{part_name}.{key}")
    for part_name in ("optimizer_g", "optimizer_d"):
        for index, state in b[part_name]["state"].items():
            for key, value in state.items():
                np.testing.assert_array_equal(a[part_name]["state"][index][key], value)
    np.testing.assert_array_equal(a["history"]["d_loss"], b["history"]["d_loss"])


def test_generate_draws_from_a_stylegan_checkpoint_with_truncation(finished, tmp_path, device):
    out, _ = finished
    result = run("generate.py", "--checkpoint", out / "checkpoint.npz", "--n", "5",
                 "--truncation", "0.5", "--out", tmp_path / "gen", "--device", device)
    files = sorted(os.listdir(tmp_path / "gen"))
    assert files == ["grid.png"] + [f"img_{i:04d}.png" for i in range(5)], result.stdout
    assert Image.open(tmp_path / "gen" / "img_0000.png").size == (16, 16)


def test_bad_schedule_flags_give_a_clear_error(tmp_path):
    result = train(tmp_path / "bad", "--image-size", "32", "--phase-images", "24,24,24,24",
                   "--batch-size", "6", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--batch-size 6: use a multiple of 4" in result.stderr
    result = train(tmp_path / "bad2", "--image-size", "64", "--phase-images", "24,24",
                   check=False)
    assert result.returncode == 2 and "--image-size 64 needs 3 values" in result.stderr


# ---- DiffAugment and gamma per phase (--diffaugment, --gamma-scaling) ----------------------------

AUGMENTED = ["--loss", "ns-r1", "--diffaugment", "color,translation,cutout",
             "--gamma-scaling", "resolution"]     # gamma scaling acts on R1: the paper's loss


def test_diffaugment_with_scaled_gamma_writes_every_output_and_resumes_exactly(finished, tmp_path,
                                                                                device):
    plain = experiment.load_checkpoint(finished[0] / "checkpoint.npz", "stylegan")
    full, part = tmp_path / "full", tmp_path / "part"
    train(full, "--epochs", "3", *AUGMENTED, device=device)
    assert sorted(os.listdir(full / "samples")) == [f"epoch_00{k}.png" for k in (1, 2, 3)]
    for resolution in (8, 16):
        assert sorted(os.listdir(full / "phases" / f"res_{resolution}")) == \
            ["checkpoint.npz", "losses.png", "samples.png"]
    for name in ("losses.png", "embedding_pca.png", "embedding_tsne.png", "report.html"):
        assert os.path.getsize(full / name) > 0, name
    with open(full / "config.json") as f:
        config = json.load(f)
    assert config["diffaugment"] == "color,translation,cutout"
    assert config["gamma_scaling"] == "resolution" and config["loss"] == "ns-r1"

    train(part, "--epochs", "2", *AUGMENTED, device=device)        # stops in the 16x16 fade-in
    resumed = train(part, "--epochs", "3", "--resume", device=device)
    assert "at step 4" in resumed.stdout
    a = experiment.load_checkpoint(part / "checkpoint.npz", "stylegan")
    b = experiment.load_checkpoint(full / "checkpoint.npz", "stylegan")
    assert a["step"] == b["step"] == 6 and a["rng_augment"] == b["rng_augment"]
    assert a["rng_augment"] != plain.get("rng_augment")              # augmentation drew numbers
    for part_name in ("generator", "discriminator", "generator_ema"):
        for key in b[part_name]:
            np.testing.assert_array_equal(a[part_name][key], b[part_name][key],
                                          err_msg=f"{part_name}.{key}")
    for key in ("d_loss", "g_loss", "penalty"):
        np.testing.assert_array_equal(a["history"][key], b["history"][key])


def test_gamma_scaling_divides_the_first_penalty_by_the_squared_resolution_ratio(tmp_path, device):
    """Step 0 (8x8 of a 16x16 run) sees the same D and images with and without the scaling, so
    its R1 penalty is exactly (8 / 16)^2 = 1/4 of the unscaled one."""
    train(tmp_path / "plain", "--epochs", "2", "--loss", "ns-r1", device=device)
    train(tmp_path / "scaled", "--epochs", "2", "--loss", "ns-r1", "--gamma-scaling", "resolution",
          device=device)
    plain = experiment.load_checkpoint(tmp_path / "plain" / "checkpoint.npz", "stylegan")
    scaled = experiment.load_checkpoint(tmp_path / "scaled" / "checkpoint.npz", "stylegan")
    assert scaled["history"]["penalty"][0] == pytest.approx(plain["history"]["penalty"][0] / 4,
                                                            rel=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--diffaugment", "colour"], "--diffaugment colour: use a comma list of color, translation, "
                                  "cutout"),
    (["--diffaugment", "color,color"], "--diffaugment color,color: use a comma list"),
    (["--gamma-scaling", "pixels"], "argument --gamma-scaling: invalid choice: 'pixels'"),
])
def test_bad_augmentation_flags_are_refused_before_anything_is_written(tmp_path, flags, message):
    result = train(tmp_path / "bad", *flags, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


# ---- the design options of issue 21 (--synthesis, --critic, D's own width) ----------------------

DESIGNS = {
    "skip synthesis": ["--synthesis", "skip"],
    "dcgan critic": ["--critic", "dcgan", "--loss", "ns", "--ndf", "4", "--critic-mbstd", "4",
                     "--lr-d", "0.0002", "--synthesis", "skip"],
    "wider critic": ["--d-fmap-base", "64", "--d-fmap-max", "16"],
    "G's own widths, tanh": ["--g-widths", "8=4,16=8", "--g-output", "tanh", "--synthesis", "skip"],
}


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_each_design_option_writes_every_output_and_resumes_exactly(tmp_path, device, design):
    flags = DESIGNS[design]
    full, part = tmp_path / "full", tmp_path / "part"
    train(full, "--epochs", "3", *flags, device=device)
    for name in ("losses.png", "learning_curve.png", "embedding_pca.png", "report.html",
                 "samples/epoch_003.png", "phases/res_16/checkpoint.npz"):
        assert os.path.getsize(full / name) > 0, name
    config = json.load(open(full / "config.json"))
    assert all(str(config[flag[2:].replace("-", "_")]) == value
               for flag, value in zip(flags[::2], flags[1::2])), config
    train(part, "--epochs", "2", *flags, device=device)            # stops in the 16x16 fade-in
    train(part, "--epochs", "3", "--resume", device=device)
    a = experiment.load_checkpoint(part / "checkpoint.npz", "stylegan")
    b = experiment.load_checkpoint(full / "checkpoint.npz", "stylegan")
    for part_name in ("generator", "discriminator", "generator_ema"):
        for key in b[part_name]:
            np.testing.assert_array_equal(a[part_name][key], b[part_name][key],
                                          err_msg=f"{part_name}.{key}")
    np.testing.assert_array_equal(a["history"]["g_loss"], b["history"]["g_loss"])
