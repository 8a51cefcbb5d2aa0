"""benchmarks/gpu_check.py, the one command for a GPU machine: its --dry-run (the same parts on the
CPU with NumPy, tiny) writes every figure to one JSON file; the time budget skips what would not
fit and says so."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
PARTS = ["tests (not slow)", "speed dcgan", "speed vqvae", "speed stylegan", "pytorch",
         "train_dcgan.py 16x16", "train_vqvae.py 16x16", "train_stylegan.py 16x16",
         "train_dcgan.py 32x32", "train_vqvae.py 32x32", "train_stylegan.py 32x32", "tests (slow)"]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_the_dry_run_runs_every_part_and_writes_every_figure(tmp_path, device):
    if device == "gpu":
        pytest.skip("the dry run is the CPU's stand-in for gpu_check itself, which is running")
    result = check("--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.load(open(tmp_path / "gpu_check.json"))
    assert report["dry_run"] and report["machine"]["device"] == "cpu"
    assert report["machine"]["numpy"] and "cupy_error" in report["machine"]
    assert [part["name"] for part in report["parts"]] == PARTS
    statuses = {part["name"]: part["status"] for part in report["parts"]}
    assert statuses.pop("tests (slow)") == "no tests"          # the dry run selects no slow test
    expected = "passed" if report["machine"]["torch"] else "optional, skipped"
    assert statuses.pop("pytorch") == expected                 # PyTorch is an optional extra
    assert set(statuses.values()) == {"passed"}, statuses
    assert report["parts"][0]["summary"]["passed"] >= 3
    for model in ("dcgan", "vqvae", "stylegan"):
        assert set(report["seconds_per_image"][model]) == {"16", "32"}
        assert all(0 < s < 10 for s in report["seconds_per_image"][model].values())
        for size in ("16", "32"):
            run = report["scripts"][model][size]
            assert run["status"] == "passed" and run["checkpoint"] and run["steps"] > 0, run
    assert report["scripts"]["stylegan"]["32"]["log_seconds_per_image"].keys() == {"8", "16", "32"}
    assert len(report["speed"]) == 6 and report["speed"][0]["batch"] == 4
    torch = report["pytorch"]
    if report["machine"]["torch"]:
        assert torch["status"] == "measured" and torch["ratio"] > 0 and torch["torch_ms"] > 0
    else:
        assert torch["status"] == "skipped" and "not installed" in torch["reason"]
    assert report["elapsed_s"] < report["budget_s"]
    assert "seconds per training image" in result.stdout and "gpu_check.json" in result.stdout
    for part in report["parts"]:
        if "log" in part:
            assert os.path.exists(part["log"])


def test_a_part_that_would_not_fit_in_the_budget_is_skipped_and_says_so(tmp_path):
    result = check("--dry-run", "--out", str(tmp_path), "--budget", "0.5", "--json",
                   str(tmp_path / "elsewhere.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.load(open(tmp_path / "elsewhere.json"))
    assert [part["name"] for part in report["parts"]] == PARTS
    assert {part["status"] for part in report["parts"]} == {"skipped"}
    assert "would not fit" in report["parts"][0]["reason"]
    assert "tests (not slow): skipped, would not fit" in result.stdout


def test_a_bad_budget_is_one_line_and_exit_code_2(tmp_path):
    result = check("--budget", "-3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_check: --budget must be a positive number of seconds"


def test_the_budget_keeps_time_for_the_parts_after():
    gpu_check = load_gpu_check()
    now = [100.0]
    budget = gpu_check.Budget(60, clock=lambda: now[0])
    assert budget.timeout(cap=30, minimum=10) == 30                 # the cap
    assert budget.timeout(cap=100, minimum=10, reserve=20) == 40    # 60 left, 20 kept
    now[0] += 45                                                    # 15 s left
    assert budget.timeout(cap=30, minimum=10) == 15
    assert budget.timeout(cap=30, minimum=10, reserve=10) is None   # 5 s would not do
    assert budget.left() == 15 and budget.elapsed() == 45


def test_pytest_closing_lines_are_read():
    gpu_check = load_gpu_check()
    text = "....F.s\n=== 1 failed, 410 passed, 3 skipped, 12 deselected, 2 errors in 95.21s ==="
    assert gpu_check.pytest_summary(text) == {"failed": 1, "passed": 410, "skipped": 3,
                                              "deselected": 12, "error": 2}
    assert gpu_check.status_of(None) == "timeout" and gpu_check.status_of(0) == "passed"
    assert gpu_check.status_of(0, passed=False) == "failed" and gpu_check.status_of(1) == "failed"
