"""Kernel launches, host reads and host-to-device copies per training step, counted on the CuPy
stand-in (no GPU needed):

    python tests/cupy_standin/measure_steps.py                 # image sizes 64 and 256
    python tests/cupy_standin/measure_steps.py --sizes 32 --steps 4 --json counts.json

Each step is the one its script runs (benchmarks/gpu_check.py's training_step: the script's own
step function and default settings, the moving average of G included for DCGAN and StyleGAN;
the PixelCNN prior's step as train_vqvae.py's stage 2 runs it), at the scripts' DEFAULT widths
and depth for each image size, with a batch of 4 (SMALL_BATCH). The widths matter: the
convolution engine picks a route per layer shape by its estimated cost (nn/conv.py
_uses_gather), and the routes launch different numbers of kernels. The batch size does not
(tests/test_cupy_standin.py checks it), except through StyleGAN's random draws: with another
batch size the host generator decides style mixing differently, step by step, so StyleGAN's
figures are means over the steps. One step first (warm-up: Adam's state is made then), then
`steps` steps counted; StyleGAN's lazy penalty falls on every --reg-every'th step, so its min
and max differ.

Host reads per step should be 0: the scripts read a step's values to the host only every
experiment.run.READ_EVERY steps, all at once (one read), and that read is not part of a step.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SMALL_BATCH = {"dcgan": ["--batch-size", "4"], "vqvae": ["--batch-size", "4"],
               "vqvae-prior": ["--prior-batch-size", "4"], "stylegan": ["--batch-size", "4"]}
MODELS = ("dcgan", "vqvae", "vqvae-prior", "stylegan")


def _import_path():
    """The stand-in as `cupy` (unless a real CuPy or the stand-in is already imported), the
    repository and benchmarks/ importable."""
    for path in (os.path.join(ROOT, "benchmarks"), ROOT):
        if path not in sys.path:
            sys.path.insert(0, path)
    if "cupy" not in sys.modules and HERE not in sys.path:
        sys.path.insert(0, HERE)


def prior_step_function(size, folder, cache, flags):
    """(step(i) -> values, batch): train_vqvae.py's prior step on random code maps."""
    import numpy as np

    import nn
    import settings.vqvae
    import train_vqvae
    cfg = settings.vqvae.flags("").parse_args(["--image-size", str(size), "--device", "gpu",
                                               *flags])
    nn.manual_seed(0)
    _, prior = settings.vqvae.build(cfg, dropout_generator=np.random.default_rng(3))
    prior.to("gpu")
    optimizer = nn.optim.Adam(prior.parameters(), lr=cfg.prior_lr)
    side = settings.vqvae.code_side(cfg)
    codes = np.random.default_rng(0).integers(0, cfg.codes, (8, cfg.prior_batch_size, side, side))
    levels = np.random.default_rng(1).integers(0, max(cfg.prior_levels, 1),
                                               (8, cfg.prior_batch_size))
    xp = nn.backend.array_module_for("gpu")

    def step(i):                     # the codes go to the device as prior_batch sends them
        labels = levels[i % 8] if cfg.prior_levels else None
        return {"nll": train_vqvae.prior_step(prior, optimizer, xp.asarray(codes[i % 8]), labels)}
    return step, cfg.prior_batch_size


def measure(model, size, steps, folder, cache, flags=None, trace=False):
    """{"launches": [per step], "host_reads": [...], "host_to_device": [...],
    "host_to_device_bytes": [...], "by_kind": {kind: launches over all counted steps}} of `steps`
    steps of `model` at image size `size`, after one warm-up step; with trace=True also "sites":
    {(kind, "file:line"): count over all counted steps}."""
    _import_path()
    import cupy
    import gpu_check
    if not getattr(cupy, "__standin__", False):
        raise RuntimeError("measure_steps counts on the CuPy stand-in; a real CuPy is imported")
    flags = SMALL_BATCH[model] if flags is None else flags
    if model == "vqvae-prior":
        step, _ = prior_step_function(size, folder, cache, flags)
    else:
        step, _ = gpu_check.training_step(model, size, "gpu", folder, cache, flags)
    step(0)
    found = {"launches": [], "host_reads": [], "host_to_device": [], "host_to_device_bytes": [],
             "by_kind": {}, "sites": {}}
    for i in range(1, steps + 1):
        with cupy._standin.counting(trace=trace) as counts:
            step(i)
        for key in ("launches", "host_reads", "host_to_device", "host_to_device_bytes"):
            found[key].append(getattr(counts, key))
        for kind, n in counts.by_kind.items():
            found["by_kind"][kind] = found["by_kind"].get(kind, 0) + n
        for site, n in counts.sites.items():
            found["sites"][site] = found["sites"].get(site, 0) + n
    return found


def synthetic_data(folder, size):
    """A few synthetic OASIS-layout slices (gpu_check's) at `size` under `folder`."""
    _import_path()
    import gpu_check
    return gpu_check.write_synthetic_oasis(folder, {"train": 8}, size=size)


def summary(found):
    launches = found["launches"]
    return {"launches_mean": round(sum(launches) / len(launches), 1), "launches_min": min(launches),
            "launches_max": max(launches), "host_reads_max": max(found["host_reads"]),
            "host_to_device_mean": round(sum(found["host_to_device"]) / len(launches), 1),
            "host_to_device_mb_mean": round(sum(found["host_to_device_bytes"]) / len(launches)
                                            / 2 ** 20, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", help="also write every count to this file")
    parser.add_argument("--sites", type=int, default=0, metavar="N",
                        help="also print the N lines of code that launch most per step")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            folder = synthetic_data(os.path.join(work, f"data{size}"), size)
            for model in args.models:
                found = measure(model, size, args.steps, folder, os.path.join(work, "cache"),
                                trace=args.sites > 0)
                row = {"model": model, "size": size, **summary(found)}
                top = sorted(found["by_kind"].items(), key=lambda kv: -kv[1])[:6]
                row["top_kinds_per_step"] = {k: round(n / args.steps, 1) for k, n in top}
                results.append(row)
                print(json.dumps(row), flush=True)
                sites = sorted(found["sites"].items(), key=lambda kv: -kv[1])[:args.sites]
                for (what, line), n in sites:
                    print(f"    {n / args.steps:8.1f} per step  {what:28s} {line}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
