"""Data-parallel training over MPI (experiment/distributed.py).

Without MPI (every environment): a process's share of a batch and of its random draws are rows of
the one-process batch, and a plain run never imports mpi4py. With mpi4py and mpiexec installed
(requirements-distributed.txt; these tests skip otherwise): the pieces checked on 2 processes
(tests/distributed_checks.py); each script's weights after 20 steps on 2 processes with
--sync-batchnorm equal those of 1 process at the same global batch, to float32 tolerance (and
without it DCGAN's differ: per-process batch norm is another experiment); a refusal said once;
a process killed mid-run stops the other, and the last checkpoint resumes on 2 processes to the
end of the uninterrupted run; the GPU path through the host, on the CuPy stand-in.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import data
import experiment
from experiment import distributed

import test_crash_safety as crash
from conftest import ROOT, child_env

MPIEXEC = (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
           or shutil.which("mpiexec"))


def mpi_runs():
    """mpi4py and an mpiexec that really starts 2 processes of this Python (a machine may have
    an mpiexec of another MPI than the one mpi4py was built with: then it cannot)."""
    if importlib.util.find_spec("mpi4py") is None or MPIEXEC is None:
        return False
    probe = [MPIEXEC, "-n", "2", sys.executable, "-c",
             "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


HAVE_MPI = mpi_runs()
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="no working mpi4py + mpiexec "
                               "(pip install -r requirements-distributed.txt)")
ENV = {"OPENBLAS_NUM_THREADS": "1"}

NETWORKS = {"dcgan": ("generator", "discriminator"), "vqvae": ("vqvae",), "prior": ("prior",),
            "stylegan": ("generator", "discriminator")}


def changed(flags, **values):
    """`flags` with some values replaced (steps_per_epoch=3: --steps-per-epoch 3), or added."""
    flags = list(flags)
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if flag in flags:
            flags[flags.index(flag) + 1] = str(value)
        else:
            flags += [flag, str(value)]
    return flags


# the tiny runs of test_crash_safety.py, 20 steps long
DCGAN = changed(crash.DCGAN, steps_per_epoch=10, epochs=2)
VQVAE = changed(crash.VQVAE, steps_per_epoch=10, epochs=2) + ["--augment"]
STYLEGAN = changed(crash.STYLEGAN, steps_per_epoch=5, epochs=2, phase_images=40)
# (10 steps: a tiny GAN amplifies the rounding of a different summation order; over 20 steps with
# a fade-in at step 10 two exact-arithmetic-equal runs drifted 1e-7 -> 1e-5 from step 14 on)


# ---- without MPI: the share of a batch and of its draws ------------------------------------------

def test_each_share_holds_its_rows_of_the_one_process_batch():
    """BatchLoader(share=(r, N)): rows r, r + N, ... of the one-process batch, augmentation too."""
    images = (np.random.default_rng(0).random((24, 16, 16)) * 255).astype(np.uint8)
    loader = data.BatchLoader(images, batch_size=8, seed=3)
    whole = loader.batch(2, 1)
    for rank in range(4):
        share = loader.batch(2, 1, share=(rank, 4))
        np.testing.assert_allclose(share, whole[rank::4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(loader.batch(2, 1, share=(1, 4)), whole[:2], atol=1e-3)


def test_dealt_draws_are_rows_of_the_global_draws_and_keep_the_generator_in_step():
    whole = np.random.default_rng(7)
    draws = [whole.standard_normal((6, 2)), whole.uniform(), whole.integers(0, 9, size=6),
             whole.uniform(size=(6, 1, 1)), whole.integers(1, 6), whole.random(6)]
    for rank in range(3):
        dealt = distributed.Dealing(np.random.default_rng(7), (rank, 3))
        mine = [dealt.standard_normal((2, 2)), dealt.uniform(), dealt.integers(0, 9, size=2),
                dealt.uniform(size=(2, 1, 1)), dealt.integers(1, 6), dealt.random(2)]
        for one, got in zip(draws, mine):
            np.testing.assert_array_equal(got, one if np.ndim(one) == 0 else one[rank::3])
        assert dealt.bit_generator.state == whole.bit_generator.state
        assert experiment.rng_state(dealt) == experiment.rng_state(whole)   # what a checkpoint saves


def test_one_process_is_left_alone():
    """Without an MPI launcher's variables nothing is wrapped and mpi4py is never imported."""
    clean = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHERS}
    code = ("import sys, numpy as np, experiment, nn; from experiment import distributed as d; "
            "d.connect(); g = np.random.default_rng(0); o = nn.optim.SGD([nn.Parameter(np.ones(1))], lr=1); "
            "print(d.size, d.dealing(g) is g, d.averaging(o) is o, 'mpi4py' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, text=True,
                            capture_output=True, timeout=120)
    assert result.stdout.split() == ["1", "True", "True", "False"], result.stderr


