"""ONE command for a machine with a GPU: does the GPU path work there, and how fast is it?

    python benchmarks/gpu_check.py              # on the GPU machine, with CuPy: at most 7 minutes
    python benchmarks/gpu_check.py --dry-run    # the same plumbing on the CPU with NumPy: < 1 minute
    python benchmarks/gpu_check.py --dry-run --standin   # the GPU path on the CuPy stand-in (CI)
    python benchmarks/gpu_check.py --out /tmp/gpu_check --json $OUT/gpu_check.json   # JSON elsewhere

Its parts, in this order; each runs in a child process with a timeout taken from one total budget
(--budget, default 420 s, CuPy's first-use kernel compilation included), and a part that would not
fit in what is left is skipped and says so:

  machine  the GPU's name and memory, the driver, CUDA and CuPy versions (and PyTorch's, if any)
  tests    python -m pytest --device gpu -m "not slow"   (every device-aware test, on CuPy)
  speed    seconds per training image of each model at 64x64 and 256x256: the scripts' own step
           functions, default settings and data loader on synthetic OASIS-shaped slices, warmed up
           (kernels compiled), then timed in chunks that end by reading the step's values; next
           to them, kernel launches and host reads per step (count_steps: counted on the CuPy
           stand-in; a real CuPy has no launch counter, so there only the host reads are
           checked, with cupyx.allow_synchronize(False))
  pytorch  the DCGAN-256 step (ngf = ndf = 64, batch 32) in our code and in PyTorch CUDA, and the
           ratio (benchmarks/bench_dcgan_step.py), when PyTorch with CUDA is installed
  scripts  train_dcgan.py, train_vqvae.py and train_stylegan.py for a few steps at 64x64 and
           256x256 through their command lines, on the synthetic OASIS folder
  slow     python -m pytest --device gpu -m slow   (the command-line tests), with the time left

Every figure goes into <out>/gpu_check.json (or --json), written again after each part, so that a
run cut short keeps what it measured; each part's whole output is in <out>/logs/. Where they are
installed, pytest-timeout stops any test after 120 s and pytest-xdist runs the test files in 12
processes (2 in a dry run), which share the GPU. --dry-run runs every part on the CPU with NumPy,
at 16x16 and 32x32 instead of 64x64 and 256x256, with a couple of steps and a few tests: CI runs
it to test the plumbing. --standin runs it on the CuPy stand-in (tests/cupy_standin: NumPy under
CuPy's rules, kernel launches and host reads counted) as if it were a GPU: with --dry-run, the GPU
path of every part at the dry run's sizes, which CI runs; its timings are the CPU's, not a GPU's.

Exit code: 0 when every part ran and passed (the PyTorch comparison may be "optional, skipped"
when PyTorch, or its CUDA build, is not installed: it is an optional cross-check); 1 when a part
failed, timed out or was skipped for lack of time; 2 when the GPU cannot be used (or a flag is
wrong).
"""
import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
from PIL import Image

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHMARKS)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCHMARKS)

import machine  # noqa: E402
import nn  # noqa: E402

STANDIN = os.path.join(ROOT, "tests", "cupy_standin")     # the CuPy stand-in's cupy and cupyx
MODELS = ("dcgan", "vqvae", "stylegan")
SCRIPTS = {"dcgan": "train_dcgan.py", "vqvae": "train_vqvae.py", "stylegan": "train_stylegan.py"}

