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


# ---- Dropout: one random generator per device, its state saved and restored ------------------------

class FakeCurandGenerator:
    """Records how a cupy.random.RandomState is used: reseeded, then asked for uniform values."""
    made = 0

    def __init__(self, method):
        FakeCurandGenerator.made += 1
        self.method, self.seeds = method, []

    def seed(self, seed):
        self.seeds.append(seed)

    def random_sample(self, shape, dtype):
        return np.random.default_rng(int(self.seeds[-1])).random(shape, dtype=dtype)


def fake_cupy_module():
    """Just what F._uniform uses of cupy: the device number, curand's Philox, RandomState."""
    curand = types.SimpleNamespace(CURAND_RNG_PSEUDO_PHILOX4_32_10="philox")
    return types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_id=lambda: 0, curand=curand),
                                 random=types.SimpleNamespace(RandomState=FakeCurandGenerator))


def test_gpu_masks_come_from_one_generator_reseeded_from_the_saved_host_state(monkeypatch):
    monkeypatch.setattr(F, "_gpu_generators", {})
    monkeypatch.setattr(FakeCurandGenerator, "made", 0)
    cupy = fake_cupy_module()
    nn.manual_seed(4)
    saved = nn.get_rng_state()
    first = [F._uniform((3, 5), np.float32, cupy) for _ in range(4)]
    assert FakeCurandGenerator.made == 1                   # one generator, not one per call
    generator = F._gpu_generators[0]
    assert generator.method == "philox" and len(generator.seeds) == 4
    assert all(isinstance(seed, np.uint64) for seed in generator.seeds)
    assert len({int(seed) for seed in generator.seeds}) == 4          # a new seed for every mask
    nn.manual_seed(99)
    nn.set_rng_state(saved)                                 # what a resumed run does
    again = [F._uniform((3, 5), np.float32, cupy) for _ in range(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert FakeCurandGenerator.made == 1
    F._uniform((2,), np.float32, cupy, rng=7)                          # an int seed: used as it is
    assert generator.seeds[-1] == 7


def test_cpu_masks_come_from_the_shared_generator_itself():
    nn.manual_seed(3)
    expected = np.random.default_rng(3).random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(F._uniform((4, 6), np.float32, np), expected)


def test_dropout_masks_resume_exactly_on_the_device(device):
    x = nn.Tensor(np.ones((64, 64), np.float32)).to(device)
    layer = nn.Dropout(0.5)
    nn.manual_seed(1)
    layer(x)
    saved = nn.get_rng_state()
    expected = [layer(x).numpy() for _ in range(3)]
    nn.manual_seed(0)
    nn.set_rng_state(saved)
    for mask in expected:
        np.testing.assert_array_equal(layer(x).numpy(), mask)
    assert not np.array_equal(expected[0], expected[1])
    if device == "gpu":
        assert len(F._gpu_generators) == 1                  # one generator for every call
