"""Time conv2d / conv_transpose2d forward + backward, next to the bare matrix products it needs.

    python benchmarks/bench_conv.py                 # DCGAN layers: NumPy, products, PyTorch CPU
    python benchmarks/bench_conv.py --layers 3x3    # the 3x3 stride-1 convs of StyleGAN / VQ-VAE
    python benchmarks/bench_conv.py --layers targets   # issue 25's shapes: 3x3 and DCGAN's D
    python benchmarks/bench_conv.py --device gpu    # CuPy (PyTorch column only with torch.cuda)
    python benchmarks/bench_conv.py --threads 1     # every library on one thread
    python benchmarks/bench_conv.py --threads 1 --cpu-time   # robust when others share the CPU
    python benchmarks/bench_conv.py --peers /path/to/peers-venv/bin/python   # + Chainer, DeZero

Each timing is one forward and the backward for both the input and the weight gradient, float32,
no bias (DCGAN layers before batch norm have none), at the batch given per layer. Inputs and
upstream gradients are given in channels-last memory, the layout they have in training when they
come out of the previous conv layer; PyTorch and the peers get contiguous NCHW arrays. "products"
times only the three matrix products of the layer (see `products`), in the same process: ours /
products is what our layout work costs on top of the arithmetic. Rounds alternate between the
engines (all layers with ours, a pause, all layers with the products, a pause, PyTorch, ...) and
the median (or --statistic min) is reported, because timings on shared machines drift by 20-30%
over a run. The last lines are the geometric means of the per-layer ratios.

--peers PYTHON: the NumPy autograd libraries a student might otherwise read, Chainer 7.8.1 and
DeZero 0.0.13, timed on the same layers. They need NumPy < 2, so they run in another interpreter
(a virtual environment of their own, never a dependency of this project): this script starts
`PYTHON bench_conv.py --peer-worker` as a subprocess and asks it for one round at a time, so the
peers' rounds interleave with ours. A peer that does not import is left out.
"""
import argparse
import collections
import json
import os
import subprocess
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
# Issue 25's targets: the 3x3 layers, DCGAN's discriminator layers, and D's first layer at
# train_dcgan.py's default width (ndf = 32), where the NumPy peers used to be faster.
TARGET_LAYERS = (LAYERS_3X3 + [layer for layer in DCGAN_LAYERS if layer.name.startswith("D")]
                 + [Layer("D1 ndf32", False, 1, 32, 64, 4, 2, 1, 32)])
LAYER_SETS = {"dcgan": DCGAN_LAYERS, "3x3": LAYERS_3X3, "targets": TARGET_LAYERS}


def output_size(transposed, size, k, s, p):
    return (size - 1) * s - 2 * p + k if transposed else (size + 2 * p - k) // s + 1


def channels_last(xp, shape, rng):
    """A float32 NCHW array whose memory is NHWC (like a conv output)."""
    n, c, h, w = shape
    data = rng.standard_normal((n, h, w, c)).astype(np.float32)
    return xp.asarray(data).transpose(0, 3, 1, 2)


def ours(layer, xp, rng):
    """A zero-argument function running forward + backward of `layer` with this library."""
    import nn
    from nn.conv import conv2d, conv_transpose2d
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