# What each mode runs. Seconds: `cap` is the most a child may take, `minimum` the least worth
# starting; the parts after a child keep the sum of their minimums in reserve.
# `flags`: added to each model's defaults (none on the GPU: the scripts' own settings). `env`: for
# every child process (the dry run keeps each to one thread on a small shared machine).
MODES = {
    "gpu": dict(device="gpu", sizes=(64, 256), tests=["tests"], slow_tests=["tests"], warmup=2, chunk=3, seconds=4.0,
                script_steps=3, script_batch=8, workers=12, torch_device="cuda", torch_size=256, torch_width=64,
                torch_batch=32, slices=dict(train=48, validate=12), slice_size=256, flags={model: [] for model in MODELS}, env={},
                caps=dict(tests=240, speed=75, pytorch=60, script=60, slow=600),
                minimums=dict(tests=60, speed=20, pytorch=20, script=20, slow=30)),
    "dry-run": dict(device="cpu", sizes=(16, 32), tests=["tests/test_gpu_path.py", "-k", "floor"],
                    slow_tests=["tests/test_gpu_path.py"],
                    warmup=1, chunk=1, seconds=0.0, script_steps=2, script_batch=4, workers=2,
                    torch_device="cpu", torch_size=32, torch_width=4, torch_batch=4,
                    slices=dict(train=24, validate=12), slice_size=64,
                    flags=dict(dcgan=["--ngf", "4", "--ndf", "4", "--nz", "8", "--batch-size", "4"],
                               vqvae=["--channels", "8", "--res-channels", "4", "--res-blocks",
                                      "1", "--codes", "16", "--code-dim", "4", "--batch-size",
                                      "4", "--prior-channels", "4", "--prior-layers", "2"],
                               stylegan=["--fmap-base", "32", "--fmap-max", "8", "--z-dim", "8",
                                         "--w-dim", "8", "--mapping-layers", "2",
                                         "--batch-size", "4"]),
                    env=dict(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
                    caps=dict(tests=60, speed=60, pytorch=60, script=60, slow=60),
                    minimums=dict(tests=1, speed=1, pytorch=1, script=1, slow=1)),
}


class Budget:
    """The seconds left of a total, and how long each part may take."""

    def __init__(self, total, clock=time.monotonic):
        self.total, self.clock, self.start = total, clock, clock()

    def elapsed(self):
        return self.clock() - self.start

    def left(self):
        return self.total - self.elapsed()

    def timeout(self, cap, minimum, reserve=0.0):
        """min(cap, left - reserve): what a part may take while `reserve` seconds stay for the
        parts after it; None when that is less than `minimum` (the part would not fit)."""
        seconds = min(cap, self.left() - reserve)
        return seconds if seconds >= minimum else None


# ---- the machine ---------------------------------------------------------------------------------

def describe_machine(device):
    """Versions and hardware, as far as they can be found (never raises)."""
    found = {"python": platform.python_version(), "numpy": np.__version__,
             "cpu": f"{machine.cpu_model()}, {os.cpu_count()} cores", "device": device}
    try:
        import cupy
        found["cupy"] = cupy.__version__
        if getattr(cupy, "__standin__", False):
            found["cupy"] += " (the CuPy stand-in, tests/cupy_standin: NumPy on the CPU)"
        runtime = cupy.cuda.runtime
        found["cuda_runtime"] = version_text(runtime.runtimeGetVersion())
        found["cuda_driver_api"] = version_text(runtime.driverGetVersion())
        properties = runtime.getDeviceProperties(0)
        found["gpu"] = properties["name"].decode() if isinstance(properties["name"], bytes) \
            else str(properties["name"])
        found["gpu_memory_gb"] = round(properties["totalGlobalMem"] / 2 ** 30, 1)
        found["compute_capability"] = f"{properties['major']}.{properties['minor']}"
    except Exception as error:   # no CuPy, no driver, no GPU: say so and go on
        found["cupy_error"] = f"{type(error).__name__}: {error}"
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        found["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        found["nvidia_smi"] = f"not available ({type(error).__name__})"
    try:
        import torch
        found["torch"] = torch.__version__
        found["torch_cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        found["torch"] = None
    return found


def version_text(number):
    """CUDA's 12040 -> "12.4"."""
    return f"{number // 1000}.{number % 1000 // 10}"


# ---- synthetic data in the OASIS layout ------------------------------------------------------------

def write_synthetic_oasis(folder, counts, size=256, seed=0):
    """Brain-like 8-bit slices (size x size) in the OASIS layout, counts[split] of each split:
    <folder>/keras_png_slices_<split>/case_XXX_slice_N.nii.png. Each is an ellipse of noisy tissue
    with a darker inner ellipse, of random size and shape, on a black background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    for split, count in counts.items():
        write_slices(os.path.join(folder, f"keras_png_slices_{split}"), count, x, y, rng)
    return folder


def write_slices(folder, count, x, y, rng):
    """`count` slices into `folder`, drawn on the grid x, y (from -1 to 1) with `rng`."""
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        a, b = rng.uniform(0.55, 0.8), rng.uniform(0.65, 0.9)             # half-axes of the head
        head = (x / a) ** 2 + (y / b) ** 2 < 1
        inner = (x / (0.3 * a)) ** 2 + (y / (0.45 * b)) ** 2 < 1
        tissue = 110 + 12 * rng.standard_normal(x.shape) + 30 * np.cos(8 * x * y)
        pixels = np.where(head, tissue, 0) - np.where(inner, 60, 0)
        name = f"case_{i // 4 + 1:03d}_slice_{i % 4}.nii.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, name))


# ---- child processes -------------------------------------------------------------------------------

def run_child(command, timeout, log_path, env):
    """Run `command` with a timeout (its whole process group is killed when it runs out) and the
    variables `env` added; its output goes to `log_path`. Returns (exit code or None when it timed
    out, seconds, output)."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": ROOT, **env},
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    with open(log_path, errors="replace") as log:
        return code, round(time.monotonic() - started, 1), log.read()


def pytest_summary(output):
    """{"passed": 12, "failed": 1, ...} from pytest's closing line(s)."""
    counts = {}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|"
                                   r"xpassed)\b", output[-3000:]):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


def status_of(code, passed=True):
    if code is None:
        return "timeout"
    return "passed" if code == 0 and passed else "failed"


# ---- the measurements a child makes (python gpu_check.py --child SPEC) -------------------------------

def training_step(model, size, device, folder, cache, flags=()):
    """(step(i) -> values, images per step): one training step of `model` as its script runs it
    (its default settings at image size `size`, changed by `flags`), on the images of `folder`."""
    import data
    import settings.dcgan
    import settings.stylegan
    import settings.vqvae
    import train_dcgan
    import train_stylegan
    import train_vqvae
    from models import stylegan, vqvae
    images = data.load_images(folder, image_size=size, split="train", cache_dir=cache).images
    model_settings = {"dcgan": settings.dcgan, "vqvae": settings.vqvae,
                      "stylegan": settings.stylegan}[model]
    cfg = model_settings.flags("").parse_args(["--image-size", str(size), "--device", device,
                                               *flags])
    loader = data.BatchLoader(images, cfg.batch_size, seed=0, device=device)
    rng = np.random.default_rng(1)

    def batch(i):
        return loader.batch(i // len(loader), i % len(loader))

    if model == "dcgan":
        nn.manual_seed(0)
        G, D = settings.dcgan.build(cfg)
        G_ema, _ = settings.dcgan.build(cfg)
        for network in (G, D, G_ema):
            network.to(device)
        opt_g = nn.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = nn.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))

        def step(i):
            z = nn.Tensor(rng.standard_normal((cfg.batch_size, cfg.nz), dtype=np.float32))
            values = train_dcgan.train_step(G, D, opt_g, opt_d, nn.Tensor(batch(i)), z.to(device),
                                            cfg.real_label)
            nn.optim.update_average(G_ema, G, 0.99)
            return values
    elif model == "vqvae":
        nn.manual_seed(0)
        network, _ = settings.vqvae.build(cfg)
        network.to(device)
        optimizer = nn.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=cfg.lr)

        def step(i):
            values, codes = train_vqvae.vqvae_step(network, optimizer, nn.Tensor(batch(i)), rng)
            values["codes_used"] = (vqvae.code_counts(codes, cfg.codes) > 0).sum()
            return values
    else:
        G, D = settings.stylegan.build(cfg, seed=0)
        G_ema, _ = settings.stylegan.build(cfg, seed=0)
        for network in (G, D, G_ema):
            network.to(device)
        gan = train_stylegan.make_gan(G, D, cfg, rng, rng)
        train_stylegan.start_phase(gan, {}, size, cfg)

        def step(i):
            real = stylegan.fade_real_images(batch(i), size, 1.0)
            values = train_stylegan.train_step(gan, real, size, 1.0, i)
            nn.optim.update_average(G_ema, G, 0.99)
            return values
    return step, cfg.batch_size


