"""Will the training step fit? The model's estimate against the memory the machine has free.

Each model file has `memory_estimate(config)`: the bytes one training step needs, from its layers'
feature maps and parameters (models/settings.py: step_bytes; the factors are measured by
benchmarks/bench_memory.py). On the CPU the run also holds its images (one byte per pixel) and
the interpreter with NumPy, OpenBLAS and matplotlib (BASE_BYTES); on the GPU the step's arrays
live in the GPU's memory. A run that needs more than is available is refused before it starts,
with both numbers, instead of being killed by the operating system part-way.
"""
from .errors import ExperimentError

BASE_BYTES = 300 * 2 ** 20   # a tiny run's resident size: Python, NumPy, OpenBLAS, matplotlib
GIB = 2 ** 30


def available_bytes(device, meminfo="/proc/meminfo"):
    """Memory free for a new run: the kernel's MemAvailable (CPU, Linux), or CuPy's free device
    memory (GPU); None where it cannot be read (then nothing is refused)."""
    if device == "gpu":
        try:
            import cupy
            return int(cupy.cuda.runtime.memGetInfo()[0])
        except Exception:          # no CuPy, no device, an old driver: do not guess
            return None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024       # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(config, model, estimate, device, images=None):
    """Refuse (exit code 2) settings whose training step needs more memory than is available.

    estimate: the model's memory_estimate function; images: how many images the data holds,
    when known (they stay in memory as uint8)."""
    step = estimate(config)
    needed = step if device == "gpu" else step + BASE_BYTES + (images or 0) * config.image_size ** 2
    available = available_bytes(device)
    if available is None or needed <= available:
        return needed
    where = "the GPU has" if device == "gpu" else "the machine has"
    raise ExperimentError(
        f"--image-size {config.image_size} --batch-size {config.batch_size} and these widths: a "
        f"{model} training step needs about {needed / GIB:.1f} GiB (estimated from the layers' "
        f"feature maps and parameters), but {where} {available / GIB:.1f} GiB available; use a "
        "smaller image size, batch size or network width, or --skip-memory-check to try anyway",
        code=2)
