"""Shared pytest set-up.

`python -m pytest --device gpu` runs the device-aware tests on CuPy; without CuPy or a CUDA
device those tests are skipped (not failed). The default is the CPU (NumPy).
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "gpu"),
                     help="run the device-aware tests on NumPy (cpu) or CuPy (gpu)")


@pytest.fixture(scope="session")
def device(request):
    """The device under test: "cpu", or "gpu" when --device gpu is given and CuPy works (one
    value for the whole session, so module-scoped fixtures such as a shared run can use it)."""
    name = request.config.getoption("--device")
    if name == "gpu":
        reason = nn.backend.gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    return name


@pytest.fixture
def rng():
    return np.random.default_rng(0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, check=True):
    """`python <script> args` from the repository root, as a user runs it (a real subprocess);
    with check=True a non-zero exit fails the test with the script's output."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def tensor(array, device="cpu", requires_grad=False):
    """A float64 Tensor on `device` (for gradient checks)."""
    return nn.Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad).to(device)


@pytest.fixture
def run_main(monkeypatch, capsys):
    """run_main(entry, argv) -> (exit code, stdout, stderr): a script's entry point (e.g.
    train_dcgan.train) run as `python script.py argv` runs it, through experiment.main, but in
    this process (milliseconds instead of a new interpreter)."""
    import experiment

    def run(entry, argv):
        monkeypatch.setattr(sys, "argv", ["script.py", *map(str, argv)])
        previous = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit) as caught:
                experiment.main(entry)
                sys.exit(0)
        finally:
            signal.signal(signal.SIGINT, previous)        # a run installs its Ctrl-C handler
        captured = capsys.readouterr()
        return caught.value.code, captured.out, captured.err
    return run
