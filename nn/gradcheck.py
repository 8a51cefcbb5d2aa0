"""Checking gradients against finite differences.

For a function f with outputs y and a fixed random upstream gradient u, backpropagation gives
    g_analytic = d<u, f(x)>/dx.
Central differences give, element by element,
    g_numeric[i] = (<u, f(x + eps e_i)> - <u, f(x - eps e_i)>) / (2 eps).
The two must agree for every input and every parameter. A random u (rather than summing the
outputs) makes sure each output element gets its own weight, so a gradient that mixes up output
positions cannot pass by accident.

`gradgradcheck` applies the same test to the gradient itself: x -> d<u, f(x)>/dx, computed with
create_graph=True, is a function of x whose own gradient is checked by finite differences.
"""
import numpy as np

from .backend import get_array_module, to_numpy
from .tensor import Tensor, grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _as_list(values):
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _check_float64(tensors):
    for i, t in enumerate(tensors):
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 tensors (float32 finite differences are "
                            f"too noisy), but tensor {i} of shape {t.shape} is {t.dtype}; convert "
                            f"inputs with .double() and modules with module.double()")


def _random_like(tensor, rng):
    xp = get_array_module(tensor.data)
    return Tensor(xp.asarray(rng.standard_normal(tensor.shape)))


def _weighted_sum(outputs, upstream):
    return float(np.sum([float((y.data * u.data).sum()) for y, u in zip(outputs, upstream)]))


def gradcheck(fn, inputs, params=(), eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check backpropagated gradients of `fn(*inputs)` against central differences.

    inputs: Tensors passed to fn; those with requires_grad are checked.
    params: extra Tensors fn uses (e.g. `module.parameters()`), checked too.
    Returns True, or raises GradcheckError naming the worst element.
    """
    inputs = _as_list(inputs)
    targets = [t for t in inputs + list(params) if t.requires_grad]
    if not targets:
        raise ValueError("gradcheck: nothing to check; give inputs or params requires_grad=True")
    _check_float64(targets)
    for t in targets:  # perturbing works on a flat view, so make the data contiguous
        t.data = get_array_module(t.data).ascontiguousarray(t.data)

    rng = np.random.default_rng(seed)
    outputs = _as_list(fn(*inputs))
    upstream = [_random_like(y, rng) for y in outputs]
    analytic = grad(outputs, targets, upstream, allow_unused=True)

    def weighted_output():  # graph recording stays on: fn may itself differentiate (gradgradcheck)
        return _weighted_sum(_as_list(fn(*inputs)), upstream)

    for number, (t, g) in enumerate(zip(targets, analytic)):
        g = np.zeros(t.shape) if g is None else to_numpy(g.data)
        numeric = np.zeros(t.size)
        flat = t.data.reshape(-1)
        for i in range(t.size):
            original = float(flat[i])
            flat[i] = original + eps
            plus = weighted_output()
            flat[i] = original - eps
            minus = weighted_output()
            flat[i] = original
            numeric[i] = (plus - minus) / (2 * eps)
        _compare(g.reshape(-1), numeric, t.shape, number, len(inputs), atol, rtol)
    return True


def _compare(analytic, numeric, shape, number, n_inputs, atol, rtol):
    error = np.abs(analytic - numeric)
    allowed = atol + rtol * np.abs(numeric)
    if np.all(error <= allowed):
        return
    worst = int(np.argmax(error - allowed))
    where = np.unravel_index(worst, shape) if shape else ()
    name = f"input {number}" if number < n_inputs else f"parameter {number - n_inputs}"
    raise GradcheckError(
        f"gradient of {name} (shape {tuple(shape)}) is wrong at index {tuple(int(i) for i in where)}:"
        f" analytic {analytic[worst]:.8g}, numeric {numeric[worst]:.8g}, |difference| "
        f"{error[worst]:.3g} > allowed {allowed[worst]:.3g} (atol {atol}, rtol {rtol}); "
        f"{int(np.sum(error > allowed))} of {error.size} elements disagree")


def gradgradcheck(fn, inputs, params=(), eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check second derivatives: the first-order gradient (built with create_graph=True) is
    treated as a function of the inputs and parameters and checked with `gradcheck`."""
    inputs = _as_list(inputs)
    targets = [t for t in inputs + list(params) if t.requires_grad]
    rng = np.random.default_rng(seed + 1)
    upstream = [_random_like(y, rng) for y in _as_list(fn(*inputs))]

    def first_order_gradient(*xs):
        outputs = _as_list(fn(*xs))
        grads = grad(outputs, targets, upstream, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_order_gradient, inputs, params, eps, atol, rtol, seed)
