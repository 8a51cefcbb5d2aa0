"""What a run survives: a full disk or a folder made read-only while it saves, a second run started
on the same folder, a loss that becomes nan or inf (in every script), a damaged image cache, and
the files a killed run leaves half-written. (Runs killed at many moments: test_crash_safety.py.)"""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import data
import experiment
import nn
import nn.serialization
from data import cache, loading
from experiment import files, lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DCGAN = ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "8",
         "--samples", "4", "--seed", "3"]
VQVAE = ["--image-size", "16", "--channels", "4", "--res-channels", "2", "--res-blocks", "1",
         "--codes", "8", "--code-dim", "2", "--batch-size", "8", "--steps-per-epoch", "2",
         "--prior-channels", "2", "--prior-layers", "1", "--augment-copies", "0", "--samples", "2",
         "--prior-batch-size", "8"]
STYLEGAN = ["--image-size", "16", "--batch-size", "8", "--steps-per-epoch", "2",
            "--phase-images", "16", "--fade-images", "8", "--fmap-base", "16", "--fmap-max", "4",
            "--z-dim", "4", "--w-dim", "4", "--mapping-layers", "1", "--samples", "4"]


def leftovers(folder):
    """Temporary files under `folder` (a writer that failed must remove its own)."""
    return [os.path.join(p, n) for p, _, names in os.walk(folder) for n in names
            if n.endswith(".tmp")]


# ---- a full disk, a read-only folder ----------------------------------------------------------

@pytest.mark.parametrize("number, cause", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EACCES, "Permission denied")])
def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one_and_stops(
        number, cause, tmp_path, monkeypatch, run_main):
    import train_dcgan
    real_write, calls = nn.serialization._write_npz, []

    def fails_the_second_time(file, arrays):
        calls.append(1)
        if len(calls) == 2:
            file.write(b"PK\x03\x04 the start of a zip")           # part written, then the error
            raise OSError(number, os.strerror(number))
        return real_write(file, arrays)
    monkeypatch.setattr(nn.serialization, "_write_npz", fails_the_second_time)
    out = tmp_path / "run"
    code, _, err = run_main(train_dcgan.train, ["--out", out, *DCGAN, "--epochs", "3",
                                                      "--steps-per-epoch", "2"])
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"cannot write a checkpoint in {out}: {cause}" in err
    assert "stopped at step 4 and the previous checkpoint (step 2) is kept" in err
    assert f"--out {out} --resume" in err
    assert experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")["step"] == 2
    assert leftovers(out) == []

    monkeypatch.setattr(nn.serialization, "_write_npz", real_write)    # space freed again
    code, stdout, err = run_main(train_dcgan.train, ["--out", out, "--resume"])
    assert code == 0 and "resumed from" in stdout and "at step 2" in stdout, err
    assert experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")["step"] == 6


def test_a_picture_that_cannot_be_written_is_one_line_and_leaves_no_half_file(
        tmp_path, monkeypatch, run_main):
    import train_dcgan

    def full_disk(self, fp, format=None, **params):
        fp.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "run"
    code, _, err = run_main(train_dcgan.train, ["--out", out, *DCGAN, "--epochs", "1",
                                                      "--steps-per-epoch", "1"])
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "No space left on device" in err
    assert leftovers(out) == [] and not (out / "samples" / "epoch_001.png").exists()


# ---- two runs, one folder ---------------------------------------------------------------------

def hold_lock(folder):
    """Another process that locks `folder` and waits; returns once it holds the lock."""
    code = ("import sys, time; from experiment.lock import lock_folder; "
            f"lock_folder({str(folder)!r}); print('locked', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_locked_folder_is_refused_naming_the_holder_and_freed_when_it_dies(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        with pytest.raises(experiment.ExperimentError) as caught:
            lock.lock_folder(str(folder))
        assert f"is in use by another run (PID {holder.pid}: python" in str(caught.value)
        assert "choose another --out" in str(caught.value) and caught.value.code == 1
    finally:
        holder.send_signal(signal.SIGKILL)                       # dies without cleaning up
        holder.wait()
    assert (folder / lock.LOCK_FILE).exists()                    # the file stays, the lock does not
    lock.lock_folder(str(folder))
    assert f"PID {os.getpid()}" in (folder / lock.LOCK_FILE).read_text()
    lock.lock_folder(str(folder))                                # again in this process: fine
    lock.release(str(folder))


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_and_resume_works_after_kill_9(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, os.path.join(ROOT, "train_dcgan.py"), "--out", str(out), *DCGAN,
               "--steps-per-epoch", "2", "--epochs", "1000"]
    first = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    try:
        epochs = 0
        for line in first.stdout:                # two epoch lines: the first checkpoint is saved
            epochs += line.startswith("epoch ")
            if epochs == 2:
                break
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = subprocess.run(command + extra, cwd=ROOT, text=True, capture_output=True,
                                    timeout=120)
            assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
            assert f"is in use by another run (PID {first.pid}:" in second.stderr
            assert "train_dcgan.py" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    saved = experiment.load_checkpoint(out / "checkpoint.npz", "dcgan")
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "train_dcgan.py"), "--out",
                              str(out), "--resume", "--epochs", str(saved["epoch"] + 1)],
                             cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {saved['step']}" in resumed.stdout


