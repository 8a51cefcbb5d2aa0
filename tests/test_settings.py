"""The settings each model accepts (settings/: every flag declared once with its rule, and each
model's `check` of the rules that tie settings together), the memory estimates against real
measurements, and the memory check; in-process and fast."""
import argparse
import signal

import pytest

import experiment
import settings.dcgan
import settings.stylegan
import settings.vqvae
from experiment import memory
from experiment.flags import check_rules
from settings import rules
from settings.rules import SettingsError


def namespace(**values):
    return argparse.Namespace(**values)


# ---- the rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, good, bad", [
    (rules.at_least(1), [1, 7], [0, -3, 1.5, True, "2"]),
    (rules.power_of_two(16), [16, 64, 1024], [8, 37, 48, 0, -16, 64.0]),
    (rules.above(0), [1e-9, 3, 2.5], [0, -1, float("nan"), float("inf"), None]),
    (rules.number_at_least(0), [0, 0.5, 7], [-0.1, float("nan"), float("inf")]),
    (rules.between(0, 1), [0, 0.5, 1], [-0.01, 1.01, float("nan")]),
    (rules.between(0, 1, high_included=False), [0, 0.99], [1, 1.5]),
    (rules.optional(rules.above(0)), [None, 0.1], [0, -1]),
])
def test_each_rule_accepts_the_good_values_and_says_what_works_for_the_bad(rule, good, bad):
    for value in good:
        assert rule(value) is None, value
    for value in bad:
        need = rule(value)
        assert isinstance(need, str) and need.startswith("use a"), (value, need)


def test_a_flag_carries_its_rule_and_a_bad_value_names_the_flag_the_value_and_what_works():
    p = experiment.parser("test")
    p.tighten("image_size", rules.power_of_two(16))
    p.add_argument("--ngf", type=int, default=4, rule=rules.at_least(1))
    p.add_argument("--nz", type=int, default=8, rule=rules.at_least(1))
    assert p.rules()["ngf"](0) and p.rules()["image_size"](48)
    with pytest.raises(SettingsError) as caught:
        check_rules(p, p.parse_args(["--image-size", "37"]))
    assert str(caught.value) == "--image-size 37: use a power of two, at least 16 (16, 32, 64, " \
                                "128, 256, ...)"
    assert caught.value.name == "image_size" and caught.value.value == 37
    check_rules(p, namespace(ngf=4))                           # nz not in it: not checked
    with pytest.raises(SettingsError, match="--ngf 0: use a whole number, at least 1"):
        check_rules(p, namespace(ngf=0))


def test_whole_number_lists():
    assert rules.whole_numbers("16000,16000,12000") == [16000, 16000, 12000]
    assert rules.whole_numbers("24") == [24]
    for text in ("", "1,,2", "1,x", "1.5", "1,0", "-4"):
        assert rules.whole_numbers(text) is None, text


def test_existing_file(tmp_path):
    rule = rules.existing_file("give a checkpoint")
    (tmp_path / "a.npz").write_bytes(b"x")
    assert rule(str(tmp_path / "a.npz")) is None
    assert rule(str(tmp_path / "b.npz")) == "no such file; give a checkpoint"
    assert rule(str(tmp_path)) is not None                     # a folder is not a file


# ---- each model's settings: the scripts' defaults pass, each bad value names its flag ----------

MODELS = {"dcgan": settings.dcgan, "vqvae": settings.vqvae, "stylegan": settings.stylegan}


def check_all(model, config, images=132):
    """What experiment.start checks: every flag's rule, then the model's own check."""
    check_rules(MODELS[model].flags(""), config)
    if hasattr(MODELS[model], "check"):
        MODELS[model].check(config, images)


def defaults(model):
    return MODELS[model].flags("").parse_args([])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_defaults_are_accepted(model):
    check_all(model, defaults(model))


@pytest.mark.parametrize("model, changes, flag", [
    ("dcgan", {"image_size": 48}, "--image-size 48"),
    ("dcgan", {"image_size": 8}, "--image-size 8"),
    ("dcgan", {"lr_d": -1.0}, "--lr-d -1.0"),
    ("dcgan", {"dropout": 1.0}, "--dropout 1.0"),
    ("vqvae", {"image_size": 38}, "--image-size 38: with --downsamples 2 use a multiple of 4"),
    ("vqvae", {"image_size": 56, "downsamples": 4},
     "--image-size 56: with --downsamples 4 use a multiple of 16"),
    ("vqvae", {"downsamples": 6}, "--downsamples 6: 64x64 images allow at most 5"),
    ("vqvae", {"codes": 1}, "--codes 1"),
    ("vqvae", {"batch_size": 107}, "--batch-size 107: the VQ-VAE trains on 106 of the 132 images"),
    ("stylegan", {"batch_size": 18}, "--batch-size 18: use a multiple of 4"),
    ("stylegan", {"phase_images": "100,x"}, "--phase-images 100,x: use whole"),
    ("stylegan", {"phase_images": "100,100"}, "--image-size 64 needs 3 values"),
    ("stylegan", {"phase_images": "100,0,100"}, "--phase-images 100,0,100"),
    ("stylegan", {"epochs": 1, "steps_per_epoch": 10},
     "--epochs 1: training would end at step 10, still at 8x8"),
    ("stylegan", {"critic": "dcgan"}, "--loss wgan-gp: --critic dcgan has batch norm"),
    ("stylegan", {"gamma_scaling": "resolution"}, "--gamma-scaling resolution: it scales R1"),
    ("stylegan", {"g_widths": "12=8"}, "--g-widths 12=8: 12 is not one of G's resolutions"),
    ("stylegan", {"g_output": "tanh", "synthesis": "replace"},
     "--g-output tanh: a tanh after the replace generator"),
])
def test_bad_settings_are_refused_naming_the_flag(model, changes, flag):
    config = vars(defaults(model))
    config.update(changes)
    with pytest.raises(SettingsError, match=flag.replace("(", r"\(")):
        check_all(model, namespace(**config))


