"""Primitive differentiable operations on Tensors.

Each op is a small Function: `forward` on raw arrays, `backward` with Tensor operations (so it
can be differentiated again). Read top to bottom: arithmetic, shapes and reductions, then
element-wise maths. Convolutions live in conv.py; layer-level compositions in functional.py.
"""
import numpy as np

from .backend import get_array_module
from .tensor import Function, Tensor, array_of


def as_tensor(value, like):
    """Turn a Python/NumPy scalar or array into a Tensor with `like`'s dtype and device.

    This keeps float32 float32: NumPy 2 would promote float32 * np.float64(2) to float64.
    (Arithmetic with a number does not come here: see is_number.)
    """
    if isinstance(value, Tensor):
        return value
    xp = get_array_module(like.data)
    return Tensor(xp.asarray(value, dtype=like.dtype))


def _as_tensors(a, b):
    """Both operands as Tensors: a number or array takes the other operand's dtype and device."""
    if not isinstance(a, Tensor):
        a = as_tensor(a, b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, a)
    return a, b


def is_number(value):
    """A Python or NumPy number. In x + 2, 0.5 * x, 1 - x, x / 3 ... a number stays a number on
    the host, held by the op (AddConstant, MulConstant, ...), and reaches the kernel as a scalar
    argument in x's dtype: no 0-d device array (a host-to-device copy) per number per call."""
    return isinstance(value, (int, float, np.integer, np.floating))


# ---- broadcasting -----------------------------------------------------------------------------

def sum_to(x, shape):
    """Sum `x` down to `shape`: undoes broadcasting (the gradient of broadcast_to)."""
    if x.shape == tuple(shape):
        return x
    return SumTo(shape)(x)


def broadcast_to(x, shape):
    if x.shape == tuple(shape):
        return x
    return BroadcastTo(shape)(x)


def _sum_to_array(x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1)
    y = x.sum(axis=axes, keepdims=True)
    return y.reshape(shape) if lead else y


class SumTo(Function):
    """y = x summed down to `shape` over the axes broadcasting added; gx = gy broadcast back."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return _sum_to_array(x, self.shape)

    def backward(self, gy):
        return broadcast_to(gy, self.x_shape)


class BroadcastTo(Function):
    """y = x repeated along new or size-1 axes up to `shape`; gx = gy summed back to x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.x_shape)


# ---- arithmetic: y = a + b, a - b, a * b, a / b, -a, a ** p, a @ b --------------------------------

class Add(Function):
    """y = a + b (broadcasting); ga = gy, gb = gy, each summed back to its input shape."""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (sum_to(gy, a.shape) if need_a else None,
                sum_to(gy, b.shape) if need_b else None)


class Sub(Function):
    """y = a - b (broadcasting); ga = gy, gb = -gy, each summed back to its input's shape."""

    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (sum_to(gy, a.shape) if need_a else None,
                sum_to(-gy, b.shape) if need_b else None)


class Mul(Function):
    """y = a * b (broadcasting); ga = gy * b, gb = gy * a, each summed back to its input's shape."""

    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (sum_to(gy * b, a.shape) if need_a else None,
                sum_to(gy * a, b.shape) if need_b else None)


class Div(Function):
    """y = a / b (broadcasting); ga = gy / b, gb = -gy * a / b^2, summed back to each shape."""

    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        ga = gy / b
        need_a, need_b = self.needs_input_grad
        return (sum_to(ga, a.shape) if need_a else None,
                sum_to(-ga * a / b, b.shape) if need_b else None)


class Neg(Function):
    """y = -x; gx = -gy."""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x ** p for a constant exponent p; dy/dx = p * x ** (p - 1)."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        return x ** x.dtype.type(self.exponent)

    def backward(self, gy):
        x, = self.inputs
        p = self.exponent
        return gy * p * x ** (p - 1)


class MatMul(Function):
    """y = a @ b for 2-D a (n, k) and b (k, m); ga = gy @ b^T, gb = a^T @ gy."""

    def forward(self, a, b):
        return a @ b

    def backward(self, gy):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (gy @ b.T if need_a else None,
                a.T @ gy if need_b else None)


# ---- arithmetic with a number c: y = x + c, c - x, x * c, x / c, c / x ---------------------------
# The same values as Add, Sub, Mul and Div with c as a 0-d array of x's dtype, bit for bit; c is
# cast to x's dtype (x.dtype.type(c)), so float32 stays float32 under NumPy 2's and CuPy's rules.