def wait_for(values):
    """Read a step's values in one transfer, as experiment.Run does: the GPU has finished then."""
    from experiment.run import host_numbers
    return host_numbers(list(values.values()))


def time_steps(step, warmup, chunk, seconds, wait):
    """(median seconds per step, steps timed, warm-up seconds): `warmup` steps first (compiling the
    kernels), then chunks of `chunk` steps, each ended by `wait`, until `seconds` have been timed
    (at least one chunk, at most 20)."""
    started = time.perf_counter()
    for i in range(warmup):
        values = step(i)
    wait(values)
    warm = time.perf_counter() - started
    times, i = [], warmup
    while not times or (sum(times) < seconds and len(times) < 20):
        started = time.perf_counter()
        for _ in range(chunk):
            values = step(i)
            i += 1
        wait(values)
        times.append((time.perf_counter() - started) / chunk)
    return float(np.median(times)), len(times) * chunk, warm


def measure_speed(spec):
    """Seconds per training image of spec["model"] at each of spec["sizes"]."""
    results = []
    for size in spec["sizes"]:
        step, batch = training_step(spec["model"], size, spec["device"], spec["data"],
                                    spec["cache"], spec["flags"])
        per_step, steps, warm = time_steps(step, spec["warmup"], spec["chunk"], spec["seconds"],
                                           wait_for)
        result = {"model": spec["model"], "size": size, "batch": batch, "steps_timed": steps,
                  "seconds_per_step": round(per_step, 5),
                  "seconds_per_image": round(per_step / batch, 6), "warmup_s": round(warm, 2),
                  **count_steps(step, spec["warmup"] + steps, COUNTED_STEPS, spec["device"])}
        if spec["device"] == "gpu":
            import cupy
            result["gpu_memory_pool_gb"] = round(cupy.get_default_memory_pool().total_bytes()
                                                 / 2 ** 30, 2)
        results.append(result)
        write_json(spec["result"], results)      # what is measured survives a timeout
        del step
    return results


