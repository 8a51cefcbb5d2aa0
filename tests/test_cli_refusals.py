"""Every bad flag is refused before anything is written: exit code 2, one line on stderr naming the
flag and what would work, no traceback, and no output folder.

The grid runs each script's entry point in this process (experiment.main, as `python script.py`
does, with sys.argv set): the same code path as the command line, in milliseconds. Every case
adds one bad value to tiny valid settings, so a value that slipped through would finish a tiny
run and fail the exit-code check instead of training for minutes. A few cases then run as real
subprocesses, to check the command line itself."""
import os
import subprocess
import sys

import pytest

import generate
import train_dcgan
import train_stylegan
import train_vqvae
from experiment import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {   # entry point, tiny valid settings
    "train_dcgan.py": (train_dcgan.train, ["--image-size", "16", "--ngf", "4", "--ndf", "4",
                                           "--nz", "8", "--batch-size", "8", "--samples", "4",
                                           "--epochs", "1", "--steps-per-epoch", "1"]),
    "train_vqvae.py": (train_vqvae.main, ["--image-size", "16", "--channels", "4",
                                          "--res-channels", "2", "--res-blocks", "1",
                                          "--codes", "8", "--code-dim", "2", "--batch-size", "8",
                                          "--epochs", "1", "--steps-per-epoch", "1",
                                          "--prior-epochs", "1", "--prior-channels", "2",
                                          "--prior-layers", "1", "--augment-copies", "0",
                                          "--samples", "2"]),
    "train_stylegan.py": (train_stylegan.train, ["--image-size", "16", "--batch-size", "8",
                                                 "--steps-per-epoch", "2", "--epochs", "1",
                                                 "--phase-images", "8", "--fade-images", "8",
                                                 "--fmap-base", "16", "--fmap-max", "4",
                                                 "--z-dim", "4", "--w-dim", "4",
                                                 "--mapping-layers", "1", "--samples", "4"]),
}
SHARED = [   # (flags, what the message must say), for every training script
    (["--image-size", "37"], "--image-size 37"),
    (["--image-size", "0"], "--image-size 0: use a"),      # power of two / at least 16
    (["--image-size", "-16"], "--image-size -16"),
    (["--image-size", "8"], "--image-size 8"),
    (["--batch-size", "0"], "--batch-size 0: use a whole number, at least 1"),
    (["--batch-size", "-8"], "--batch-size -8"),
    (["--batch-size", "1000"], "--batch-size 1000"),
    (["--epochs", "0"], "--epochs 0: use a whole number, at least 1"),
    (["--epochs", "-1"], "--epochs -1"),
    (["--steps-per-epoch", "-1"], "--steps-per-epoch -1: use a whole number, at least 0"),
    (["--seed", "-1"], "--seed -1: use a whole number, at least 0"),
    (["--split", "bogus"], "--split bogus: unknown split 'bogus'"),
    (["--subset", "AD"], "--subset AD: a class filter ('AD') needs the ADNI layout"),
    (["--data", "{tmp}/no-such-folder"], "no-such-folder does not exist"),
    (["--lr", "-1"], "--lr -1.0: use a number above 0"),
    (["--lr", "0"], "--lr 0.0: use a number above 0"),
    (["--lr", "nan"], "--lr nan: use a number above 0"),
    (["--resume", "--overwrite"], "give one of them"),
    (["--image-size", "abc"], "argument --image-size: invalid int value: 'abc'"),
    (["--batch-size", "1.5"], "argument --batch-size: invalid int value: '1.5'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--epoch", "3"], "unrecognized arguments: --epoch"),          # abbreviations are refused
]
HUGE = 10 ** 6
OWN = {   # each script's own flags
    "train_dcgan.py": [
        (["--nz", "0"], "--nz 0"), (["--ngf", "0"], "--ngf 0"), (["--ndf", "-1"], "--ndf -1"),
        (["--lr-d", "0"], "--lr-d 0.0"), (["--beta1", "1"], "--beta1 1.0"),
        (["--beta1", "-0.1"], "--beta1 -0.1"), (["--real-label", "1.5"], "--real-label 1.5"),
        (["--dropout", "1"], "--dropout 1.0"), (["--ema-half-life", "-1"], "--ema-half-life -1"),
        (["--samples", "1"], "--samples 1: use a whole number, at least 2"),
        (["--metrics-real", "0"], "--metrics-real 0"),
        (["--image-size", "65536"], "needs about"), (["--ngf", str(HUGE)], "training step needs"),
    ],
    "train_vqvae.py": [
        (["--codes", "0"], "--codes 0: use a whole number, at least 2"),
        (["--codes", "1"], "--codes 1"),
        (["--channels", "1"], "--channels 1"), (["--res-channels", "0"], "--res-channels 0"),
        (["--res-blocks", "-1"], "--res-blocks -1"), (["--downsamples", "0"], "--downsamples 0"),
        (["--downsamples", "4"], "--downsamples 4: 16x16 images allow at most 3"),
        (["--image-size", "18"], "--image-size 18: with --downsamples 2 use a multiple of 4"),
        (["--code-dim", "0"], "--code-dim 0"), (["--beta", "-1"], "--beta -1.0"),
        (["--prior-epochs", "0"], "--prior-epochs 0"),
        (["--prior-channels", "0"], "--prior-channels 0"),
        (["--prior-layers", "0"], "--prior-layers 0"), (["--prior-lr", "-1"], "--prior-lr -1.0"),
        (["--augment-copies", "-1"], "--augment-copies -1"), (["--samples", "0"], "--samples 0"),
        (["--temperature", "0"], "--temperature 0.0"),
        (["--prior-batch-size", "0"], "--prior-batch-size 0: use a whole number, at least 1"),
        (["--prior-levels", "-1"], "--prior-levels -1: use a whole number, at least 0"),
        (["--augment", "yes"], "unrecognized arguments: yes"),
        (["--batch-size", "107"], "--batch-size 107: the VQ-VAE trains on 106 of the 132 images"),
        (["--stage", "everything"], "argument --stage: invalid choice"),
        (["--codes", str(HUGE * 100)], "needs about"),
    ],
    "train_stylegan.py": [
        (["--batch-size", "6"], "--batch-size 6: use a multiple of 4"),
        (["--phase-images", "8,x"], "--phase-images 8,x: use whole numbers"),
        (["--phase-images", ""], "--phase-images : use whole numbers"),
        (["--phase-images", "0"], "--phase-images 0"),
        (["--image-size", "64", "--phase-images", "8,8"], "--image-size 64 needs 3 values"),
        (["--fade-images", "-1"], "--fade-images -1"), (["--z-dim", "0"], "--z-dim 0"),
        (["--w-dim", "0"], "--w-dim 0"), (["--mapping-layers", "0"], "--mapping-layers 0"),
        (["--fmap-base", "0"], "--fmap-base 0"), (["--fmap-max", "0"], "--fmap-max 0"),
        (["--gamma", "-1"], "--gamma -1.0"), (["--gp-weight", "-1"], "--gp-weight -1.0"),
        (["--drift", "-1"], "--drift -1.0"), (["--reg-every", "0"], "--reg-every 0"),
        (["--style-mixing", "1.5"], "--style-mixing 1.5"),
        (["--style-mixing", "nan"], "--style-mixing nan"), (["--gamma", "inf"], "--gamma inf"),
        (["--diffaugment", "colour"], "--diffaugment colour: use a comma list of color, "
                                      "translation, cutout"),
        (["--diffaugment", "cutout,cutout"], "--diffaugment cutout,cutout"),
        (["--gamma-scaling", "pixels"], "argument --gamma-scaling: invalid choice"),
        (["--g-widths", "64:16"], "--g-widths 64:16: use resolution=channels pairs"),
        (["--g-widths", "64=0"], "--g-widths 64=0: use resolution=channels pairs"),
        (["--gamma-scaling", "resolution"], "--gamma-scaling resolution: it scales R1's gamma, "
                                            "and only --loss ns-r1 has R1: add --loss ns-r1"),
        (["--ema-half-life", "0"], "--ema-half-life 0.0"), (["--samples", "1"], "--samples 1"),
        (["--metrics-real", "0"], "--metrics-real 0"), (["--loss", "hinge"], "invalid choice"),
        (["--compare-with", "{tmp}/missing.npz"], "missing.npz: no such file"),
        (["--phase-images", "800"], "--epochs 1: training would end at step 2, still at 8x8"),
        (["--fmap-base", str(HUGE * 100), "--fmap-max", str(HUGE)], "training step needs"),
    ],
}
GRID = [(script, flags, phrase) for script in SCRIPTS
        for flags, phrase in SHARED + OWN[script]]


