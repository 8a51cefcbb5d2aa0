"""The settings each model accepts (models/settings.py, check_settings in each model file), the
memory estimates against real measurements, and the memory check; in-process and fast."""
import argparse
import signal

import pytest

import experiment
from experiment import memory
from models import dcgan, settings, stylegan, vqvae


def namespace(**values):
    return argparse.Namespace(**values)


# ---- the rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, good, bad", [
    (settings.at_least(1), [1, 7], [0, -3, 1.5, True, "2"]),
    (settings.power_of_two(16), [16, 64, 1024], [8, 37, 48, 0, -16, 64.0]),
    (settings.above(0), [1e-9, 3, 2.5], [0, -1, float("nan"), float("inf"), None]),
    (settings.number_at_least(0), [0, 0.5, 7], [-0.1, float("nan"), float("inf")]),
    (settings.between(0, 1), [0, 0.5, 1], [-0.01, 1.01, float("nan")]),
    (settings.between(0, 1, high_included=False), [0, 0.99], [1, 1.5]),
    (settings.optional(settings.above(0)), [None, 0.1], [0, -1]),
])
def test_each_rule_accepts_the_good_values_and_says_what_works_for_the_bad(rule, good, bad):
    for value in good:
        assert rule(value) is None, value
    for value in bad:
        need = rule(value)
        assert isinstance(need, str) and need.startswith("use a"), (value, need)


def test_a_settings_error_names_the_flag_the_value_and_what_works():
    with pytest.raises(settings.SettingsError) as caught:
        settings.check({"image_size": 37, "ngf": 4}, {"ngf": settings.at_least(1),
                                                      "image_size": settings.power_of_two(16)})
    assert str(caught.value) == "--image-size 37: use a power of two, at least 16 (16, 32, 64, " \
                                "128, 256, ...)"
    assert caught.value.name == "image_size" and caught.value.value == 37
    settings.check({"ngf": 4}, {"ngf": settings.at_least(1),
                                "nz": settings.at_least(1)})      # nz not given: not checked


def test_whole_number_lists():
    assert settings.whole_numbers("16000,16000,12000") == [16000, 16000, 12000]
    assert settings.whole_numbers("24") == [24]
    for text in ("", "1,,2", "1,x", "1.5", "1,0", "-4"):
        assert settings.whole_numbers(text) is None, text


def test_existing_file(tmp_path):
    rule = settings.existing_file("give a checkpoint")
    (tmp_path / "a.npz").write_bytes(b"x")
    assert rule(str(tmp_path / "a.npz")) is None
    assert rule(str(tmp_path / "b.npz")) == "no such file; give a checkpoint"
    assert rule(str(tmp_path)) is not None                     # a folder is not a file


# ---- each model's settings: the scripts' defaults pass, each bad value names its flag ----------

def defaults(script):
    module = __import__(script)
    return module.flags().parse_args([])


@pytest.mark.parametrize("model, script", [(dcgan, "train_dcgan"), (vqvae, "train_vqvae"),
                                           (stylegan, "train_stylegan")])
def test_the_defaults_are_accepted(model, script):
    model.check_settings(defaults(script), images=132)


@pytest.mark.parametrize("model, script, changes, flag", [
    (dcgan, "train_dcgan", {"image_size": 48}, "--image-size 48"),
    (dcgan, "train_dcgan", {"image_size": 8}, "--image-size 8"),
    (dcgan, "train_dcgan", {"lr_d": -1.0}, "--lr-d -1.0"),
    (dcgan, "train_dcgan", {"dropout": 1.0}, "--dropout 1.0"),
    (vqvae, "train_vqvae", {"image_size": 38}, "--image-size 38: with --downsamples 2 use a "
                                               "multiple of 4"),
    (vqvae, "train_vqvae", {"image_size": 56, "downsamples": 4},
     "--image-size 56: with --downsamples 4 use a multiple of 16"),
    (vqvae, "train_vqvae", {"downsamples": 6}, "--downsamples 6: 64x64 images allow at most 5"),
    (vqvae, "train_vqvae", {"codes": 1}, "--codes 1"),
    (vqvae, "train_vqvae", {"batch_size": 107}, "--batch-size 107: the VQ-VAE trains on 106 of "
                                                "the 132 images"),
    (stylegan, "train_stylegan", {"batch_size": 18}, "--batch-size 18: use a multiple of 4"),
    (stylegan, "train_stylegan", {"phase_images": "100,x"}, "--phase-images 100,x: use whole"),
    (stylegan, "train_stylegan", {"phase_images": "100,100"}, "--image-size 64 needs 3 values"),
    (stylegan, "train_stylegan", {"phase_images": "100,0,100"}, "--phase-images 100,0,100"),
    (stylegan, "train_stylegan", {"epochs": 1, "steps_per_epoch": 10},
     "--epochs 1: training would end at step 10, still at 8x8"),
])
def test_bad_settings_are_refused_naming_the_flag(model, script, changes, flag):
    config = vars(defaults(script))
    config.update(changes)
    with pytest.raises(settings.SettingsError, match=flag.replace("(", r"\(")):
        model.check_settings(config, images=132)