COUNTED_STEPS = 4      # steps whose launches and host reads are counted (StyleGAN's vary: its
                       # lazy penalty falls on every --reg-every'th step)


def count_steps(step, first, n, device):
    """Kernel launches, host reads and host-to-device copies per step, over steps first ..
    first + n - 1, as far as they can be counted: every one on the CuPy stand-in (its counters,
    cupy._standin); on a real CuPy launches cannot be counted, and host reads are only checked:
    the steps run under cupyx.allow_synchronize(False), which raises on a read; on NumPy there
    is no device. The dict says which ("counted")."""
    if device != "gpu":
        return {"counted": "nothing: NumPy on the CPU launches no kernels"}
    import cupy
    if getattr(cupy, "__standin__", False):
        launches, reads, copies = [], [], []
        for i in range(first, first + n):
            with cupy._standin.counting() as counts:
                step(i)
            launches.append(counts.launches)
            reads.append(counts.host_reads)
            copies.append(counts.host_to_device)
        return {"launches_per_step": round(sum(launches) / n, 1),
                "host_reads_per_step": round(sum(reads) / n, 1),
                "host_to_device_per_step": round(sum(copies) / n, 1),
                "counted": f"every launch and host read of {n} steps, by the CuPy stand-in"}
    found = {"launches_per_step": None,
             "counted": "host reads only, checked with cupyx.allow_synchronize(False): a real "
                        "CuPy counts no launches (the stand-in does: "
                        "tests/cupy_standin/measure_steps.py)"}
    import cupyx
    if not hasattr(cupyx, "allow_synchronize"):
        return dict(found, host_reads_per_step=None,
                    counted="nothing: this CuPy has no cupyx.allow_synchronize")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")               # allow_synchronize is deprecated
            with cupyx.allow_synchronize(False):
                for i in range(first, first + n):
                    step(i)
        found["host_reads_per_step"] = 0
    except cupyx.DeviceSynchronized as error:             # a step read something back
        found["host_reads_per_step"] = "at least 1"
        found["host_read"] = str(error)
    return found


def measure_pytorch(spec):
    """The DCGAN step of bench_dcgan_step.py, ours and PyTorch's, and the ratio."""
    try:
        import torch
    except ImportError:
        return {"status": "skipped", "reason": "PyTorch is not installed"}
    cuda = spec["torch_device"] == "cuda"
    if cuda and not torch.cuda.is_available():
        return {"status": "skipped", "reason": f"PyTorch {torch.__version__} has no CUDA here"}
    import bench_dcgan_step
    shape = (spec["size"], spec["width"], spec["batch"], 100)
    ours = bench_dcgan_step.ours(*shape, device=spec["device"])
    theirs = bench_dcgan_step.pytorch(*shape, device=spec["torch_device"])

    def torch_wait(losses):
        if cuda:
            torch.cuda.synchronize()
    engines = {"ours": (ours, lambda values: wait_for(values)), "torch": (theirs, torch_wait)}
    times = {name: [] for name in engines}
    for _ in range(3):                            # alternate, as bench_dcgan_step does
        for name, (step, wait) in engines.items():
            per_step, _, _ = time_steps(lambda i: step(), spec["warmup"], spec["chunk"],
                                        spec["seconds"] / 3, wait)
            times[name].append(per_step)
    mine, reference = float(np.median(times["ours"])), float(np.median(times["torch"]))
    return {"status": "measured", "size": spec["size"], "ngf_ndf": spec["width"],
            "batch": spec["batch"], "ours_ms": round(mine * 1e3, 2),
            "torch_ms": round(reference * 1e3, 2), "ratio": round(mine / reference, 3),
            "torch": torch.__version__, "torch_device": spec["torch_device"]}