def products(layer, xp, rng):
    """The three matrix products a conv layer's forward + backward needs and nothing else, with
    their operands already laid out and every output preallocated: the floor under any
    implementation built on this BLAS. For a conv2d from C to O channels, k x k, stride s, with
    P output pixels and Q input pixels (a transposed layer: the conv2d it is the adjoint of):

        forward          cols (P, k*k*C) @ Wmat (k*k*C, O)
        weight gradient  gy.T (O, P) @ cols (P, k*k*C)
        input gradient   gathered when s divides k: (Q/s^2, (k/s)^2*O) @ ((k/s)^2*O, s^2*C),
                         else scattered: gy (P, O) @ (O, k*k*C)
    """
    name, transposed, cin, cout, size, k, s, p, batch = layer
    c, o = (cout, cin) if transposed else (cin, cout)
    out = output_size(transposed, size, k, s, p)
    small, large = (size, out) if transposed else (out, size)   # conv2d output, input sizes
    pixels = batch * small * small
    if k % s == 0:
        t = k // s
        gather = (batch * large * large // (s * s), t * t * o), (t * t * o, s * s * c)
    else:
        gather = (pixels, o), (o, k * k * c)

    def array(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(np.float32))
    operands = [(array(pixels, k * k * c), array(k * k * c, o)),
                (array(o, pixels), array(pixels, k * k * c)),
                (array(*gather[0]), array(*gather[1]))]
    outputs = [xp.empty((a.shape[0], b.shape[1]), np.float32) for a, b in operands]

    def step():
        for (a, b), y in zip(operands, outputs):
            xp.matmul(a, b, out=y)
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


def peer(name, layer, rng):
    """Forward + backward of `layer` with Chainer or DeZero (NCHW NumPy arrays), or None when the
    library does not import. Each step clears the gradients, as a training loop would."""
    try:
        if name == "chainer":
            import chainer
            import chainer.functions as functions
            variable, conv, deconv = (chainer.Variable, functions.convolution_2d,
                                      functions.deconvolution_2d)
        else:
            import dezero
            import dezero.functions as functions
            variable, conv, deconv = dezero.Variable, functions.conv2d, functions.deconv2d
    except Exception:          # not installed, or broken (e.g. DeZero's np.int on NumPy >= 1.24)
        return None
    _, transposed, cin, cout, size, k, s, p, batch = layer
    out = output_size(transposed, size, k, s, p)
    x = variable(rng.standard_normal((batch, cin, size, size)).astype(np.float32))
    w_shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    w = variable((rng.standard_normal(w_shape) * 0.02).astype(np.float32))
    gy = rng.standard_normal((batch, cout, out, out)).astype(np.float32)

    def step():
        y = (deconv if transposed else conv)(x, w, stride=s, pad=p)
        y.grad = gy if name == "chainer" else variable(gy)
        y.backward()
        x.cleargrad()
        w.cleargrad()
    return step


PEERS = ("chainer", "dezero")


def peer_worker(args):
    """`--peer-worker`: build the peers' steps, say which import (one JSON line), then answer every
    line on stdin with one round: all layers with each peer, a JSON list of [peer][layer] times."""
    rng = np.random.default_rng(0)
    layers = selected_layers(args)
    steps = {name: [peer(name, layer, rng) for layer in layers] for name in PEERS}
    names = [name for name in PEERS if None not in steps[name]]
    versions = {name: sys.modules[name].__version__ for name in names}
    print(json.dumps({"peers": names, "versions": versions, "numpy": np.__version__}), flush=True)
    clock = time.process_time if args.cpu_time else time.perf_counter
    for _ in sys.stdin:
        times = []
        for name in names:
            time.sleep(SETTLE_SECONDS)
            times.append([timed(step, lambda: None, clock) for step in steps[name]])
        print(json.dumps(times), flush=True)


class Peers:
    """The peer worker subprocess, asked for one round at a time."""

    def __init__(self, python, argv):
        script = os.path.abspath(__file__)
        env = dict(os.environ, SETUPTOOLS_USE_DISTUTILS="stdlib",   # Chainer imports distutils
                   PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen([python, script, "--peer-worker", *argv], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(self.process.stdout.readline() or "{}")
        self.names, self.versions = hello.get("peers", []), hello.get("versions", {})
        self.numpy = hello.get("numpy")

    def round(self):
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def timed(step, sync, clock):
    start = clock()
    step()
    sync()
    return clock() - start


def selected_layers(args):
    return [layer for layer in LAYER_SETS[args.layers]
            if args.only is None or args.only in layer.name]


def parse_arguments():
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
                        help="time only the matrix products per layer (and PyTorch), not ours")
    parser.add_argument("--peers", metavar="PYTHON",
                        help="an interpreter with Chainer and/or DeZero (and NumPy < 2): adds "
                             "their columns, run in a subprocess")
    parser.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def load_torch(device):
    try:
        import torch
    except ImportError:
        return None, None
    if device == "gpu" and not torch.cuda.is_available():
        return None, None
    torch.set_num_threads(THREADS)
    return torch, ("cuda" if device == "gpu" else "cpu")


def main():
    args = parse_arguments()
    if args.peer_worker:
        return peer_worker(args)
    from nn.backend import array_module_for
    rng = np.random.default_rng(0)
    xp = array_module_for(args.device)
    layers = selected_layers(args)
    torch, torch_device = load_torch(args.device)
    sync = (lambda: None) if args.device == "cpu" else xp.cuda.Device().synchronize

    engines = {} if args.products_only else {"ours": (ours, sync)}
    engines["products"] = (products, sync)
    if torch is not None:
        torch_sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
        engines["torch"] = (lambda layer, xp, rng: pytorch(layer, torch, torch_device, rng),
                            torch_sync)
    steps = {name: [make(layer, xp, rng) for layer in layers]
             for name, (make, _) in engines.items()}
    peers = None
    if args.peers and args.device == "cpu":
        argv = [a for a in sys.argv[1:] if not a.startswith("--peers") and a != args.peers]
        peers = Peers(args.peers, argv)
    clock = time.process_time if args.cpu_time else time.perf_counter
    times = {name: [[] for _ in layers] for name in list(engines) + (peers.names if peers else [])}
    for repeat in range(args.repeats + 2):          # two warm-up rounds, then alternating rounds
        for name, (_, engine_sync) in engines.items():
            time.sleep(SETTLE_SECONDS)
            for i, step in enumerate(steps[name]):
                seconds = timed(step, engine_sync, clock)
                if repeat >= 2:
                    times[name][i].append(seconds)
        if peers is not None and peers.names:
            for name, row in zip(peers.names, peers.round()):
                for i, seconds in enumerate(row):
                    if repeat >= 2:
                        times[name][i].append(seconds)
    if peers is not None:
        peers.close()
    report(args, layers, times, torch, peers)


def report(args, layers, times, torch, peers):
    statistic = getattr(np, args.statistic)
    ms = {name: [float(statistic(t)) * 1e3 for t in per_layer] for name, per_layer in times.items()}
    print(f"conv forward+backward (input and weight gradients), float32, device {args.device}, "
          f"{args.statistic} of {args.repeats}"
          + (", process CPU time" if args.cpu_time else ", wall time"))
    line = machine.header() + (f"; PyTorch {torch.__version__}, {torch.get_num_threads()} threads"
                               if torch else "; PyTorch not installed")
    if peers is not None:
        line += "; peers " + (", ".join(f"{n} {v}" for n, v in peers.versions.items())
                              + f" on NumPy {peers.numpy}" if peers.names else "did not import")
    print(line + f"; load average {os.getloadavg()[0]:.1f}")
    ratios = [("ours", "products"), ("ours", "torch")] + [("ours", n) for n in PEERS]
    ratios = [(a, b) for a, b in ratios if a in ms and b in ms]
    columns = [name for name in ms]
    print(f"{'layer':<11} {'shape':<30}" + "".join(f" {name[:8]:>8}" for name in columns)
          + "".join(f" {a[:4] + '/' + b[:4]:>9}" for a, b in ratios))
    for i, layer in enumerate(layers):
        shape = (f"{'convT' if layer.transposed else 'conv'} {layer.cin}->{layer.cout} "
                 f"k{layer.k}s{layer.s}p{layer.p} @{layer.size} B{layer.batch}")
        print(f"{layer.name:<11} {shape:<30}" + "".join(f" {ms[n][i]:8.1f}" for n in columns)
              + "".join(f" {ms[a][i] / ms[b][i]:9.2f}" for a, b in ratios))
    print(f"{'total':<11} {'':<30}" + "".join(f" {sum(ms[n]):8.1f}" for n in columns))
    for a, b in ratios:
        r = np.array(ms[a]) / np.array(ms[b])
        print(f"{a} / {b}: geometric mean {np.exp(np.mean(np.log(r))):.2f}, "
              f"worst {r.max():.2f} ({layers[int(r.argmax())].name})")


if __name__ == "__main__":
    main()