class WithConstant(Function):
    """A Function of one Tensor x and a number c, which it holds (self.constant)."""

    def __init__(self, constant):
        self.constant = constant


class AddConstant(WithConstant):
    """y = x + c; gx = gy."""

    def forward(self, x):
        return x + x.dtype.type(self.constant)

    def backward(self, gy):
        return gy


class SubtractConstant(WithConstant):
    """y = x - c; gx = gy."""

    def forward(self, x):
        return x - x.dtype.type(self.constant)

    def backward(self, gy):
        return gy


class SubtractFromConstant(WithConstant):
    """y = c - x; gx = -gy."""

    def forward(self, x):
        return x.dtype.type(self.constant) - x

    def backward(self, gy):
        return -gy


class MulConstant(WithConstant):
    """y = x * c; gx = gy * c."""

    def forward(self, x):
        return x * x.dtype.type(self.constant)

    def backward(self, gy):
        return MulConstant(self.constant)(gy)


class DivByConstant(WithConstant):
    """y = x / c; gx = gy / c."""

    def forward(self, x):
        return x / x.dtype.type(self.constant)

    def backward(self, gy):
        return DivByConstant(self.constant)(gy)


class DivideConstant(WithConstant):
    """y = c / x; gx = -(gy / x) * c / x (Div's gradient of its second input, in Div's order)."""

    def forward(self, x):
        return x.dtype.type(self.constant) / x

    def backward(self, gy):
        x, = self.inputs
        return MulConstant(self.constant)(-(gy / x)) / x


def _arithmetic(a, b, op, op_with_constant, constant_op):
    """op(a, b) on Tensors (an array operand becomes one); with a number: op_with_constant(c)(a)
    when b is the number c, constant_op(c)(b) when a is."""
    if is_number(b):
        return op_with_constant(b)(a)
    if is_number(a):
        return constant_op(a)(b)
    return op()(*_as_tensors(a, b))


def add(a, b): return _arithmetic(a, b, Add, AddConstant, AddConstant)         # c + x = x + c
def sub(a, b): return _arithmetic(a, b, Sub, SubtractConstant, SubtractFromConstant)
def mul(a, b): return _arithmetic(a, b, Mul, MulConstant, MulConstant)         # c * x = x * c
def div(a, b): return _arithmetic(a, b, Div, DivByConstant, DivideConstant)
def neg(x): return Neg()(x)
def pow(x, exponent): return Pow(exponent)(x)