def child(spec):
    """The work of one child process (spec: a dict from the parent), result written as JSON."""
    if spec["part"] == "speed":
        measure_speed(spec)
    else:
        write_json(spec["result"], measure_pytorch(spec))


# ---- the parent: plan, run, record ------------------------------------------------------------------

def script_command(model, size, mode, data_folder, out):
    """A few training steps of a train_*.py at `size` through its command line, on the small
    "validate" split with small batches (the end-of-run SSIM report runs on the CPU: it stays
    short with few images)."""
    steps, batch = str(mode["script_steps"]), str(mode["script_batch"])
    command = [sys.executable, os.path.join(ROOT, SCRIPTS[model]), "--data", data_folder,
               "--split", "validate", "--image-size", str(size), "--device", mode["device"],
               "--out", out, "--epochs", "2", *mode["flags"][model], "--batch-size", batch]
    if model == "dcgan":
        command += ["--steps-per-epoch", steps, "--samples", "8", "--metrics-real", "12"]
    elif model == "vqvae":
        command += ["--steps-per-epoch", steps, "--prior-epochs", "1", "--augment-copies", "0",
                    "--samples", "4", "--downsamples", "2" if size < 128 else "4"]
    else:                                  # one step per resolution, then the final one
        resolutions = int(np.log2(size)) - 2
        command += ["--steps-per-epoch", str(resolutions), "--phase-images", batch,
                    "--fade-images", batch, "--samples", "8", "--metrics-real", "12"]
    return command


def script_result(out):
    """What a finished script run left: its step count and its logged seconds per step."""
    import experiment
    path = os.path.join(out, "checkpoint.npz")
    if not os.path.exists(path):
        return {"checkpoint": False}
    found = {"checkpoint": True, "steps": experiment.load_checkpoint(path)["step"]}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    epochs = [r for r in records if r["event"] == "epoch"]
    if epochs:
        found["log_seconds_per_step_last_epoch"] = epochs[-1].get("seconds_per_step")
    reports = [r for r in records if r["event"] == "sample_quality" and "seconds_per_image" in r]
    if reports:
        found["log_seconds_per_image"] = reports[-1]["seconds_per_image"]
    return found


def plan(mode, work, data_folder):
    """The child processes to run, in order: (part, name, command, extra)."""
    python = sys.executable
    dev = mode["device"]
    pytest = [python, "-m", "pytest", "--device", dev, "-q", "-p", "no:cacheprovider",
              "--maxfail=10", "--durations=10"]
    if importlib.util.find_spec("pytest_timeout"):          # one hung test cannot eat the budget
        pytest += ["--timeout", "120"]
    if importlib.util.find_spec("xdist") and mode["workers"] > 1:   # test files in parallel
        pytest += ["-n", str(mode["workers"]), "--dist", "loadfile"]
    jobs = [("tests", "tests (not slow)", pytest + ["-m", "not slow"] + mode["tests"], {})]
    for model in MODELS:
        spec = dict(part="speed", model=model, sizes=list(mode["sizes"]), device=dev,
                    flags=mode["flags"][model], data=data_folder,
                    cache=os.path.join(work, "cache"), warmup=mode["warmup"],
                    chunk=mode["chunk"], seconds=mode["seconds"],
                    result=os.path.join(work, f"speed_{model}.json"))
        jobs.append(("speed", f"speed {model}", [python, __file__, "--child", json.dumps(spec)],
                     spec))
    spec = dict(part="pytorch", device=dev, torch_device=mode["torch_device"],
                size=mode["torch_size"], width=mode["torch_width"], batch=mode["torch_batch"],
                warmup=mode["warmup"], chunk=mode["chunk"], seconds=mode["seconds"],
                result=os.path.join(work, "pytorch.json"))
    jobs.append(("pytorch", "pytorch", [python, __file__, "--child", json.dumps(spec)], spec))
    for size in mode["sizes"]:
        for model in MODELS:
            out = os.path.join(work, "scripts", f"{model}_{size}")
            jobs.append(("script", f"{SCRIPTS[model]} {size}x{size}",
                         script_command(model, size, mode, data_folder, out),
                         {"model": model, "size": size, "out": out}))
    jobs.append(("slow", "tests (slow)", pytest + ["-m", "slow"] + mode["slow_tests"], {}))
    return jobs