def test_a_batch_that_does_not_split_is_refused_in_one_line(run_main, monkeypatch, tmp_path):
    """What two processes say (rank 0 alone prints it), checked here with size set to 2."""
    import train_dcgan
    monkeypatch.setattr(distributed, "size", 2)
    code, out, err = run_main(train_dcgan.train, ["--out", tmp_path / "run", "--batch-size", "7"])
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --batch-size 7: it is the global batch, split over 2 processes (mpiexec -n 2); "
        "use a multiple of 2; the default is 32"]
    assert not (tmp_path / "run").exists()


# ---- with MPI: 2 processes ----------------------------------------------------------------------

def mpiexec(processes, *args, standin=False, extra_env=None):
    """`mpiexec -n processes python args` from the repository root (a hang fails after 5 min)."""
    return subprocess.run([MPIEXEC, "-n", str(processes), sys.executable, *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=child_env(standin, **ENV, **(extra_env or {})))


def train(processes, script, out, flags, standin=False):
    result = mpiexec(processes, script, "--out", out, *flags, standin=standin)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def networks(out, names):
    checkpoint = experiment.load_checkpoint(os.path.join(out, "checkpoint.npz"))
    return {f"{name}.{key}": value for name in names for key, value in checkpoint[name].items()}


def assert_same_weights(one, two, names, tolerance=1e-4, floor=2e-6):
    """Every parameter and buffer within `tolerance` times the largest value of its array, plus
    `floor` (float32 sums in another order: the shares' gradients are added, not the images';
    over 20 Adam steps the weights measured here differ by at most ~1e-6)."""
    a, b = networks(one, names), networks(two, names)
    assert a.keys() == b.keys()
    for key in a:
        difference = float(np.abs(a[key] - b[key]).max())
        assert difference <= tolerance * float(np.abs(a[key]).max()) + floor, (key, difference)


@needs_mpi
def test_the_pieces_on_two_processes():
    result = mpiexec(2, "tests/distributed_checks.py")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("script", ["dcgan", "vqvae", "prior", "stylegan"])
def test_two_processes_end_with_the_weights_of_one(script, tmp_path):
    """20 steps at a global batch of 8: 1 process, then 2 of 4 images each (--sync-batchnorm);
    the prior continues the same VQ-VAE (10 steps) in both folders."""
    one, two = tmp_path / "one", tmp_path / "two"
    if script == "prior":
        train(1, "train_vqvae.py", one, changed(VQVAE, stage="vqvae", epochs=1))
        shutil.copytree(one, two)
        flags, file = ["--stage", "prior"], "train_vqvae.py"     # 2 epochs of 10 steps
    else:
        flags = {"dcgan": DCGAN, "vqvae": VQVAE + ["--stage", "vqvae"], "stylegan": STYLEGAN}[script]
        flags, file = flags + ["--sync-batchnorm"], f"train_{script.split('_')[0]}.py"
    train(1, file, one, flags)
    train(2, file, two, flags)
    assert_same_weights(one, two, NETWORKS[script])
    log = [json.loads(line) for line in open(two / "metrics.jsonl")]
    assert [r.get("processes") for r in log if r["event"] in ("start", "resume")][-1] == 2


@needs_mpi
@pytest.mark.slow
def test_stylegan_with_diffaugment_logs_the_losses_of_one_process(tmp_path):
    """DiffAugment's draws are dealt too. With it this tiny StyleGAN is chaotic: two one-process
    runs whose --lr differ by 5e-7 (relative) end 20 steps apart by 1.6e-3 in their weights
    (measured; 1.2e-7 without DiffAugment), so the first 8 of its 10 steps (8x8, then into the
    fade to 16x16) are compared here, by every logged loss, penalty and score. (With the skip
    generator and the tanh, the defaults since issue 21, step 10's d_fake differed by 2.4e-5.)"""
    flags = changed(STYLEGAN, diffaugment="color,translation,cutout")    # 10 steps, as above
    train(1, "train_stylegan.py", tmp_path / "one", flags)
    train(2, "train_stylegan.py", tmp_path / "two", flags)
    histories = [experiment.load_checkpoint(os.path.join(tmp_path / run, "checkpoint.npz"))
                 ["history"] for run in ("one", "two")]
    assert len(histories[0]["step"]) == 10
    for name, values in histories[0].items():
        np.testing.assert_allclose(np.asarray(histories[1][name])[:8], np.asarray(values)[:8],
                                   rtol=1e-4, atol=1e-5, err_msg=name)


@needs_mpi
@pytest.mark.slow
def test_per_process_batch_norm_is_another_experiment(tmp_path):
    """The control: without --sync-batchnorm each process normalises its own 4 images, and the
    weights part from one process's (so the test above can tell)."""
    train(1, "train_dcgan.py", tmp_path / "one", DCGAN)
    train(2, "train_dcgan.py", tmp_path / "two", DCGAN)
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "one", tmp_path / "two", NETWORKS["dcgan"])