# ---- nan and inf in every script --------------------------------------------------------------

def fail_at(module, name, call, replace, monkeypatch):
    """Patch module.name so that its `call`-th call returns replace(real result)."""
    real, calls = getattr(module, name), []

    def patched(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        return replace(result) if len(calls) == call else result
    monkeypatch.setattr(module, name, patched)


def assert_stopped(code, err, out, model, loss, step, kept_step):
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"{loss} at step {step}; training stopped" in err, err
    assert f"the last good checkpoint ({out / 'checkpoint.npz'}, step {kept_step}) is kept" in err
    assert experiment.load_checkpoint(out / "checkpoint.npz", model)["step"] == kept_step


def test_dcgan_stops_on_an_infinite_loss(tmp_path, monkeypatch, run_main):
    import train_dcgan
    fail_at(train_dcgan, "train_step", 3, lambda losses: dict(losses, loss_d=float("inf")),
            monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_main(train_dcgan.train, ["--out", out, *DCGAN, "--epochs", "2",
                                                      "--steps-per-epoch", "2"])
    assert_stopped(code, err, out, "dcgan", "loss_d became inf", 3, 2)


def test_vqvae_stops_on_a_nan_loss_in_its_first_stage(tmp_path, monkeypatch, run_main):
    import train_vqvae
    fail_at(train_vqvae, "vqvae_step", 3,
            lambda result: (dict(result[0], reconstruction=float("nan")), result[1]), monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_main(train_vqvae.main, ["--out", out, *VQVAE, "--epochs", "2"])
    assert_stopped(code, err, out, "vqvae", "reconstruction became nan", 3, 2)


def test_vqvae_stops_on_a_nan_loss_in_the_prior(tmp_path, monkeypatch, run_main):
    import train_vqvae
    fail_at(train_vqvae, "bits_per_code", 3, lambda bits: float("nan"), monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_main(train_vqvae.main, ["--out", out, *VQVAE, "--epochs", "1",
                                                     "--prior-epochs", "2"])
    assert_stopped(code, err, out, "vqvae", "nll_bits became nan", 2 + 3, 2 + 2)
    saved = experiment.load_checkpoint(out / "checkpoint.npz", "vqvae")
    assert saved["vqvae_steps"] == 2 and saved["prior_steps"] == 2


def test_stylegan_stops_on_a_nan_loss(tmp_path, monkeypatch, run_main):
    import train_stylegan
    fail_at(train_stylegan, "train_step", 3, lambda log: dict(log, g_loss=float("nan")),
            monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_main(train_stylegan.train, ["--out", out, *STYLEGAN, "--epochs", "2"])
    assert_stopped(code, err, out, "stylegan", "g_loss became nan", 3, 2)


# ---- the decoded-image cache ------------------------------------------------------------------

def plain_folder(root, count=5, size=12):
    os.makedirs(root)
    for i in range(count):
        pixels = np.full((size, size), 25 * i, np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, f"{i}.png"))
    return root


def refuse_to_decode(path, image_size):
    raise AssertionError(f"decoded {path}: the cache should have been used")


def rewrite_cache(path, change):
    """Rewrite the cache file with change(arrays) applied, keeping its fingerprint and checksum."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def flip_bytes_in_the_images(path):
    raw = bytearray(open(path, "rb").read())
    start = raw.index(b"images.npy") + 200                     # inside the images member
    raw[start:start + 16] = bytes(255 - b for b in raw[start:start + 16])
    open(path, "wb").write(bytes(raw))


def smaller_images(arrays):
    arrays["images"] = arrays["images"][:, :4, :4].copy()
    arrays["checksum"] = np.array(cache.checksum(arrays))     # a consistent but wrong file


@pytest.mark.parametrize("damage", [
    flip_bytes_in_the_images,                                                # the zip's CRC fails
    lambda path: rewrite_cache(path, lambda a: a["images"].__setitem__(0, 255)),  # checksum fails
    lambda path: rewrite_cache(path, smaller_images),                        # wrong shape
    lambda path: rewrite_cache(path, lambda a: a.pop("checksum")),           # no checksum
    lambda path: open(path, "wb").write(open(path, "rb").read()[:300]),      # truncated
], ids=["flipped bytes", "changed pixels", "wrong shape", "no checksum", "truncated"])
def test_a_damaged_cache_is_detected_and_rebuilt(damage, tmp_path, monkeypatch):
    root, cache_dir = plain_folder(str(tmp_path / "images")), str(tmp_path / "cache")
    first = data.load_images(root, image_size=12, cache_dir=cache_dir)
    (name,) = os.listdir(cache_dir)
    damage(os.path.join(cache_dir, name))
    with pytest.warns(UserWarning, match="is damaged; decoding the images again"):
        second = data.load_images(root, image_size=12, cache_dir=cache_dir)
    np.testing.assert_array_equal(second.images, first.images)
    monkeypatch.setattr(loading, "read_image", refuse_to_decode)      # the rebuilt file is good
    np.testing.assert_array_equal(data.load_images(root, image_size=12, cache_dir=cache_dir).images,
                                  first.images)


def test_strict_refuses_an_unreadable_image_from_the_command_line(tmp_path, monkeypatch, run_main):
    import train_dcgan
    root = plain_folder(str(tmp_path / "images"), count=9, size=16)
    with open(os.path.join(root, "broken.png"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "run"
    code, _, err = run_main(train_dcgan.train, ["--out", out, "--data", root, "--strict",
                                                      *DCGAN, "--epochs", "1", "--steps-per-epoch",
                                                      "1"])
    assert code == 1 and "cannot read image" in err and "broken.png" in err, err
    assert experiment.flags.parser("x").parse_args([]).strict is False


# ---- files a killed run leaves behind ---------------------------------------------------------

def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "losses.png"
    path.write_bytes(b"old picture")
    with pytest.raises(OSError):
        with files.atomic_write(str(path)) as f:
            f.write(b"half a new pict")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"old picture" and os.listdir(tmp_path) == ["losses.png"]
    with files.atomic_write(str(path), "w") as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["losses.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask     # as open() makes it, not private


def test_temporaries_of_killed_writers_are_removed_when_the_run_starts_again(tmp_path):
    (tmp_path / "samples").mkdir()
    for name in (".checkpoint.npz.abc123.tmp", "samples/.epoch_002.png.x9.tmp", ".lock",
                 "notes.tmp", "checkpoint.npz"):
        (tmp_path / name).write_bytes(b"x")
    removed = files.remove_temporaries(str(tmp_path))
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == [
        ".checkpoint.npz.abc123.tmp", os.path.join("samples", ".epoch_002.png.x9.tmp")]
    assert sorted(os.listdir(tmp_path)) == [".lock", "checkpoint.npz", "notes.tmp", "samples"]


def make_run(out, resume=False):
    p = experiment.parser("test")
    run = experiment.start(p, "dcgan", ["--out", str(out)] + (["--resume"] if resume else []))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run


def test_resume_forgets_what_was_logged_after_the_checkpoint_and_a_half_line(tmp_path):
    run = make_run(tmp_path)                                     # line 1: start
    run.log("epoch", step=2)
    run.save({}, step=2)                                         # the checkpoint knows 2 lines
    run.log("reconstruction", step=2)                            # after the save, same step
    run.log("epoch", step=4)
    with open(tmp_path / experiment.METRICS, "a") as f:
        f.write('{"event": "epoch", "st')                        # killed in the middle of a line
    resumed = make_run(tmp_path, resume=True)
    with open(tmp_path / experiment.METRICS) as f:
        records = [json.loads(line) for line in f]
    assert [(r["event"], r.get("step")) for r in records] == [
        ("start", None), ("epoch", 2), ("resume", 2)]
    assert resumed.log_lines == 3


def test_checkpoints_from_before_the_line_count_keep_the_lines_up_to_their_step(tmp_path):
    run = make_run(tmp_path)
    run.log("epoch", step=2)
    run.save({}, step=2)
    run.log("epoch", step=4)
    saved = nn.load(str(tmp_path / "checkpoint.npz"))
    del saved["log_lines"], saved["version"]                    # as version 1 wrote it
    nn.save(saved, str(tmp_path / "checkpoint.npz"))
    make_run(tmp_path, resume=True)
    with open(tmp_path / experiment.METRICS) as f:
        steps = [json.loads(line).get("step") for line in f]
    assert steps == [None, 2, 2]                                 # start, epoch 2, resume


def test_a_released_lock_can_be_taken_by_another_process(tmp_path):
    lock.check_free(str(tmp_path / "new"))                      # no folder yet: nothing written
    assert not (tmp_path / "new").exists()
    lock.lock_folder(str(tmp_path / "a"))
    lock.release(str(tmp_path / "a"))
    holder = hold_lock(tmp_path / "a")                           # readline() returns: it holds it
    try:
        with pytest.raises(experiment.ExperimentError, match=f"PID {holder.pid}"):
            lock.check_free(str(tmp_path / "a"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock.check_free(str(tmp_path / "a"))