def matmul(a, b):
    a, b = _as_tensors(a, b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul takes 2-D tensors, got shapes {a.shape} and {b.shape}")
    return MatMul()(a, b)


# ---- shapes ----------------------------------------------------------------------------------

class Reshape(Function):
    """y = x with a new shape (same elements, same order); gx = gy reshaped back."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return reshape(gy, self.x_shape)


class Transpose(Function):
    """Permute axes (reverse them when axes is None); the gradient permutes back."""

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return transpose(gy, None)
        inverse = tuple(int(i) for i in np.argsort(self.axes))
        return transpose(gy, inverse)


def reshape(x, shape):
    if x.shape == tuple(shape):
        return x
    return Reshape(tuple(shape))(x)


def transpose(x, axes=None):
    return Transpose(None if axes is None else tuple(axes))(x)


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice, np.integer)) for p in parts)


class GetItem(Function):
    """y = x[index], for basic (slices, ints) and integer-array indexing."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        return x[self.index]

    def backward(self, gy):
        x, = self.inputs
        return ScatterAdd(self.index, x.shape)(gy)


class ScatterAdd(Function):
    """y = zeros(shape); y[index] += g. The gradient of GetItem (repeated indices add up)."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def forward(self, g):
        xp = get_array_module(g)
        y = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic_index(self.index):
            y[self.index] = g  # basic indexing never selects an element twice
        else:
            xp.add.at(y, self.index, g)  # cupy.add.at on the GPU
        return y

    def backward(self, gy):
        return getitem(gy, self.index)


def getitem(x, index):
    index = tuple(map(array_of, index)) if isinstance(index, tuple) else array_of(index)
    return GetItem(index)(x)


# ---- reductions --------------------------------------------------------------------------------

def _normalise_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """y = sum of x over `axis`; each element gets the gradient of its sum: gx = gy broadcast."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        axes = _normalise_axis(self.axis, len(self.x_shape))
        gy = reshape(gy, _keepdims_shape(self.x_shape, axes))
        return broadcast_to(gy, self.x_shape)


class Max(Function):
    """y = max over `axis`; the gradient is shared equally among tied maxima (like torch.amax)."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        return x.max(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x, = self.inputs
        axes = _normalise_axis(self.axis, x.ndim)
        shape = _keepdims_shape(x.shape, axes)
        y = self.output().data.reshape(shape)
        is_max = (x.data == y).astype(x.dtype)
        share = Tensor(is_max / is_max.sum(axis=axes, keepdims=True))
        return broadcast_to(reshape(gy, shape), x.shape) * share


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over `axis` (all axes when None)."""
    count = 1
    for a in _normalise_axis(axis, x.ndim):
        count *= x.shape[a]
    return sum(x, axis, keepdims) * (1.0 / count)


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance mean((x - mean(x))^2) over `axis`; ddof=0 is the biased (population) variance,
    NumPy's default (PyTorch's `var` defaults to the unbiased ddof=1)."""
    count = 1
    for a in _normalise_axis(axis, x.ndim):
        count *= x.shape[a]
    centred = x - mean(x, axis, keepdims=True)
    return sum(centred * centred, axis, keepdims) * (1.0 / (count - ddof))


def max(x, axis=None, keepdims=False):
    return Max(axis, keepdims)(x)


# ---- element-wise maths ------------------------------------------------------------------------

class Exp(Function):
    """y = e^x; gx = gy * y."""

    def forward(self, x):
        return get_array_module(x).exp(x)

    def backward(self, gy):
        return gy * self.output()


class Log(Function):
    """y = ln x; gx = gy / x."""

    def forward(self, x):
        return get_array_module(x).log(x)

    def backward(self, gy):
        x, = self.inputs
        return gy / x


class Sqrt(Function):
    """y = sqrt(x); gx = gy / (2 y)."""

    def forward(self, x):
        return get_array_module(x).sqrt(x)

    def backward(self, gy):
        return gy / (2.0 * self.output())


def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)


# ---- selecting and joining (used by nn.functional) -----------------------------------------------

class Where(Function):
    """y = a where `condition` is true, else b (a constant boolean mask; broadcasting allowed).

    The gradient goes to a where the condition holds and to b elsewhere, summed back to each
    input's shape: ga = where(condition, gy, 0), gb = where(condition, 0, gy).
    """

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, gy):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        zero = as_tensor(0.0, gy)
        ga = sum_to(where(self.condition, gy, zero), a.shape) if need_a else None
        gb = sum_to(where(self.condition, zero, gy), b.shape) if need_b else None
        return ga, gb


def where(condition, a, b):
    """Element-wise choice between a and b; `condition` is a boolean array (not differentiated)."""
    a, b = _as_tensors(a, b)
    return Where(array_of(condition))(a, b)


class Concat(Function):
    """y = the inputs joined along `axis`; each input's gradient is its slice of gy."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return get_array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        for x in self.inputs:
            index = [slice(None)] * gy.ndim
            index[self.axis] = slice(start, start + x.shape[self.axis])
            grads.append(getitem(gy, tuple(index)))
            start += x.shape[self.axis]
        return tuple(grads)


def concat(tensors, axis=0):
    """Join tensors along an existing axis (torch.cat); all other sizes must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat needs at least one tensor")
    first = tensors[0]
    axis = int(axis) % first.ndim
    for t in tensors[1:]:
        others_match = t.ndim == first.ndim and all(
            a == b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != axis)
        if not others_match:
            raise ValueError(f"concat along axis {axis}: shapes {first.shape} and {t.shape} "
                             f"differ elsewhere")
    return Concat(axis)(*tensors)


class Pad(Function):
    """y = x surrounded by a border of constant `value`; widths[i] = (before, after) for axis i.

    The gradient is the centre of gy (the border is a constant): gx = gy[widths cropped off].
    """

    def __init__(self, widths, value):
        self.widths, self.value = widths, value

    def forward(self, x):
        xp = get_array_module(x)
        shape = tuple(n + before + after for n, (before, after) in zip(x.shape, self.widths))
        y = xp.full(shape, self.value, dtype=x.dtype)
        y[self._centre(x.shape)] = x
        return y

    def backward(self, gy):
        x, = self.inputs
        return getitem(gy, self._centre(x.shape))

    def _centre(self, x_shape):
        return tuple(slice(before, before + n) for n, (before, _) in zip(x_shape, self.widths))
