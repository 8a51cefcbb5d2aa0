"""Time conv2d / conv_transpose2d forward + backward on the layers of a 64x64 DCGAN.

    python benchmarks/bench_conv.py                 # NumPy, next to PyTorch CPU if installed
    python benchmarks/bench_conv.py --layers 3x3    # the 3x3 stride-1 convs of StyleGAN / VQ-VAE
    python benchmarks/bench_conv.py --device gpu    # CuPy (PyTorch column only with torch.cuda)
    python benchmarks/bench_conv.py --threads 1     # both libraries on one thread
    python benchmarks/bench_conv.py --threads 1 --cpu-time   # robust when others share the CPU

Each timing is one forward and the backward for both the input and the weight gradient, float32,
no bias (DCGAN layers before batch norm have none), at the batch given per layer. Inputs and
upstream gradients are given in channels-last memory, the layout they have in training when they
come out of the previous conv layer; PyTorch gets its default (contiguous NCHW) tensors. Rounds
alternate between the two libraries (all layers with ours, a pause, all layers with PyTorch, a
pause, ...) and the median is reported, because timings on shared machines drift by 20-30% over a
run. The last line is the geometric mean of the per-layer ratios.
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _threads_from_command_line():
    """--threads must act before NumPy is imported: OpenBLAS reads its thread count at load."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=None)
    threads = parser.parse_known_args()[0].threads
    if threads:
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(threads)
    return threads or os.cpu_count()


THREADS = _threads_from_command_line()

import numpy as np  # noqa: E402

import machine  # noqa: E402

import nn  # noqa: E402
from nn.backend import array_module_for  # noqa: E402
from nn.conv import conv2d, conv_transpose2d  # noqa: E402

# After its last call, each library's worker threads keep spinning for a while (OpenBLAS: ~0.1 s,
# PyTorch's OpenMP threads: until their spin count runs out) and slow down whatever runs next on the
# same cores. Measured: interleaving the two call by call made our 3x3 convolutions up to 2.5x
# slower. So the rounds alternate engine by engine, with this pause at every switch.
SETTLE_SECONDS = 0.2

Layer = collections.namedtuple(
    "Layer", "name transposed cin cout size k s p batch")
DCGAN_LAYERS = [                      # the 64x64 DCGAN at ngf = ndf = 64, nz = 100, batch 32
    Layer("G1 1->4", True, 100, 512, 1, 4, 1, 0, 32),
    Layer("G2 4->8", True, 512, 256, 4, 4, 2, 1, 32),
    Layer("G3 8->16", True, 256, 128, 8, 4, 2, 1, 32),
    Layer("G4 16->32", True, 128, 64, 16, 4, 2, 1, 32),
    Layer("G5 32->64", True, 64, 1, 32, 4, 2, 1, 32),
    Layer("D1 64->32", False, 1, 64, 64, 4, 2, 1, 32),
    Layer("D2 32->16", False, 64, 128, 32, 4, 2, 1, 32),
    Layer("D3 16->8", False, 128, 256, 16, 4, 2, 1, 32),
    Layer("D4 8->4", False, 256, 512, 8, 4, 2, 1, 32),
    Layer("D5 4->1", False, 512, 1, 4, 4, 1, 0, 32),
]
# 3x3 "same" convolutions (stride 1, padding 1) of StyleGAN, the VQ-VAE and the PixelCNN prior:
# the narrow ones of the old defaults (8-16 channels at 32-64 px, 32 at 16x16), then the widths a
# wider StyleGAN / VQ-VAE would use. Batch as the models train them.
LAYERS_3X3 = [
    Layer("S64a", False, 16, 8, 64, 3, 1, 1, 16),
    Layer("S64b", False, 8, 8, 64, 3, 1, 1, 16),
    Layer("S32", False, 16, 16, 32, 3, 1, 1, 16),
    Layer("V16", False, 32, 32, 16, 3, 1, 1, 32),
    Layer("W32", False, 64, 64, 32, 3, 1, 1, 32),
    Layer("W64a", False, 32, 32, 64, 3, 1, 1, 16),
    Layer("W64b", False, 64, 64, 64, 3, 1, 1, 16),
    Layer("W32b", False, 32, 32, 32, 3, 1, 1, 32),
]
LAYER_SETS = {"dcgan": DCGAN_LAYERS, "3x3": LAYERS_3X3}


