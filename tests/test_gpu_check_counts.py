"""benchmarks/gpu_check.py's launches and host reads per step (count_steps), and its --standin
mode: the dry run's GPU path on the CuPy stand-in, every launch counted (CI runs it)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from test_gpu_check import PARTS, SCRIPT, load_gpu_check


def fake_step(xp, reads):
    """A step that launches 3 kernels and reads `reads` values back to the host."""
    def step(i):
        a = xp.ones(4, dtype=np.float32) * 2          # fill, multiply
        total = a.sum()                                # a reduction
        for _ in range(reads):
            float(total)
        return {"loss": total}
    return step


def test_on_the_standin_every_launch_and_host_read_is_counted(cupy_standin):
    gpu_check = load_gpu_check()
    found = gpu_check.count_steps(fake_step(cupy_standin, reads=1), 0, 4, "gpu")
    assert (found["launches_per_step"], found["host_reads_per_step"]) == (3, 1), found
    assert "by the CuPy stand-in" in found["counted"]


@pytest.mark.parametrize("reads, expected", [(0, 0), (2, "at least 1")])
def test_on_a_real_cupy_only_host_reads_are_checked(cupy_standin, monkeypatch, reads, expected):
    """A real CuPy has no launch counter: the steps run under cupyx.allow_synchronize(False),
    which raises on the first host read. (The stand-in, told it is not one, raises as CuPy.)"""
    monkeypatch.setattr(cupy_standin, "__standin__", False)
    gpu_check = load_gpu_check()
    found = gpu_check.count_steps(fake_step(cupy_standin, reads), 0, 2, "gpu")
    assert found["launches_per_step"] is None and found["host_reads_per_step"] == expected, found
    assert "allow_synchronize" in found["counted"]


def test_numpy_launches_nothing_and_says_so():
    found = load_gpu_check().count_steps(fake_step(np, reads=1), 0, 2, "cpu")
    assert found == {"counted": "nothing: NumPy on the CPU launches no kernels"}


def test_the_standin_only_with_a_dry_run(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--standin", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("gpu_check: --standin needs")


@pytest.mark.slow
def test_the_dry_run_on_the_standin_runs_the_gpu_path_and_counts_every_step(tmp_path, device):
    if device == "gpu":
        pytest.skip("this session runs the GPU path itself")
    result = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--standin", "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.load(open(tmp_path / "gpu_check.json"))
    assert report["standin"] and report["machine"]["device"] == "gpu"
    assert "stand-in" in report["machine"]["cupy"]
    assert [part["name"] for part in report["parts"]] == PARTS
    assert report["parts"][0]["summary"]["passed"] >= 3               # pytest --device gpu
    for model in ("dcgan", "vqvae", "stylegan"):
        for size in ("16", "32"):
            counts = report["per_step"][model][size]
            assert counts["launches"] > 100 and counts["host_reads"] == 0, (model, size, counts)
            assert report["scripts"][model][size]["status"] == "passed"
    assert "launches, 0 host reads)" in result.stdout
