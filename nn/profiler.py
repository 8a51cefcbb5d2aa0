"""An op profiler: how long each Function's forward and backward calls take.

    with nn.profile() as prof:
        train_step(G, D, opt_g, opt_d, real, z)
    print(prof)                  # the table, sorted by total time
    prof.rows                    # the same as a list of dicts, one per op

While the block runs, Function.__call__ hands each forward call, and the backward loop each
backward call, to `Profile.time(function, kind, method, args)`, which makes that one call between
two clock readings (it never calls back into Function.__call__). A call made inside a timed call
(its `depth` is then above 0) runs untimed and counts toward the outer one: Conv2d's backward
computes its gradients with a Conv2dGradients (or a ConvTranspose2d and a Conv2dWeightGrad), and
that time is Conv2d's backward time.
So no moment is counted twice, and what the Functions do not cover (Python between ops, the
optimizer's step, data) is the line "outside Functions": the table adds up to the block's wall
time. Counts follow the same rule: "calls" are the calls made outside any other timed call. The
backward loop's own Adds (summing the gradients of a tensor used more than once) count as Adds.
Outside `with nn.profile()` the hooks cost one check of a module variable per call.

On the GPU, CuPy queues kernels and returns at once; the profiler waits for the GPU before each
clock reading (cupy's synchronize), so times are real but the step runs slower than unprofiled.
"""
import math
import time

from . import tensor
from .backend import array_module_for, is_cupy_array
from .tensor import array_of

clock = time.perf_counter   # seconds; a module variable so a test can give it a fake clock


class Profile:
    """Times and counts per op, filled by `nn.profile()`; `rows`, `table()` and `str()` read them.

    A Profile can be entered again (`with prof: ...`): times and counts add up over the blocks.
    """

    def __init__(self):
        self.ops = {}          # op name -> {"forward_calls", "forward_s", "backward_calls", ...}
        self.wall_s = 0.0      # time spent inside `with` blocks
        self.depth = 0         # how many timed calls are running (calls inside one: not timed)
        self.on_gpu = False    # seen a CuPy array: wait for the GPU before reading the clock

    def __enter__(self):
        self._previous, tensor._profiler = tensor._profiler, self
        self._entered = self._now()
        return self

    def __exit__(self, *exc_info):
        self.wall_s += self._now() - self._entered
        tensor._profiler = self._previous

    def _now(self):
        if self.on_gpu:
            array_module_for("gpu").cuda.Device().synchronize()
        return clock()

    def time(self, function, kind, method, args):
        """method(*args), i.e. function.forward(*arrays) (kind "forward") or
        function.backward(*gradients) ("backward"), timed and recorded under the Function's name;
        untimed when it is made inside another timed call."""
        if self.depth:
            return method(*args)
        self.on_gpu = self.on_gpu or any(is_cupy_array(array_of(a)) for a in args)
        self.depth += 1
        start = self._now()
        try:
            result = method(*args)
        finally:
            seconds = self._now() - start
            self.depth -= 1
        inputs = args if kind == "forward" else function.inputs
        self._record(type(function).__name__.lstrip("_"), kind, seconds, inputs)
        return result

    def _record(self, name, kind, seconds, inputs):
        op = self.ops.setdefault(name, dict(forward_calls=0, forward_s=0.0, backward_calls=0,
                                            backward_s=0.0, largest_input=()))
        op[kind + "_calls"] += 1
        op[kind + "_s"] += seconds
        for x in inputs:
            shape = tuple(getattr(x, "shape", ()))
            if math.prod(shape) > math.prod(op["largest_input"]):
                op["largest_input"] = shape

    # ---- reading the results ------------------------------------------------------------------
    @property
    def ops_ms(self):
        """Time inside timed calls (milliseconds): the sum of the rows' total_ms."""
        return sum(op["forward_s"] + op["backward_s"] for op in self.ops.values()) * 1e3

    @property
    def wall_ms(self):
        return self.wall_s * 1e3

    @property
    def outside_ms(self):
        """Time in the `with` blocks but outside every Function call (Python, optimizer, data)."""
        return self.wall_ms - self.ops_ms

    @property
    def rows(self):
        """One dict per op, largest total first: op, forward_calls, forward_ms, backward_calls,
        backward_ms, total_ms, share (of the wall time), largest_input (a shape tuple)."""
        rows = []
        for name, op in self.ops.items():
            total_ms = (op["forward_s"] + op["backward_s"]) * 1e3
            rows.append(dict(op=name, forward_calls=op["forward_calls"],
                             forward_ms=op["forward_s"] * 1e3, backward_calls=op["backward_calls"],
                             backward_ms=op["backward_s"] * 1e3, total_ms=total_ms,
                             share=total_ms / self.wall_ms if self.wall_ms else 0.0,
                             largest_input=op["largest_input"]))
        return sorted(rows, key=lambda row: -row["total_ms"])

    def table(self, steps=1):
        """The rows as text, then the time outside Functions and the wall time (which the total
        column adds up to). With steps=N, calls and times are per step (divided by N)."""
        title = f"per step (average of {steps} steps)" if steps != 1 else "in total"
        lines = [f"op profile, {title}; ms = milliseconds, share = of the wall time",
                 f"{'op':<20}{'calls':>7}{'forward ms':>12}{'calls':>7}{'backward ms':>13}"
                 f"{'total ms':>11}{'share':>8}  largest input"]
        for r in self.rows:
            shape = "x".join(map(str, r["largest_input"])) or "scalar"
            lines.append(f"{r['op']:<20}{r['forward_calls'] / steps:>7.4g}"
                         f"{r['forward_ms'] / steps:>12.2f}{r['backward_calls'] / steps:>7.4g}"
                         f"{r['backward_ms'] / steps:>13.2f}{r['total_ms'] / steps:>11.2f}"
                         f"{r['share']:>8.1%}  {shape}")
        outside = self.outside_ms / self.wall_ms if self.wall_ms else 0.0
        lines.append(f"{'outside Functions (Python between ops, optimizer, data)':<59}"
                     f"{self.outside_ms / steps:>11.2f}{outside:>8.1%}")
        lines.append(f"{'wall time':<59}{self.wall_ms / steps:>11.2f}{1:>8.1%}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def profile():
    """`with nn.profile() as prof:` times every Function call in the block (see the top)."""
    return Profile()


def profile_steps(step, steps, path=None, warmup=1):
    """Run step() `warmup` times untimed (first-call costs), then `steps` times under the
    profiler; print the per-step table, write it to `path` when given, and return the Profile.

    The recipe behind `--profile N` in the training scripts:
        nn.profile_steps(lambda: train_step(...), N, run.path("profile.txt"))
    """
    for _ in range(warmup):
        step()
    with profile() as prof:
        for _ in range(steps):
            step()
    text = prof.table(steps=steps)
    print(text, flush=True)
    if path is not None:
        with open(path, "w") as f:
            f.write(text + "\n")
    return prof