def output_size(transposed, size, k, s, p):
    return (size - 1) * s - 2 * p + k if transposed else (size + 2 * p - k) // s + 1


def forward_flops(layer):
    """2 * multiply-adds of the forward pass; backward (input + weight grad) costs twice that."""
    pixels = layer.size if layer.transposed else output_size(False, layer.size, layer.k, layer.s,
                                                             layer.p)   # where the sum is "dense"
    return 2 * layer.batch * pixels * pixels * layer.cin * layer.cout * layer.k * layer.k


def channels_last(xp, shape, rng):
    """A float32 NCHW array whose memory is NHWC (like a conv output)."""
    n, c, h, w = shape
    data = rng.standard_normal((n, h, w, c)).astype(np.float32)
    return xp.asarray(data).transpose(0, 3, 1, 2)


def ours(layer, xp, rng):
    """A zero-argument function running forward + backward of `layer` with this library."""
    name, transposed, cin, cout, size, k, s, p, batch = layer
    out = output_size(transposed, size, k, s, p)
    x = nn.Tensor(channels_last(xp, (batch, cin, size, size), rng), requires_grad=True)
    w_shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    w = nn.Tensor(xp.asarray(rng.standard_normal(w_shape).astype(np.float32) * 0.02),
                  requires_grad=True)
    gy = nn.Tensor(channels_last(xp, (batch, cout, out, out), rng))
    op = conv_transpose2d if transposed else conv2d

    def step():
        y = op(x, w, stride=s, padding=p)
        nn.grad(y, [x, w], gy)
    return step


def products_only(layer, xp, rng):
    """The three matrix products of a conv layer's forward + backward and nothing else, in im2col
    form, with the columns already built and every output preallocated: a lower bound for any
    implementation built on this BLAS (stride-1 conv2d layers only)."""
    name, transposed, cin, cout, size, k, s, p, batch = layer
    if transposed or s != 1:
        raise SystemExit(f"--products-only: {name} is not a stride-1 conv2d (use --layers 3x3)")
    out = output_size(False, size, k, s, p)
    rows = batch * out * out

    def array(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(np.float32))
    cols, w = array(rows, k * k * cin), array(k * k * cin, cout)       # forward: cols @ W
    gy_cols, w_t = array(rows, k * k * cout), array(k * k * cout, cin)  # input gradient
    gy = array(rows, cout)                                              # weight gradient: gy.T @ cols
    y, gx, gw = (xp.empty(shape, np.float32) for shape in
                 [(rows, cout), (rows, cin), (cout, k * k * cin)])

    def step():
        xp.matmul(cols, w, out=y)
        xp.matmul(gy_cols, w_t, out=gx)
        xp.matmul(gy.T, cols, out=gw)
    return step


def pytorch(layer, torch, device, rng):
    name, transposed, cin, cout, size, k, s, p, batch = layer
    out = output_size(transposed, size, k, s, p)
    x = torch.tensor(rng.standard_normal((batch, cin, size, size)), dtype=torch.float32,
                     device=device, requires_grad=True)
    w_shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    w = torch.tensor(rng.standard_normal(w_shape) * 0.02, dtype=torch.float32, device=device,
                     requires_grad=True)
    gy = torch.tensor(rng.standard_normal((batch, cout, out, out)), dtype=torch.float32,
                      device=device)
    op = torch.nn.functional.conv_transpose2d if transposed else torch.nn.functional.conv2d

    def step():
        y = op(x, w, stride=s, padding=p)
        torch.autograd.grad(y, [x, w], gy)
    return step


