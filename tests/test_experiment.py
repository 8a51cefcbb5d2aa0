"""The shared run machinery (experiment/) and its pictures, in-process and fast."""
import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

import data
import experiment
from experiment import pictures
import nn
import nn.serialization


def small_state(model="dcgan", step=3, value=1.0):
    return {"format": experiment.FORMAT, "model": model, "config": {"image_size": 16, "lr": 2e-4},
            "step": step, "epoch": 1, "weights": {"w": np.full((2, 3), value, dtype=np.float32)}}


def make_parser(**defaults):
    p = experiment.parser("test", **defaults)
    p.add_argument("--ngf", type=int, default=4)
    return p


# ---- checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "checkpoint.npz"
    experiment.save_checkpoint(path, small_state())
    loaded = experiment.load_checkpoint(path, "dcgan")
    assert loaded["config"] == {"image_size": 16, "lr": 2e-4}
    assert loaded["step"] == 3 and loaded["epoch"] == 1
    np.testing.assert_array_equal(loaded["weights"]["w"], np.ones((2, 3), np.float32))
    assert loaded["weights"]["w"].dtype == np.float32


def test_a_failure_in_the_middle_of_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    experiment.save_checkpoint(path, small_state(value=1.0))

    def write_half_then_fail(file, arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")
    monkeypatch.setattr(nn.serialization, "_write_npz", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        experiment.save_checkpoint(path, small_state(value=2.0))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]          # no temporary file left behind
    np.testing.assert_array_equal(experiment.load_checkpoint(path)["weights"]["w"], 1.0)


def test_non_finite_weights_are_never_saved(tmp_path):
    path = tmp_path / "checkpoint.npz"
    experiment.save_checkpoint(path, small_state(value=1.0))
    with pytest.raises(experiment.NonFiniteLoss, match="weights.w"):
        experiment.save_checkpoint(path, small_state(value=np.nan))
    np.testing.assert_array_equal(experiment.load_checkpoint(path)["weights"]["w"], 1.0)


@pytest.mark.parametrize("case, message", [
    ("missing", "no checkpoint at"),
    ("folder", "is a folder"),
    ("corrupt", "cannot read the checkpoint"),
    ("truncated", "cannot read the checkpoint"),
    ("foreign", "not a braingen checkpoint"),
    ("other model", "holds a vqvae checkpoint, but a dcgan checkpoint is needed"),
])
def test_bad_checkpoints_give_clear_errors(tmp_path, case, message):
    path = tmp_path / "checkpoint.npz"
    if case == "folder":
        path.mkdir()
    elif case == "corrupt":
        path.write_bytes(b"this is not a zip file")
    elif case == "truncated":
        experiment.save_checkpoint(path, small_state())
        path.write_bytes(path.read_bytes()[:200])
    elif case == "foreign":
        nn.save({"w": np.zeros(3)}, str(path))
    elif case == "other model":
        experiment.save_checkpoint(path, small_state(model="vqvae"))
    with pytest.raises(experiment.CheckpointError, match=message):
        experiment.load_checkpoint(path, "dcgan")


def test_rng_state_round_trip():
    a = np.random.default_rng(5)
    a.standard_normal(7)
    text = experiment.rng_state(a)
    expected = a.standard_normal(4)
    b = np.random.default_rng(0)
    experiment.set_rng_state(b, json.loads(json.dumps(text)))
    np.testing.assert_array_equal(b.standard_normal(4), expected)


# ---- flags, device, errors -------------------------------------------------------------------------

def test_gpu_without_cupy_is_exit_code_2_naming_cupy(monkeypatch):
    monkeypatch.setattr(nn.backend, "_import_cupy", lambda: None)
    with pytest.raises(experiment.ExperimentError, match="CuPy is not installed") as caught:
        experiment.choose_device("gpu")
    assert caught.value.code == 2
    assert experiment.choose_device("auto") == "cpu"
    assert experiment.choose_device("cpu") == "cpu"


def test_main_prints_one_line_and_exits_with_the_code(capsys):
    def fails():
        raise experiment.ExperimentError("something the user can fix", code=2)
    with pytest.raises(SystemExit) as caught:
        experiment.main(fails)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: something the user can fix" and "Traceback" not in err

    def data_problem():
        raise data.DataError("no images under /nowhere")
    with pytest.raises(SystemExit) as caught:
        experiment.main(data_problem)
    assert caught.value.code == 1 and "no images under /nowhere" in capsys.readouterr().err


def test_bad_flag_values_are_refused(tmp_path):
    with pytest.raises(experiment.ExperimentError, match="--batch-size 0: use a whole number, at "
                       "least 1; the default is 32"):
        experiment.start(make_parser(), "dcgan", ["--out", str(tmp_path), "--batch-size", "0"])


def test_every_script_takes_the_adni_class_filter_as_subset_or_classes():
    p = make_parser()
    assert p.parse_args(["--subset", "AD"]).classes == "AD"
    assert p.parse_args(["--classes", "NC"]).classes == "NC"
    assert p.parse_args([]).classes is None
    with pytest.raises(SystemExit):
        p.parse_args(["--subset", "MCI"])


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path):
    experiment.save_checkpoint(tmp_path / experiment.CHECKPOINT, small_state())
    with pytest.raises(experiment.ExperimentError, match="--resume"):
        experiment.start(make_parser(), "dcgan", ["--out", str(tmp_path)])
    run = experiment.start(make_parser(), "dcgan", ["--out", str(tmp_path), "--overwrite"])
    assert run.checkpoint is None and not os.path.exists(run.checkpoint_path)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_resume_keeps_the_saved_settings_and_refuses_conflicting_flags(tmp_path):
    out = str(tmp_path)
    run = experiment.start(make_parser(), "dcgan", ["--out", out, "--ngf", "8", "--epochs", "2"])
    run.history = {"step": [1, 2, 3, 4], "loss": [4.0, 3.0, 2.0, 1.0]}
    run.save({}, step=4)
    run.log("epoch", step=4)
    run.log("epoch", step=6)                                      # written after the checkpoint

    resumed = experiment.start(make_parser(), "dcgan", ["--out", out, "--resume", "--epochs", "5"])
    assert resumed.config.ngf == 8 and resumed.config.epochs == 5   # saved ngf, new epochs
    assert resumed.checkpoint["step"] == 4
    assert resumed.history["loss"] == [4.0, 3.0, 2.0, 1.0]
    with open(os.path.join(out, experiment.METRICS)) as f:
        steps = [json.loads(line).get("step") for line in f]
    assert 6 not in steps and 4 in steps                          # the log forgot step 6
    with pytest.raises(experiment.ExperimentError, match=r"--ngf 16 \(saved: 8\)"):
        experiment.start(make_parser(), "dcgan", ["--out", out, "--resume", "--ngf", "16"])
    with pytest.raises(experiment.CheckpointError, match="no checkpoint"):
        experiment.start(make_parser(), "dcgan", ["--out", str(tmp_path / "new"), "--resume"])
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_one_dict_of_stateful_objects_serves_save_and_restore(tmp_path, capsys):
    def objects(seed):
        nn.manual_seed(seed)
        net = nn.Linear(3, 2)
        optimizer = nn.optim.Adam(net.parameters(), lr=0.1)
        return {"net": net, "optimizer": optimizer, "rng": np.random.default_rng(seed)}
    out = str(tmp_path)
    state = objects(0)
    (state["net"](nn.Tensor(np.ones((4, 3), np.float32))) ** 2).mean().backward()
    state["optimizer"].step()                                    # Adam now has moments to save
    state["rng"].standard_normal(5)
    run = experiment.start(make_parser(), "dcgan", ["--out", out])
    run.begin_epoch(1, 5, 10, 20)
    run.save(state, step=7, extra_count=3)
    saved = experiment.load_checkpoint(run.checkpoint_path, "dcgan")
    assert saved["step"] == 7 and saved["epoch"] == 1 and saved["extra_count"] == 3
    assert isinstance(saved["rng"], str)                       # a Generator is stored as JSON text
    assert fresh_run_restores_nothing(out, objects) == 0

    resumed = experiment.start(make_parser(), "dcgan", ["--out", out, "--resume"])
    again = objects(1)
    assert resumed.restore(again) == 7 and "at step 7" in capsys.readouterr().out
    np.testing.assert_array_equal(again["net"].weight.numpy(), state["net"].weight.numpy())
    assert again["optimizer"].state_dict()["state"]["0"]["exp_avg"].tolist() == \
        state["optimizer"].state_dict()["state"]["0"]["exp_avg"].tolist()
    np.testing.assert_array_equal(again["rng"].standard_normal(3), state["rng"].standard_normal(3))
    with pytest.raises(experiment.ExperimentError, match="checkpoint's net does not fit"):
        resumed.restore({"net": nn.Linear(5, 2)})
    with pytest.raises(ValueError, match=r"may not be named \['step'\]"):
        resumed.save({"step": again["net"]}, step=8)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def fresh_run_restores_nothing(out, objects):
    run = experiment.Run(make_parser(out=out + "/fresh").parse_args([]), "dcgan", "cpu")
    state = objects(2)
    before = state["net"].weight.numpy().copy()
    step = run.restore(state)
    np.testing.assert_array_equal(state["net"].weight.numpy(), before)
    return step