def test_a_stylegan_run_that_ends_below_16x16_is_refused_from_the_number_of_images():
    config = dict(vars(defaults("train_stylegan")), steps_per_epoch=0, epochs=3)
    with pytest.raises(settings.SettingsError, match="still at 8x8"):
        stylegan.check_settings(config, images=132)            # 8 steps an epoch, 1000 at 8x8
    stylegan.check_settings(config, images=None)               # unknown: not refused
    stylegan.check_settings(dict(config, epochs=126), images=132)


# ---- parameter counts and memory estimates ---------------------------------------------------

TINY = {
    "dcgan": dict(image_size=32, nz=8, ngf=6, ndf=5, batch_size=8),
    "vqvae": dict(image_size=32, channels=12, res_channels=4, res_blocks=1, downsamples=2,
                  codes=24, code_dim=4, beta=0.25, ema=True, prior_channels=8, prior_layers=3,
                  batch_size=8),
    "vqvae_no_ema": dict(image_size=16, channels=6, res_channels=4, res_blocks=0, downsamples=1,
                         codes=5, code_dim=3, beta=0.25, ema=False, prior_channels=3,
                         prior_layers=1, batch_size=8),
    "stylegan": dict(image_size=32, z_dim=8, w_dim=6, mapping_layers=2, fmap_base=64,
                     fmap_max=16, batch_size=8),
}
MODELS = {"dcgan": dcgan, "vqvae": vqvae, "vqvae_no_ema": vqvae, "stylegan": stylegan}


@pytest.mark.parametrize("name", sorted(TINY))
def test_parameter_counts_match_the_built_models(name):
    nets = MODELS[name].build(TINY[name])
    stored = sum(array.size for net in nets for array in net.state_dict().values())
    assert MODELS[name].parameter_count(TINY[name]) == stored


@pytest.mark.parametrize("name", ["dcgan", "vqvae", "stylegan"])
def test_the_memory_estimate_is_close_to_a_measured_step(name, monkeypatch):
    """tracemalloc's peak over building the models and three training steps at the TINY
    settings (benchmarks/bench_memory.py; the factors were set at the scripts' defaults)."""
    monkeypatch.syspath_prepend("benchmarks")
    import bench_memory
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in TINY[name].items()
            if key not in ("ema", "beta")]
    peak, estimate = bench_memory.measure(name, argv)
    assert 0.8 * peak <= estimate <= 2.5 * peak, (peak, estimate)


def test_the_memory_estimate_grows_with_the_sizes():
    small = dcgan.memory_estimate(TINY["dcgan"])
    assert dcgan.memory_estimate(dict(TINY["dcgan"], batch_size=16)) > 1.8 * small
    assert dcgan.memory_estimate(dict(TINY["dcgan"], image_size=64)) > 3 * small
    assert vqvae.memory_estimate(dict(TINY["vqvae"], codes=4096)) > \
        10 * vqvae.memory_estimate(TINY["vqvae"])               # K values per code position
    capped = dict(TINY["stylegan"], fmap_base=1024, fmap_max=8)     # 8 channels everywhere
    assert stylegan.memory_estimate(dict(capped, image_size=64)) > \
        3 * stylegan.memory_estimate(capped)


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\n"
                       "MemAvailable:   2000000 kB\n")
    assert memory.available_bytes("cpu", str(meminfo)) == 2000000 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert memory.available_bytes("cpu", str(meminfo)) is None     # unknown: nothing refused
    assert memory.available_bytes("cpu", str(tmp_path / "missing")) is None


def test_a_step_that_cannot_fit_is_refused_with_the_estimate_and_the_memory_available(monkeypatch):
    config = namespace(**TINY["dcgan"])
    need = memory.check_memory(config, "dcgan", dcgan.memory_estimate, "cpu", images=100)
    assert need == dcgan.memory_estimate(TINY["dcgan"]) + memory.BASE_BYTES + 100 * 32 * 32
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    with pytest.raises(experiment.ExperimentError) as caught:
        memory.check_memory(config, "dcgan", dcgan.memory_estimate, "cpu", images=100)
    assert caught.value.code == 2
    text = str(caught.value)
    assert f"needs about {need / 2 ** 30:.1f} GiB" in text
    assert f"the machine has {(need - 1) / 2 ** 30:.1f} GiB available" in text
    assert "--skip-memory-check" in text
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    memory.check_memory(config, "dcgan", dcgan.memory_estimate, "cpu")     # unknown: allowed


def test_start_checks_the_memory_unless_told_to_skip_it(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2 ** 20)   # 10 MiB
    p = experiment.parser("test")
    p.add_argument("--ngf", type=int, default=4)
    out = tmp_path / "run"
    with pytest.raises(experiment.ExperimentError, match="needs about"):
        experiment.start(p, "dcgan", ["--out", str(out)], memory=lambda c: 2 ** 30)
    assert not out.exists()
    run = experiment.start(p, "dcgan", ["--out", str(out), "--skip-memory-check"],
                           memory=lambda c: 2 ** 30)
    assert run.config.skip_memory_check and out.exists()
    signal.signal(signal.SIGINT, signal.default_int_handler)