@pytest.fixture
def refused(run_main, monkeypatch):
    """refused(entry, argv) -> (exit code, stderr) of the script's entry point run in this process
    (conftest.run_main), on a machine with 16 GiB available (so the memory cases do not depend
    on this one)."""
    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * 2 ** 30)

    def run(entry, argv):
        code, _, err = run_main(entry, argv)
        return code, err
    return run


def assert_one_clear_line(code, err, phrase):
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert phrase in err, err


@pytest.mark.parametrize("script, flags, phrase", GRID,
                         ids=[f"{s}:{' '.join(f)}" for s, f, _ in GRID])
def test_a_bad_flag_is_refused_before_anything_is_written(script, flags, phrase, tmp_path, refused):
    entry, tiny = SCRIPTS[script]
    out = tmp_path / "run"
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    code, err = refused(entry, ["--out", str(out), *tiny, *flags])
    assert_one_clear_line(code, err, phrase)
    assert not out.exists(), sorted(os.listdir(out))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_out_must_be_a_folder_for_runs(script, tmp_path, refused):
    entry, tiny = SCRIPTS[script]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, err = refused(entry, ["--out", str(a_file), *tiny])
    assert_one_clear_line(code, err, f"--out {a_file} is a file")
    assert a_file.read_text() == "mine"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.png").write_bytes(b"not a run")
    code, err = refused(entry, ["--out", str(folder), *tiny])
    assert_one_clear_line(code, err, "holds other files (holiday.png) and no run")
    assert os.listdir(folder) == ["holiday.png"]