# ---- the run: records, epochs, Ctrl-C ---------------------------------------------------------------

def test_a_non_finite_loss_stops_naming_the_first_bad_step_when_the_values_are_read(tmp_path):
    run = experiment.Run(make_parser(out=str(tmp_path)).parse_args([]), "dcgan", "cpu")
    run.begin_epoch(0, 0, 10, 10)
    run.record(1, loss_d=np.float32(0.5), loss_g=np.array(1.0, np.float32))
    run.record(2, loss_d=0.5, loss_g=np.array(np.nan, np.float32))    # not read yet: no error
    run.record(3, loss_d=float("inf"), loss_g=1.0)
    with pytest.raises(experiment.NonFiniteLoss, match="loss_g became nan at step 2"):
        run.read()
    assert run.history["step"] == [1] and run.history["loss_g"] == [1.0]
    run.record(4, loss_d=float("inf"), loss_g=1.0)
    with pytest.raises(experiment.NonFiniteLoss, match="loss_d became inf at step 4"):
        run.save({}, 4)                               # read before writing: no checkpoint
    assert not os.path.exists(run.checkpoint_path)


def test_recorded_values_are_read_every_read_every_steps_in_one_transfer(tmp_path, monkeypatch):
    reads = []
    to_numpy = nn.backend.to_numpy
    monkeypatch.setattr(nn.backend, "to_numpy", lambda a: reads.append(a.shape) or to_numpy(a))
    run = experiment.Run(make_parser(out=str(tmp_path), epochs=1).parse_args([]), "dcgan", "cpu")
    run.read_every = 4
    run.begin_epoch(0, 0, 10, 10)
    for step in range(1, 11):
        run.record(step, loss=np.array(step, np.float32), count=np.array(step * 2), rate=0.5)
        assert len(run.history.get("step", [])) == step // 4 * 4    # read at steps 4 and 8
    assert reads == [(8,), (8,)]                  # 2 arrays x 4 steps, each time ONE transfer
    run.end_epoch()                                 # reads steps 9 and 10
    assert reads == [(8,), (8,), (4,)]
    assert run.history["step"] == list(range(1, 11))
    assert run.history["loss"] == [float(s) for s in range(1, 11)]
    assert run.history["count"][-1] == 20.0 and run.history["rate"] == [0.5] * 10
    assert all(type(v) is float for v in run.history["loss"])


