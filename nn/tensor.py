"""The autograd engine: `Tensor`, `Function`, and reverse-mode differentiation.

A Tensor wraps a NumPy or CuPy array (`.data`). Every operation on Tensors is a `Function`:
its `forward` works on raw arrays, and when any input requires a gradient the Function records
itself as the output's `creator`, remembering its inputs. That chain of creators is the graph.

`backward()` is micrograd's loop: list the Functions in topological order (each after every
Function that uses its output), then walk that list once, handing each Function the gradients of
its outputs and adding what its `backward` returns into the gradients of its inputs. Every
`Function.backward` is written with Tensor operations (not raw arrays), so when
`create_graph=True` the backward pass is itself recorded and can be differentiated again: that is
how gradient penalties (WGAN-GP, R1) get second derivatives.

`nn.grad(outputs, inputs)` walks the same loop, but only along paths from `inputs` to `outputs`
(see `depends_on`): R1's d D(x)/dx never computes D's weight gradients.

`with nn.profile():` (profiler.py) times every forward and backward call: Function.__call__ and
the backward loop hand the call to `_profiler.time` instead of making it themselves; otherwise
each costs one check of `_profiler` per call.
"""
import contextlib
import weakref

import numpy as np

from .backend import device_of, get_array_module, to_device, to_numpy

_grad_enabled = True
_profiler = None          # while `with nn.profile()` runs: the Profile timing calls (profiler.py)


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def set_grad_enabled(mode):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, mode
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """`with nn.no_grad():` runs operations without recording the graph (inference, updates)."""
    return set_grad_enabled(False)


def _as_float_array(data):
    """Float arrays keep their dtype; anything else (ints, bools, lists) becomes float32."""
    if not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    return data