def test_out_inside_the_data_folder_is_refused(tmp_path, refused):
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        Image.new("L", (16, 16), 10 * i).save(images / f"{i}.png")
    entry, tiny = SCRIPTS["train_dcgan.py"]
    code, err = refused(entry, ["--out", str(images / "run"), "--data", str(images), *tiny])
    assert_one_clear_line(code, err, "is inside the data folder")
    assert sorted(os.listdir(images)) == [f"{i}.png" for i in range(8)]


def test_slice_levels_need_a_known_position(tmp_path, refused):
    """--prior-levels on images whose file names hold no position: one line pointing at
    --prior-levels 0, before anything is written."""
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("L", (16, 16), 10 * i).save(images / f"{i}.png")
    entry, tiny = SCRIPTS["train_vqvae.py"]
    out = tmp_path / "run"
    code, err = refused(entry, ["--out", str(out), "--data", str(images), *tiny])
    assert_one_clear_line(code, err, "--prior-levels 8: cannot tell the slice level of 0.png")
    assert "use --prior-levels 0" in err and not out.exists()


GENERATE = [
    (["--n", "0"], "--n 0: use a whole number, at least 1"),
    (["--seed", "-1"], "--seed -1"),
    (["--truncation", "nan"], "--truncation nan"),
    (["--temperature", "0"], "--temperature 0.0: use a number above 0"),
    (["--level", "-1"], "--level -1: use a whole number, at least 0"),
    (["--n", "abc"], "argument --n: invalid int value"),
]


@pytest.mark.parametrize("flags, phrase", GENERATE)
def test_generate_refuses_bad_flags_before_reading_or_writing(flags, phrase, tmp_path, refused):
    out = tmp_path / "generated"
    code, err = refused(generate.generate, ["--checkpoint", str(tmp_path / "no.npz"),
                                            "--out", str(out), *flags])
    assert_one_clear_line(code, err, phrase)
    assert not out.exists()


def test_generate_refuses_an_out_that_is_a_file(tmp_path, refused):
    (tmp_path / "x").write_text("mine")
    code, err = refused(generate.generate, ["--checkpoint", "no.npz", "--out", str(tmp_path / "x")])
    assert_one_clear_line(code, err, "is a file")


# ---- the real command line ----------------------------------------------------------------------

@pytest.mark.parametrize("script, flags, phrase", [
    ("train_dcgan.py", ["--image-size", "37"], "--image-size 37: use a power of two"),
    ("train_vqvae.py", ["--codes", "0"], "--codes 0: use a whole number, at least 2"),
    ("train_stylegan.py", ["--lr", "-1"], "--lr -1.0: use a number above 0"),
    ("train_stylegan.py", ["--ima", "64"], "unrecognized arguments: --ima"),
    ("generate.py", ["--n", "0"], "--n 0"),
])
def test_the_command_line_exits_2_with_one_line(script, flags, phrase, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), "--out", str(out),
                             *(["--checkpoint", "no.npz"] if script == "generate.py" else []),
                             *flags], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_one_clear_line(result.returncode, result.stderr, phrase)
    assert result.stdout == "" and not out.exists()
