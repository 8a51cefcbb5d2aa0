"""Shared pytest set-up.

`python -m pytest --device gpu` runs the device-aware tests on CuPy; without CuPy or a CUDA
device those tests are skipped (not failed). The default is the CPU (NumPy).
"""
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


def tensor(array, device="cpu", requires_grad=False):
    """A float64 Tensor on `device` (for gradient checks)."""
    return nn.Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad).to(device)
