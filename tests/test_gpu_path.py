"""The GPU path's plumbing, tested on the CPU where it can be: the CuPy version floor, the one
random generator per device behind Dropout, and the number of device-to-host reads per training
step (counted with a recording wrapper). With `pytest --device gpu` the device-aware tests here run
on CuPy too, and there CuPy's synchronisation detector also catches any read that is not counted."""
import contextlib
import sys
import types
import warnings

import numpy as np
import pytest

import data
import experiment
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


# ---- at most one device-to-host transfer per logged step ------------------------------------------

class HostReads:
    """A recording wrapper around the ways our code reads device values on the host:
    nn.backend.to_numpy (Run.read uses it, once per read) and Tensor.numpy / Tensor.item (which
    go through nn.tensor's to_numpy). On the GPU, `strict()` also turns on CuPy's
    synchronisation detector (cupyx.allow_synchronize(False), when this CuPy has it): any other
    wait for the GPU (.item(), float(), int() or bool() of a CuPy array, cupy.bincount, ...)
    raises cupyx.DeviceSynchronized; only the counted reads may wait."""

    def __init__(self, monkeypatch, device):
        self.count, self.detector = 0, None
        if device == "gpu":
            import cupyx
            self.detector = getattr(cupyx, "allow_synchronize", None)
        to_numpy = nn.backend.to_numpy

        def counted(array):
            self.count += 1
            with self.allowed(True):
                return to_numpy(array)
        monkeypatch.setattr(nn.backend, "to_numpy", counted)
        monkeypatch.setattr(nn.tensor, "to_numpy", counted)

    @contextlib.contextmanager
    def allowed(self, allow):
        if not self.detector:
            yield
            return
        with warnings.catch_warnings():       # CuPy warns that the detector is deprecated
            warnings.filterwarnings("ignore", message="cupyx.allow_synchronize will be removed")
            with self.detector(allow):
                yield

    def strict(self):
        return self.allowed(False)


def count_reads(tmp_path, monkeypatch, device, one_step, steps=12, read_every=5):
    """Run `steps` calls of one_step(step) -> values through a Run that reads every `read_every`
    steps; return (host reads counted, the Run)."""
    run = experiment.Run(experiment.parser("test", out=str(tmp_path)).parse_args([]), "test", device)
    run.read_every = read_every
    run.begin_epoch(0, 0, steps, steps)
    reads = HostReads(monkeypatch, device)
    with reads.strict():
        for step in range(steps):
            values = one_step(step)
            for name, value in values.items():        # nothing was turned into a Python number
                assert hasattr(value, "dtype"), name
                if device == "gpu":
                    assert nn.backend.is_cupy_array(value), name
            run.record(step + 1, **values)
    run.end_epoch()
    return reads.count, run


READS = -(-12 // 5)       # 12 steps read every 5 steps: after steps 5 and 10, and at the epoch's end


def test_a_dcgan_step_is_read_once_per_read(tmp_path, monkeypatch, device):
    import train_dcgan
    from models import dcgan
    nn.manual_seed(0)
    G = dcgan.init_weights(dcgan.Generator(16, 8, 4))
    D = dcgan.init_weights(dcgan.Discriminator(16, 4, dropout=0.2))
    G.to(device)
    D.to(device)
    opt_g, opt_d = nn.optim.Adam(G.parameters(), lr=2e-4), nn.optim.Adam(D.parameters(), lr=2e-4)
    loader = data.BatchLoader(np.zeros((16, 16, 16), np.uint8) + 50, 4, seed=0, device=device)
    noise = np.random.default_rng(1)

    def step(i):
        z = nn.Tensor(noise.standard_normal((4, 8), dtype=np.float32)).to(device)
        return train_dcgan.train_step(G, D, opt_g, opt_d, nn.Tensor(loader.batch(0, i % 4)), z, 0.9)
    reads, run = count_reads(tmp_path, monkeypatch, device, step)
    assert reads == READS
    assert len(run.history["loss_d"]) == 12 and all(np.isfinite(run.history["d_real"]))


def test_a_vqvae_step_and_a_prior_step_are_read_once_per_read(tmp_path, monkeypatch, device):
    import train_vqvae
    from models import vqvae
    from models.pixelcnn import GatedPixelCNN, bits_per_code
    xp = nn.backend.array_module_for(device)
    nn.manual_seed(0)
    model = vqvae.VQVAE(channels=8, res_channels=4, n_res_blocks=1, downsamples=2, num_codes=16,
                        code_dim=4)
    prior = GatedPixelCNN(16, 4, 2, map_size=(4, 4))
    model.to(device)
    prior.to(device)
    optimizer = nn.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loader = data.BatchLoader(np.random.default_rng(0).integers(0, 255, (16, 16, 16), np.uint8),
                              4, seed=0, device=device)
    restarts, used = np.random.default_rng(1), xp.zeros(16, np.int64)

    def step(i):
        nonlocal used
        values, codes = train_vqvae.vqvae_step(model, optimizer, nn.Tensor(loader.batch(0, i % 4)),
                                               restarts)
        used = used + vqvae.code_counts(codes, 16)
        return values
    reads, run = count_reads(tmp_path / "vqvae", monkeypatch, device, step)
    assert reads == READS and len(run.history["restarts"]) == 12
    assert run.history["restarts"][0] > 0          # usage starts at the threshold: restarts happen
    assert int(used.sum()) == 12 * 4 * 4 * 4       # every code of every step counted, on the device

    prior_optimizer = nn.optim.Adam(prior.parameters(), lr=1e-3)
    codes = np.random.default_rng(2).integers(0, 16, (12, 4, 4, 4))

    def prior_step(i):
        loss = prior.loss(xp.asarray(codes[i]))
        prior_optimizer.zero_grad()
        loss.backward()
        prior_optimizer.step()
        return {"nll_bits": bits_per_code(loss.data)}
    reads, run = count_reads(tmp_path / "prior", monkeypatch, device, prior_step)
    assert reads == READS and all(np.isfinite(run.history["nll_bits"]))


@pytest.mark.parametrize("loss", ["ns-r1", "wgan-gp"])
def test_a_stylegan_step_is_read_once_per_read(tmp_path, monkeypatch, device, loss):
    import settings.stylegan
    import train_stylegan
    from models import stylegan
    cfg = settings.stylegan.flags("").parse_args([
        "--image-size", "16", "--z-dim", "8", "--w-dim", "8", "--mapping-layers", "2",
        "--fmap-base", "32", "--fmap-max", "8", "--batch-size", "4", "--loss", loss,
        "--reg-every", "2"])
    G, D = settings.stylegan.build(cfg, seed=0)
    G.to(device)
    D.to(device)
    gan = train_stylegan.make_gan(G, D, cfg, np.random.default_rng(1), np.random.default_rng(2))
    train_stylegan.start_phase(gan, {}, 16, cfg)
    loader = data.BatchLoader(np.random.default_rng(0).integers(0, 255, (8, 16, 16), np.uint8),
                              4, seed=0, device=device)
    last_penalty = 0.0

    def step(i):
        nonlocal last_penalty
        real = stylegan.fade_real_images(loader.batch(0, i % 2), 16, 0.5)
        log = train_stylegan.train_step(gan, real, 16, 0.5, i)
        last_penalty = log.setdefault("penalty", last_penalty)
        return log
    step(0)                                                  # the first penalty: now an array
    reads, run = count_reads(tmp_path, monkeypatch, device, lambda i: step(i + 1))
    assert reads == READS
    assert {"d_loss", "g_loss", "penalty", "d_real", "d_fake"} <= set(run.history)
