"""Will the training step fit? The model's estimate against the memory the machine has free.

Each model's settings module has `memory_estimate(config)` (settings/dcgan.py, ...): the bytes
one training step needs, `step_bytes` of its layers' feature maps and of the parameters of the
networks it builds (`parameters_of`); the graph factors are measured by
benchmarks/bench_memory.py. On the CPU the run also holds its images (one byte per pixel) and
the interpreter with NumPy, OpenBLAS and matplotlib (BASE_BYTES); on the GPU the step's arrays
live in the GPU's memory. A run that needs more than is available is refused before it starts,
with both numbers, instead of being killed by the operating system part-way.
"""
import math

from .errors import ExperimentError

BASE_BYTES = 300 * 2 ** 20   # a tiny run's resident size: Python, NumPy, OpenBLAS, matplotlib
GIB = 2 ** 30
FLOAT_BYTES = 4              # float32


def parameters_of(build, *args):
    """How many numbers the networks `build(*args)` hold (their state dicts: weights, biases,
    buffers such as batch norm's running statistics), counted on the built networks, never
    derived by a formula; networks too large to be built at all (MemoryError) hold infinitely
    many."""
    try:
        networks = build(*args)
    except MemoryError:
        return math.inf
    return sum(array.size for net in networks for array in net.state_dict().values())


def step_bytes(batch, feature_maps, parameters, graph_factor, copies=5):
    """Estimated memory of one training step, in bytes:

        4 bytes x (graph_factor x batch x feature_maps  +  copies x parameters)

    feature_maps: the elements of every layer's output map for ONE image, summed over the layers
        of every network the step runs (c x h x w per convolution);
    graph_factor: how many arrays of that size the step holds at its peak per layer output
        (the graph keeps several per layer: the convolution, normalisation and activation
        outputs, the im2col copies, their gradients; networks that run twice count twice),
        measured once per model with tracemalloc (benchmarks/bench_memory.py);
    copies: each parameter is held as the weight, its gradient and Adam's two moments (plus a
        weight average, where the model keeps one)."""
    return FLOAT_BYTES * (graph_factor * batch * feature_maps + copies * parameters)


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


def check_memory(config, model, estimate, device, images=None, processes=1):
    """Refuse (exit code 2) settings whose training step needs more memory than is available.

    estimate: the model's memory_estimate function; images: how many images the data holds,
    when known (they stay in memory as uint8); processes: how many processes like this one share
    the memory (a data-parallel run's processes on one machine, each with its own images)."""
    step = estimate(config)
    needed = step if device == "gpu" else step + BASE_BYTES + (images or 0) * config.image_size ** 2
    needed *= processes
    available = available_bytes(device)
    if available is None or needed <= available:
        return needed
    where = "the GPU has" if device == "gpu" else "the machine has"
    amount = (f"about {needed / GIB:.1f} GiB (estimated from the layers' feature maps and "
              "parameters)" if math.isfinite(needed) else
              "more memory than can be allocated (its networks could not even be built)")
    raise ExperimentError(
        f"--image-size {config.image_size} --batch-size {config.batch_size} and these widths: a "
        f"{model} training step needs {amount}, but {where} {available / GIB:.1f} GiB available; "
        "use a smaller image size, batch size or network width, or --skip-memory-check to try "
        "anyway", code=2)