@needs_mpi
def test_a_refusal_is_said_once_and_nothing_is_written(tmp_path):
    result = mpiexec(2, "train_dcgan.py", "--out", tmp_path / "run", "--batch-size", "7")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --batch-size 7: it is the global batch, split over 2 processes (mpiexec -n 2); "
        "use a multiple of 2; the default is 32"]
    assert not (tmp_path / "run").exists()


@needs_mpi
@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_the_run_resumes(tmp_path):
    """Rank 1 is killed (SIGKILL) after step 8 of 12; mpiexec stops rank 0 and says so; the
    checkpoint of step 6 is intact, and --resume on 2 processes ends where an uninterrupted
    one-process run ends."""
    flags = changed(DCGAN, steps_per_epoch=3, epochs=4) + ["--sync-batchnorm"]
    out = tmp_path / "killed"
    result = mpiexec(2, "tests/kill_at.py", "step", "8", "train_dcgan.py", "--out", out, *flags,
                     extra_env={"KILL_RANK": "1"})
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Killed" in said, said
    assert "Traceback" not in said
    assert experiment.load_checkpoint(os.path.join(out, "checkpoint.npz"))["step"] == 6
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    train(2, "train_dcgan.py", out, ["--resume"])
    train(1, "train_dcgan.py", tmp_path / "whole", flags)
    assert_same_weights(tmp_path / "whole", out, NETWORKS["dcgan"])
    steps = experiment.load_checkpoint(os.path.join(out, "checkpoint.npz"))["history"]["step"]
    assert list(steps) == list(range(1, 13))


@needs_mpi
@pytest.mark.slow
def test_the_gpu_path_through_the_host_on_the_cupy_standin(tmp_path):
    """CuPy arrays (the stand-in's) go to MPI through the host, and the log says so; 2 processes
    end with the weights of 1 on the same device."""
    result = mpiexec(2, "tests/distributed_checks.py", "--device", "gpu", standin=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    flags = changed(DCGAN, steps_per_epoch=5, device="gpu") + ["--sync-batchnorm"]
    train(1, "train_dcgan.py", tmp_path / "one", flags, standin=True)
    train(2, "train_dcgan.py", tmp_path / "two", flags, standin=True)
    assert_same_weights(tmp_path / "one", tmp_path / "two", NETWORKS["dcgan"])
    start = json.loads(open(tmp_path / "two" / "metrics.jsonl").readline())
    assert "through the host (MPI is not CUDA-aware)" in start["data_parallel"]