def test_a_stylegan_run_that_ends_below_16x16_is_refused_from_the_number_of_images():
    config = namespace(**dict(vars(defaults("stylegan")), steps_per_epoch=0, epochs=3))
    with pytest.raises(SettingsError, match="still at 8x8"):
        settings.stylegan.check(config, images=132)            # 8 steps an epoch, 1000 at 8x8
    settings.stylegan.check(config, images=None)               # unknown: not refused
    config.epochs = 126
    settings.stylegan.check(config, images=132)


# ---- parameter counts and memory estimates ---------------------------------------------------

TINY = {
    "dcgan": dict(image_size=32, nz=8, ngf=6, ndf=5, batch_size=8),
    "vqvae": dict(image_size=32, channels=12, res_channels=4, res_blocks=1, downsamples=2,
                  codes=24, code_dim=4, prior_channels=8, prior_layers=3, batch_size=8),
    "stylegan": dict(image_size=32, z_dim=8, w_dim=6, mapping_layers=2, fmap_base=64,
                     fmap_max=16, batch_size=8),
}


def tiny(name, **changes):
    """The model's default settings with TINY's sizes (and `changes`)."""
    return namespace(**{**vars(defaults(name)), **TINY[name], **changes})


def test_parameters_are_counted_on_the_built_networks():
    G, D = settings.dcgan.build(tiny("dcgan"))
    by_hand = sum(p.size for p in G.parameters()) + sum(p.size for p in D.parameters()) \
        + sum(b.size for net in (G, D) for name, b in net.state_dict().items() if "running" in name)
    assert memory.parameters_of(settings.dcgan.build, tiny("dcgan")) == by_hand > 0

    def too_large(config):
        raise MemoryError
    assert memory.parameters_of(too_large, tiny("dcgan")) == float("inf")


@pytest.mark.parametrize("name", ["dcgan", "vqvae", "stylegan"])
def test_the_memory_estimate_is_close_to_a_measured_step(name, monkeypatch):
    """tracemalloc's peak over building the models and three training steps at the TINY
    settings (benchmarks/bench_memory.py; the factors were set at the scripts' defaults)."""
    monkeypatch.syspath_prepend("benchmarks")
    import bench_memory
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in TINY[name].items()]
    peak, estimate = bench_memory.measure(name, argv)
    assert 0.8 * peak <= estimate <= 2.5 * peak, (peak, estimate)


def test_the_memory_estimate_grows_with_the_sizes():
    small = settings.dcgan.memory_estimate(tiny("dcgan"))
    assert settings.dcgan.memory_estimate(tiny("dcgan", batch_size=16)) > 1.8 * small
    assert settings.dcgan.memory_estimate(tiny("dcgan", image_size=64)) > 3 * small
    assert settings.vqvae.memory_estimate(tiny("vqvae", codes=4096)) > \
        10 * settings.vqvae.memory_estimate(tiny("vqvae"))      # K values per code position
    capped = dict(fmap_base=1024, fmap_max=8)                   # 8 channels everywhere
    assert settings.stylegan.memory_estimate(tiny("stylegan", image_size=64, **capped)) > \
        3 * settings.stylegan.memory_estimate(tiny("stylegan", **capped))


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\n"
                       "MemAvailable:   2000000 kB\n")
    assert memory.available_bytes("cpu", str(meminfo)) == 2000000 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert memory.available_bytes("cpu", str(meminfo)) is None     # unknown: nothing refused
    assert memory.available_bytes("cpu", str(tmp_path / "missing")) is None


def test_a_step_that_cannot_fit_is_refused_with_the_estimate_and_the_memory_available(monkeypatch):
    config = tiny("dcgan")
    estimate = settings.dcgan.memory_estimate
    need = memory.check_memory(config, "dcgan", estimate, "cpu", images=100)
    assert need == estimate(config) + memory.BASE_BYTES + 100 * 32 * 32
    monkeypatch.setattr(memory, "available_bytes", lambda device: need - 1)
    with pytest.raises(experiment.ExperimentError) as caught:
        memory.check_memory(config, "dcgan", estimate, "cpu", images=100)
    assert caught.value.code == 2
    text = str(caught.value)
    assert f"needs about {need / 2 ** 30:.1f} GiB" in text
    assert f"the machine has {(need - 1) / 2 ** 30:.1f} GiB available" in text
    assert "--skip-memory-check" in text
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    memory.check_memory(config, "dcgan", estimate, "cpu")     # unknown: allowed


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