def run_job(part, name, command, extra, timeout, mode, work, report):
    """Run one planned child and put what it gave into `report`."""
    log_path = os.path.join(work, "logs", re.sub(r"[^a-z0-9]+", "_", name.lower()) + ".log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    for path in (extra.get("result"), extra.get("out")):    # nothing left from an earlier check
        if path and os.path.isdir(path):
            shutil.rmtree(path)
        elif path and os.path.exists(path):
            os.remove(path)
    env = mode["env"]
    if mode.get("standin") and part not in ("tests", "slow"):   # (pytest finds it: conftest.py)
        env = dict(env, PYTHONPATH=STANDIN + os.pathsep + ROOT)
    code, seconds, output = run_child(command, timeout, log_path, env)
    entry = {"part": part, "name": name, "seconds": seconds, "timeout_s": round(timeout, 1),
             "exit_code": code, "log": log_path, "tail": output[-1500:]}
    if part in ("tests", "slow"):
        entry["summary"] = pytest_summary(output)
        entry["status"] = "no tests" if code == 5 else status_of(code)
    elif part == "speed":
        measured = read_json(extra["result"]) or []
        entry["status"] = status_of(code, len(measured) == len(extra["sizes"]))
        for result in measured:
            report["seconds_per_image"].setdefault(result["model"], {})[str(result["size"])] = \
                result["seconds_per_image"]
            report["per_step"].setdefault(result["model"], {})[str(result["size"])] = {
                "launches": result.get("launches_per_step"),
                "host_reads": result.get("host_reads_per_step"), "counted": result["counted"]}
            report["speed"].append(result)
    elif part == "pytorch":
        result = read_json(extra["result"]) or {}
        entry["status"] = OPTIONAL_SKIP if result.get("status") == "skipped" else status_of(code)
        report["pytorch"] = result
    else:
        found = script_result(extra["out"])
        entry["status"] = status_of(code, found["checkpoint"])
        report["scripts"].setdefault(extra["model"], {})[str(extra["size"])] = \
            {"status": entry["status"], "seconds": seconds, **found}
    return entry


OPTIONAL_SKIP = "optional, skipped"     # the PyTorch comparison without PyTorch (or its CUDA)
FINE = ("passed", "no tests", OPTIONAL_SKIP)


def line_for(entry):
    details = ""
    if entry.get("summary"):
        details = " (" + ", ".join(f"{n} {w}" for w, n in entry["summary"].items()) + ")"
    return f"{entry['name']}: {entry['status']}{details} in {entry['seconds']:.0f} s"


def use_standin(dry_run):
    """--standin: the CuPy stand-in as this process's `cupy` (the children get it through
    PYTHONPATH, pytest through conftest.py). None, or why it cannot be used."""
    if not dry_run:
        return ("--standin needs --dry-run: the stand-in computes on the CPU, and at a GPU's "
                "sizes and widths the check would take hours")
    if STANDIN not in sys.path and importlib.util.find_spec("cupy") is not None:
        return "--standin: CuPy is installed here; run the check on it, without --standin"
    if STANDIN not in sys.path:
        sys.path.insert(0, STANDIN)
    return None


def check(args):
    mode = dict(MODES["dry-run" if args.dry_run else "gpu"])
    if args.standin:
        refused = use_standin(args.dry_run)
        if refused:
            print(f"gpu_check: {refused}", file=sys.stderr)
            return 2
        mode.update(device="gpu", standin=True)
    budget = Budget(args.budget)
    work = os.path.abspath(args.out)
    os.makedirs(work, exist_ok=True)
    report_path = os.path.abspath(args.json or os.path.join(work, "gpu_check.json"))
    report = {"dry_run": args.dry_run, "budget_s": args.budget, "started": time.strftime("%c"),
              "standin": args.standin, "machine": describe_machine(mode["device"]), "parts": [],
              "seconds_per_image": {}, "per_step": {}, "speed": [], "pytorch": None,
              "scripts": {}}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()), flush=True)
    if not args.dry_run:
        reason = nn.backend.gpu_unavailable_reason()
        if reason:
            report["gpu_unavailable"] = reason
            write_json(report_path, report)
            print(f"gpu_check: the GPU cannot be used: {reason}", file=sys.stderr)
            return 2
    data_folder = write_synthetic_oasis(os.path.join(work, "synthetic_oasis"), mode["slices"],
                                        mode["slice_size"])
    jobs = plan(mode, work, data_folder)
    for index, (part, name, command, extra) in enumerate(jobs):
        reserve = sum(mode["minimums"][later[0]] for later in jobs[index + 1:])
        timeout = budget.timeout(mode["caps"][part], mode["minimums"][part], reserve)
        if timeout is None:
            entry = {"part": part, "name": name, "status": "skipped",
                     "reason": f"would not fit: {budget.left():.0f} s of the {args.budget:.0f} s "
                               f"budget left, {reserve:.0f} s kept for the parts after it"}
        else:
            entry = run_job(part, name, command, extra, timeout, mode, work, report)
        report["parts"].append(entry)
        report["elapsed_s"] = round(budget.elapsed(), 1)
        write_json(report_path, report)
        print(f"[{budget.elapsed():5.0f} s] " + (line_for(entry) if "seconds" in entry else
                                                 f"{name}: skipped, {entry['reason']}"), flush=True)
    print_summary(report, report_path)
    return 0 if all(p["status"] in FINE for p in report["parts"]) else 1