def test_end_epoch_logs_means_and_draws_the_loss_plot(tmp_path, capsys):
    run = experiment.Run(make_parser(out=str(tmp_path), epochs=1).parse_args([]), "dcgan", "cpu")
    run.begin_epoch(0, 0, 2, 2)
    run.record(1, loss_d=1.0)
    run.record(2, loss_d=3.0)
    means = run.end_epoch(extra_number=7)
    assert means == {"loss_d": 2.0}
    assert "epoch   1/1  step 2/2  loss_d 2.000" in capsys.readouterr().out
    with open(tmp_path / experiment.METRICS) as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["event"] == "epoch" and records[-1]["loss_d"] == 2.0
    assert records[-1]["extra_number"] == 7
    assert Image.open(tmp_path / "losses.png").size[0] > 100


def test_a_stage_with_its_own_epoch_count_shows_it(tmp_path, capsys):
    run = experiment.Run(make_parser(out=str(tmp_path), epochs=15).parse_args([]), "vqvae", "cpu")
    run.begin_epoch(1, 10, 20, 30, epochs=3)        # e.g. the PixelCNN's --prior-epochs
    run.record(11, nll_bits=2.0)
    run.end_epoch()
    assert "epoch   2/3  step 20/30" in capsys.readouterr().out


def test_first_ctrl_c_asks_to_stop_and_the_second_one_interrupts(tmp_path):
    run = experiment.Run(make_parser(out=str(tmp_path)).parse_args([]), "dcgan", "cpu")
    previous = signal.signal(signal.SIGINT, run._on_sigint)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert run.stop_requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert run.interrupted(12).code == 130 and "--resume" in str(run.interrupted(12))


