"""The GPU path's plumbing, tested on the CPU where it can be: the CuPy version floor, the one
random generator per device behind Dropout. With `pytest --device gpu` the device-aware tests here
run on CuPy too."""
import sys
import types

import numpy as np
import pytest

import nn
import nn.functional as F


# ---- the CuPy floor ------------------------------------------------------------------------------

def fake_cupy(version, devices=1):
    """A stand-in for the cupy module: a version string and a CUDA runtime with `devices` GPUs."""
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices)
    return types.SimpleNamespace(__version__=version, cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("version", ["11.6.0", "10.0.0", "9.6.0rc1"])
def test_a_cupy_older_than_the_floor_is_refused_naming_its_version(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(version))
    reason = nn.backend.gpu_unavailable_reason()
    assert f"CuPy {version} is installed" in reason
    assert f"CuPy {nn.backend.CUPY_FLOOR} or newer" in reason and "pip install -U" in reason
    with pytest.raises(nn.DeviceError, match=f"CuPy {version}"):
        nn.backend.array_module_for("gpu")


@pytest.mark.parametrize("version", ["12.0.0", "13.3.0", "14.0.0a1"])
def test_cupy_from_the_floor_on_is_accepted(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(version))
    assert nn.backend.gpu_unavailable_reason() is None
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(version, devices=0))
    assert "no CUDA device" in nn.backend.gpu_unavailable_reason()


def test_the_training_scripts_stop_on_an_old_cupy_with_exit_code_2(monkeypatch, capsys, tmp_path):
    import experiment
    import train_dcgan
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy("11.2.0"))
    monkeypatch.setattr(sys, "argv", ["train_dcgan.py", "--device", "gpu", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        experiment.main(train_dcgan.train)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "CuPy 11.2.0 is installed" in err and "Traceback" not in err
