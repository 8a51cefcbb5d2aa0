"""Runs saved by older code still load and resume: experiment.checkpoints.upgrade, the one place
that knows about them. Each test writes a tiny run, rewrites its checkpoint the way version 1
stored it (no "version", "elapsed", "epoch_end_step" or "log_lines"; random generators as dicts;
StyleGAN's old parameter names; settings that did not exist yet), and checks that continuing it
gives what continuing the untouched run gives."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import run_script
import experiment
import nn
from experiment.checkpoints import VERSION, upgrade

pytestmark = pytest.mark.slow

STYLEGAN_TINY = ["--image-size", "16", "--batch-size", "8", "--steps-per-epoch", "2",
                 "--phase-images", "24", "--fade-images", "16", "--fmap-base", "32",
                 "--fmap-max", "8", "--z-dim", "8", "--w-dim", "8", "--samples", "8",
                 "--reg-every", "2"]
DCGAN_TINY = ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "8",
              "--steps-per-epoch", "2", "--samples", "8"]
VQVAE_TINY = ["--image-size", "16", "--channels", "8", "--res-channels", "4", "--res-blocks", "1",
              "--codes", "48", "--code-dim", "4", "--batch-size", "8", "--steps-per-epoch", "2",
              "--prior-channels", "4", "--prior-layers", "2", "--augment-copies", "1",
              "--samples", "4", "--prior-batch-size", "8", "--prior-levels", "0",
              "--prior-dropout", "0"]


def old_stylegan_name(name):
    """Today's parameter name as version 1 wrote it (before the per-resolution containers)."""
    name = re.sub(r"^mapping\.layers\.(\d+)\.", r"mapping.dense\1.", name)
    name = re.sub(r"^synthesis\.blocks\.(\d+)\.to_image\.", r"synthesis.to_image\1.", name)
    name = re.sub(r"^synthesis\.blocks\.(\d+)\.", r"synthesis.block\1.", name)
    name = re.sub(r"^blocks\.(\d+)\.from_image\.", r"from_image\1.", name)
    return re.sub(r"^blocks\.(\d+)\.", r"block\1.", name)


def as_version_1(path, settings_added_later=(), entries_added_later=()):
    """Rewrite the checkpoint at `path` as version 1 stored it."""
    saved = nn.load(path)
    for key in ("version", "elapsed", "epoch_end_step", "log_lines", *entries_added_later):
        saved.pop(key, None)
    config = json.loads(str(saved["config"]))
    for key in settings_added_later:
        del config[key]
    saved["config"] = json.dumps(config)
    for key, value in saved.items():
        if key.startswith("rng"):
            saved[key] = json.loads(str(value))            # a dict: version 1's rng state
    if saved["model"] == "stylegan":
        for key in ("generator", "generator_ema", "discriminator"):
            saved[key] = {old_stylegan_name(k): v for k, v in saved[key].items()}
    nn.save(saved, path)


def flat(value, prefix=""):
    """{"optimizer_g.state.0.exp_avg": array, ...} of a nested dict."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}").items()}


def assert_same_entries(a, b, names):
    for name in names:
        expected, found = flat(a[name], name), flat(b[name], name)
        assert expected.keys() == found.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(found[key], value, err_msg=key)


def train(script, out, *args):
    return run_script(script, "--out", out, *args).stdout


def test_a_version_1_stylegan_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    train("train_stylegan.py", whole, *STYLEGAN_TINY, "--no-blur", "--epochs", "3")
    train("train_stylegan.py", part, *STYLEGAN_TINY, "--no-blur", "--epochs", "2")
    as_version_1(part / "checkpoint.npz", settings_added_later=("blur",))
    old = nn.load(part / "checkpoint.npz")
    assert "synthesis.block8.layer0.conv.weight" in old["generator"] and "version" not in old
    train("train_stylegan.py", part, "--resume", "--epochs", "3")
    a, b = (experiment.load_checkpoint(p / "checkpoint.npz") for p in (whole, part))
    assert_same_entries(a, b, ["generator", "generator_ema", "discriminator"])
    assert b["version"] == VERSION and b["config"]["blur"] is False
    assert a["history"]["g_loss"].tolist() == b["history"]["g_loss"].tolist()
    epochs = [[r["step"] for r in map(json.loads, open(p / "metrics.jsonl"))
               if r["event"] == "epoch"] for p in (whole, part)]
    assert epochs[0] == epochs[1] == [2, 4, 6]                # the log continued at the checkpoint
    out = run_script("generate.py", "--checkpoint", whole / "phases" / "res_8" / "checkpoint.npz",
                     "--n", "2", "--out", tmp_path / "g").stdout
    assert os.path.exists(tmp_path / "g" / "img_0001.png"), out


def test_a_version_1_dcgan_run_without_a_generator_average_resumes_from_g(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    train("train_dcgan.py", whole, *DCGAN_TINY, "--epochs", "2")
    train("train_dcgan.py", part, *DCGAN_TINY, "--epochs", "1")
    as_version_1(part / "checkpoint.npz", entries_added_later=("generator_ema",))
    upgraded = experiment.load_checkpoint(part / "checkpoint.npz")
    assert_same_entries(upgraded, {"generator_ema": upgraded["generator"]}, ["generator_ema"])
    train("train_dcgan.py", part, "--resume", "--epochs", "2")
    a, b = (experiment.load_checkpoint(p / "checkpoint.npz") for p in (whole, part))
    assert_same_entries(a, b, ["generator", "discriminator", "optimizer_g", "optimizer_d"])


def test_a_version_1_vqvae_run_keeps_its_augmented_first_stage(tmp_path):
    """Continued, the version-1 copy of a run (no "augment" setting: it augmented) ends where the
    untouched run ends; today's default (--no-augment) would have changed its batches."""
    today, old = tmp_path / "today", tmp_path / "old"
    train("train_vqvae.py", today, *VQVAE_TINY, "--augment", "--stage", "vqvae", "--epochs", "1")
    shutil.copytree(today, old)
    as_version_1(old / "checkpoint.npz", settings_added_later=("augment",))
    for folder in (today, old):
        train("train_vqvae.py", folder, "--resume", "--stage", "vqvae", "--epochs", "2")
    a, b = (experiment.load_checkpoint(p / "checkpoint.npz") for p in (today, old))
    assert_same_entries(a, b, ["vqvae", "vqvae_optimizer"])
    assert json.load(open(old / "config.json"))["augment"] is True


def test_upgrade_fills_each_rule_and_leaves_todays_checkpoints_alone(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in
                               [{"event": "start"}, {"event": "epoch", "step": 2},
                                {"event": "epoch", "step": 4}, {"event": "epoch", "step": 6}]))
    old = {"model": "vqvae", "step": 4, "config": {}, "prior": {}, "rng_restart": {"a": 1}}
    new = upgrade(old, str(metrics))
    assert new["version"] == VERSION and new["elapsed"] == 0.0 and new["epoch_end_step"] == 4
    assert new["log_lines"] == 3 and json.loads(new["rng_restart"]) == {"a": 1}
    assert new["config"] == {"augment": True, "prior_levels": 0, "prior_dropout": 0.0,
                             "prior_batch_size": None}
    complete = {"augment": False, "prior_levels": 3, "prior_dropout": 0.1, "prior_batch_size": 16}
    today = {"version": VERSION, "model": "vqvae", "step": 4, "config": dict(complete), "prior": {}}
    assert upgrade(dict(today)) == today