class Tensor:
    """An array with an optional gradient. `.data` is a numpy or cupy ndarray."""

    __array_priority__ = 1000  # make `ndarray * Tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            raise TypeError("nn.Tensor(t) got a Tensor; use t.detach() or t.data instead")
        self.data = _as_float_array(data)
        self.requires_grad = requires_grad
        self.grad = None
        self.creator = None  # the Function that produced this tensor (None for leaves)

    # ---- facts about the array -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self.creator is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        text = repr(to_numpy(self.data)).replace("array(", "tensor(")
        extra = f", device='gpu'" if self.device == "gpu" else ""
        extra += ", requires_grad=True" if self.requires_grad else ""
        return text[:-1] + extra + ")" if extra else text

    def numpy(self):
        """The values as a NumPy array (copied from the GPU when needed)."""
        return to_numpy(self.data)

    def item(self):
        return self.numpy().item()

    def detach(self):
        """The same values, cut off from the graph."""
        return Tensor(self.data)

    def to(self, device=None, dtype=None):
        """A copy on another device ("cpu" or "gpu") and/or with another float dtype.

        The result is a new leaf; use it for data and for parameters before building a graph.
        """
        data = self.data if device is None else to_device(self.data, device)
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        if data is self.data:
            return self
        return Tensor(data, requires_grad=self.requires_grad)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # ---- differentiation ---------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) * gradient into the `.grad` of every leaf that requires it.

        `gradient` defaults to 1 for a one-element tensor, as in PyTorch. `retain_graph` is
        accepted for familiarity: this engine never frees the graph, so the same graph can
        always be walked again.
        """
        if gradient is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element output, not shape "
                    f"{self.shape}; reduce it first (e.g. .mean()) or pass gradient=...")
            gradient = Tensor(get_array_module(self.data).ones_like(self.data))
        grads = _backpropagate([self], [gradient], create_graph)
        for tensor, g in grads.items():
            if tensor.is_leaf and tensor.requires_grad:
                tensor.grad = g if tensor.grad is None else tensor.grad + g

    # ---- operators (implemented in ops.py) ---------------------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __neg__(self): return ops.neg(self)
    def __getitem__(self, index): return ops.getitem(self, index)

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, other): return self.data < array_of(other)
    def __le__(self, other): return self.data <= array_of(other)
    def __gt__(self, other): return self.data > array_of(other)
    def __ge__(self, other): return self.data >= array_of(other)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return ops.var(self, axis, keepdims, ddof)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.transpose(self, axes or None)

    @property
    def T(self):
        return ops.transpose(self, None)


def array_of(value):
    """The array inside a Tensor; any other value (an array, a number, an index) as it is."""
    return value.data if isinstance(value, Tensor) else value


class Function:
    """One differentiable operation. Subclasses define `forward` and `backward`.

    forward(*arrays) -> array or tuple of arrays     (raw numpy/cupy arrays in and out)
    backward(*grad_outputs) -> one gradient per input (Tensors, or None for "no gradient")

    Inside `backward`, `self.inputs` are the input Tensors and `self.output(i)` the i-th output
    Tensor, so backward formulas are written with differentiable Tensor operations.
    `self.needs_input_grad[i]` tells whether input i's gradient is wanted; backward may return
    None for the others and skip that work (e.g. no gradient for a constant mask, or D's weight
    gradients inside an R1 penalty). The backward loop sets it just before it calls `backward`:
    an input's gradient is wanted when the input requires grad and, inside nn.grad, when it lies
    on a path from nn.grad's inputs (see depends_on).
    """

    def __call__(self, *inputs):
        inputs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        self._check_one_device(inputs)
        arrays = [x.data for x in inputs]
        if _profiler is None:
            outputs = self.forward(*arrays)
        else:                                   # nn.profile(): the same call between two clocks
            outputs = _profiler.time(self, "forward", self.forward, arrays)
        single = not isinstance(outputs, tuple)
        outputs = [Tensor(y) for y in ((outputs,) if single else outputs)]
        if _grad_enabled and any(x.requires_grad for x in inputs):
            self.inputs = inputs
            self.needs_input_grad = tuple(x.requires_grad for x in inputs)
            self._outputs = [weakref.ref(y) for y in outputs]  # weak: no reference cycles
            for y in outputs:
                y.requires_grad = True
                y.creator = self
        return outputs[0] if single else tuple(outputs)

    def output(self, i=0):
        return self._outputs[i]()

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    def _check_one_device(self, inputs):
        devices = [x.device for x in inputs]
        if len(set(devices)) > 1:
            names = ", ".join(f"input {i} on {d}" for i, d in enumerate(devices))
            raise RuntimeError(
                f"{type(self).__name__} got tensors on two devices ({names}); move them to one "
                f"device first with .to('cpu') or .to('gpu')")


def topological_order(outputs):
    """The Functions that `outputs` came from, each listed after every Function that uses its
    output (consumers before producers), so that a Function's output gradients are complete by
    the time it is reached. Iterative depth-first search: deep graphs cannot overflow the stack.
    """
    order, visited = [], set()
    stack = [(y.creator, False) for y in outputs if y.creator is not None]
    while stack:
        function, inputs_done = stack.pop()
        if inputs_done:
            order.append(function)      # post-order: after every Function it depends on
            continue
        if function in visited:
            continue
        visited.add(function)
        stack.append((function, True))
        for x in function.inputs:
            if x.creator is not None and x.creator not in visited:
                stack.append((x.creator, False))
    return order[::-1]


def _backpropagate(outputs, grad_outputs, create_graph, wanted=None):
    """The backward loop. Returns {tensor: d(outputs)/d(tensor)} for every tensor reached.

    For each Function, consumers first: collect the gradients of its outputs (zeros for an
    output nothing downstream used), tell it which of its inputs need a gradient
    (`needs_input_grad`: those that require grad and, when `wanted` is given, whose id is in
    it), call its `backward`, and add each input's share to that input's gradient. With
    create_graph the loop itself is recorded, so the gradients are differentiable.
    """
    grads = {}  # Tensor -> its gradient so far (Tensors hash by identity)
    for y, g in zip(outputs, grad_outputs):
        g = g if isinstance(g, Tensor) else Tensor(g)
        if g.shape != y.shape:
            raise ValueError(f"gradient of shape {g.shape} given for an output of shape {y.shape}")
        grads[y] = grads[y] + g if y in grads else g
    with set_grad_enabled(create_graph):
        for function in topological_order(outputs):
            outputs_of_f = [ref() for ref in function._outputs]   # None: output no longer exists
            gys = [grads.get(y) if y is not None else None for y in outputs_of_f]
            needed = tuple(x.requires_grad and (wanted is None or id(x) in wanted)
                           for x in function.inputs)
            if all(g is None for g in gys) or not any(needed):
                continue
            gys = [g if g is not None else _zeros_like_output(function, i)
                   for i, g in enumerate(gys)]
            function.needs_input_grad = needed
            if _profiler is None:
                gxs = function.backward(*gys)
            else:                                           # nn.profile(): time this call
                gxs = _profiler.time(function, "backward", function.backward, gys)
            gxs = gxs if isinstance(gxs, (tuple, list)) else (gxs,)
            for x, gx, need in zip(function.inputs, gxs, needed):
                if need and gx is not None:
                    grads[x] = grads[x] + gx if x in grads else gx
    if not create_graph:
        grads = {tensor: Tensor(g.data) for tensor, g in grads.items()}   # plain leaves, no history
    return grads


def depends_on(inputs, outputs):
    """ids of the tensors between `inputs` and `outputs` whose value depends on an input (the
    inputs included): the only tensors whose gradient nn.grad(outputs, inputs) needs.

    One pass over the Functions in producer-first order: a Function's outputs depend on an input
    when any of its own inputs does.
    """
    depending = {id(x) for x in inputs}
    for function in reversed(topological_order(outputs)):   # producers before their consumers
        if any(id(x) in depending for x in function.inputs):
            depending.update(id(ref()) for ref in function._outputs if ref() is not None)
    return depending


def _zeros_like_output(function, i):
    y = function.output(i)
    return Tensor(get_array_module(y.data).zeros_like(y.data))


def grad(outputs, inputs, grad_outputs=None, create_graph=False, allow_unused=False):
    """Gradients of `outputs` with respect to `inputs`, like `torch.autograd.grad`.

    Returns a tuple with one Tensor per input; `.grad` fields are left untouched. With
    create_graph=True the returned gradients are themselves differentiable (gradient penalties).
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    filled = []
    for y, g in zip(outputs, grad_outputs):
        if g is None:
            if y.size != 1:
                raise RuntimeError(f"grad_outputs is needed for an output of shape {y.shape}")
            g = Tensor(get_array_module(y.data).ones_like(y.data))
        filled.append(g)
    for x in inputs:
        if not x.requires_grad:
            raise RuntimeError("nn.grad: an input does not require grad; create it with "
                               "requires_grad=True")
    found = _backpropagate(outputs, filled, create_graph, wanted=depends_on(inputs, outputs))
    result = []
    for i, x in enumerate(inputs):
        if x in found:
            result.append(found[x])
        elif allow_unused:
            result.append(None)
        else:
            raise RuntimeError(f"nn.grad: input {i} was not used to compute the outputs "
                               "(pass allow_unused=True to get None for it)")
    return tuple(result)


from . import ops  # noqa: E402  (ops.py needs Tensor and Function, defined above)