def print_summary(report, path):
    where = " on the CuPy stand-in: the CPU's seconds, not a GPU's" if report["standin"] else ""
    settings = "the dry run's tiny settings" if report["dry_run"] else "default settings"
    print(f"\nseconds per training image ({settings}{where}), and per step the kernel launches "
          "and host reads:")
    for model, sizes in report["seconds_per_image"].items():
        counts = report["per_step"].get(model, {})
        print(f"  {model:<9}" + "".join(f"  {size}x{size} {seconds:.5f} s"
                                        f"{per_step_text(counts.get(size))}"
                                        for size, seconds in sizes.items()))
    counted = {c["counted"] for sizes in report["per_step"].values() for c in sizes.values()}
    for text in sorted(counted):
        print(f"  (counted: {text})")
    result = report["pytorch"] or {}
    if result.get("status") == "measured":
        print(f"DCGAN {result['size']}x{result['size']} step (ngf = ndf = {result['ngf_ndf']}, "
              f"batch {result['batch']}): ours {result['ours_ms']} ms{where and ' (stand-in)'}, "
              f"PyTorch {result['torch_ms']} ms, ratio {result['ratio']}")
    elif result:
        print(f"PyTorch comparison: {result.get('status')}, {result.get('reason', '')}")
    print(f"every figure: {path}")


def per_step_text(counts):
    """" (816 launches, 0 host reads)" from a report's per_step entry ("-" where not counted)."""
    if not counts or (counts["launches"] is None and counts["host_reads"] is None):
        return ""
    launches = "-" if counts["launches"] is None else f"{counts['launches']:g}"
    reads = counts["host_reads"]
    reads = "-" if reads is None else f"{reads:g}" if isinstance(reads, (int, float)) else reads
    return f" ({launches} launches, {reads} host reads)"


# ---- files and flags -------------------------------------------------------------------------------

def write_json(path, value):
    with open(path + ".part", "w") as f:
        json.dump(value, f, indent=2, default=str)
    os.replace(path + ".part", path)


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="the same parts on the CPU with NumPy, tiny sizes (tests the plumbing)")
    p.add_argument("--out", default="runs/gpu_check",
                   help="folder for gpu_check.json, the logs and the runs (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="where to write the figures (default: <out>/gpu_check.json)")
    p.add_argument("--standin", action="store_true",
                   help="with --dry-run: the GPU path on the CuPy stand-in (tests/cupy_standin), "
                        "kernel launches and host reads counted (CI runs it)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="total seconds for every part (default: %(default)s)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)   # the parent's child processes
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.budget <= 0:
        print("gpu_check: --budget must be a positive number of seconds", file=sys.stderr)
        return 2
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