def test_stream_walks_passes_and_resumes_exactly():
    loader = data.BatchLoader(np.arange(5 * 16 * 16, dtype=np.uint8).reshape(5, 16, 16) % 251,
                              batch_size=2, seed=3, augment=False)
    assert len(loader) == 2
    full = list(experiment.stream(loader, 0, 7))
    assert [s for s, _ in full] == list(range(7))
    part = list(experiment.stream(loader, 3, 7))
    for (s1, b1), (s2, b2) in zip(full[3:], part):
        assert s1 == s2
        np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(full[2][1], loader.batch(1, 0))     # step 2 = pass 1, batch 0


# ---- pictures -------------------------------------------------------------------------------------

def test_grid_places_every_image():
    batch = np.stack([np.full((1, 4, 4), v, dtype=np.float32) for v in (-1.0, 0.0, 1.0)])
    canvas = pictures.grid(batch, nrow=2, padding=1)
    assert canvas.shape == (2 * 5 + 1, 2 * 5 + 1) and canvas.dtype == np.uint8
    assert canvas[1, 1] == 0 and canvas[1, 6] == 128 and canvas[6, 1] == 255
    assert canvas[6, 6] == 0                                            # empty fourth cell


def test_save_images_and_grid_write_pngs(tmp_path):
    batch = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    paths = pictures.save_images(batch, tmp_path / "many")
    assert [os.path.basename(p) for p in paths] == ["img_0000.png", "img_0001.png", "img_0002.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), data.to_uint8(batch[1, 0]))
    grid_path = pictures.save_grid(batch, tmp_path / "grid.png")
    assert Image.open(grid_path).mode == "L"
    with pytest.raises(ValueError, match="single-channel"):
        pictures.grid(np.zeros((2, 3, 4, 4)))


def test_moving_average():
    np.testing.assert_allclose(pictures.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def test_upscale_repeats_each_pixel():
    batch = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    big = pictures.upscale(batch, 4)
    assert big.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(big[1, 0], [[4, 4, 5, 5], [4, 4, 5, 5], [6, 6, 7, 7], [6, 6, 7, 7]])


def test_image_rows_draws_one_row_per_entry(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (10, 1, 6, 6))
    codes = np.random.default_rng(1).integers(0, 5, (3, 4, 4))
    path = pictures.image_rows(tmp_path / "rows.png", [
        {"images": images, "label": "originals", "captions": [f"{i}" for i in range(10)]},
        {"images": codes, "cmap": "tab20", "vmin": 0, "vmax": 4, "interpolation": "nearest"}])
    assert Image.open(path).size == (880, 242)                       # 8 columns, 2 rows
    assert Image.open(pictures.image_rows(tmp_path / "one.png", [{"images": images}])).size == \
        (880, 121)