def timed(step, sync, clock):
    start = clock()
    step()
    sync()
    return clock() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for BLAS and PyTorch (default: all cores)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="measure process CPU time instead of wall time: with --threads 1 "
                             "it is not inflated by other programs competing for the cores")
    parser.add_argument("--statistic", choices=("median", "min"), default="median",
                        help="min is the better estimate when other programs load the machine")
    parser.add_argument("--layers", choices=sorted(LAYER_SETS), default="dcgan",
                        help="which layer shapes (default: %(default)s)")
    parser.add_argument("--only", help="substring of the layer names to run, e.g. 'D'")
    parser.add_argument("--products-only", action="store_true",
                        help="time only our three matrix products per layer (columns prebuilt, "
                             "outputs preallocated): the floor under any NumPy implementation")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xp = array_module_for(args.device)
    layers = [layer for layer in LAYER_SETS[args.layers]
              if args.only is None or args.only in layer.name]

    sync = (lambda: None) if args.device == "cpu" else xp.cuda.Device().synchronize
    try:
        import torch
        torch_device = "cpu" if args.device == "cpu" else "cuda"
        if torch_device == "cuda" and not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(THREADS)
        torch_sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

    make_ours = products_only if args.products_only else ours
    steps = {layer: [make_ours(layer, xp, rng)] for layer in layers}
    if torch is not None:
        for layer in layers:
            steps[layer].append(pytorch(layer, torch, torch_device, rng))
    clock = time.process_time if args.cpu_time else time.perf_counter
    times = {layer: [[] for _ in steps[layer]] for layer in layers}
    engines = 2 if torch is not None else 1
    for repeat in range(args.repeats + 2):          # two warm-up rounds, then alternating rounds
        for i in range(engines):                     # all layers with ours, then with PyTorch
            time.sleep(SETTLE_SECONDS)
            for layer in layers:
                seconds = timed(steps[layer][i], sync if i == 0 else torch_sync, clock)
                if repeat >= 2:
                    times[layer][i].append(seconds)

    print(("the 3 matrix products alone (ours), " if args.products_only else "")
          + f"conv forward+backward (input and weight gradients), float32, device {args.device}, "
          f"{args.statistic} of {args.repeats}" + (", process CPU time" if args.cpu_time else ", wall time"))
    print(machine.header() + (f"; PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
                              if torch else "; PyTorch not installed")
          + f"; load average {os.getloadavg()[0]:.1f}")
    header = f"{'layer':<11} {'shape':<30} {'ours ms':>8} {'GFLOP/s':>8}"
    print(header + (f" {'torch ms':>9} {'ratio':>6}" if torch else ""))
    total, ratios = [0.0, 0.0], []
    for layer in layers:
        medians = [float(getattr(np, args.statistic)(t)) for t in times[layer]]
        shape = (f"{'convT' if layer.transposed else 'conv'} {layer.cin}->{layer.cout} "
                 f"k{layer.k}s{layer.s}p{layer.p} @{layer.size} B{layer.batch}")
        row = (f"{layer.name:<11} {shape:<30} {medians[0] * 1e3:8.1f} "
               f"{3 * forward_flops(layer) / medians[0] / 1e9:8.1f}")
        if torch:
            ratios.append(medians[0] / medians[1])
            row += f" {medians[1] * 1e3:9.1f} {ratios[-1]:6.2f}"
        for i, m in enumerate(medians):
            total[i] += m
        print(row)
    row = f"{'total':<11} {'':<30} {total[0] * 1e3:8.1f} {'':>8}"
    if torch:
        row += f" {total[1] * 1e3:9.1f} {total[0] / total[1]:6.2f}"
        row += f"\ngeometric mean of the ratios {np.exp(np.mean(np.log(ratios))):.2f}, worst {max(ratios):.2f}"
    print(row)



if __name__ == "__main__":
    main()
