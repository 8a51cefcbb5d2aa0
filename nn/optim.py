"""Optimizers: SGD (with momentum) and Adam, with PyTorch's update rules and parameter groups.

    optimizer = nn.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer = nn.optim.Adam([{"params": mapping.parameters(), "lr": 1e-5},
                               {"params": synthesis.parameters()}], lr=1e-3)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    optimizer.param_groups[0]["lr"] = 1e-4          # change a learning rate on the fly

`step()` updates each parameter's `.data` in place with raw array operations (no graph, no
float64 temporaries: float32 parameters stay float32). Parameters whose `.grad` is None are
skipped, and their step count does not advance.

`update_average(average, model, beta)` keeps an exponential moving average of a model's weights
(the generator average of StyleGAN and of train_dcgan.py), like torch.optim.swa_utils.

On the GPU each parameter's update is ONE kernel: the element-wise formula (adam_kernel,
average_kernel) fused by cupy.fuse, instead of a kernel per operation (Adam was 13 launches per
parameter, the average 3). On the CPU, NumPy runs Adam in place with one scratch array (no
temporaries), the same numbers; the plain version is nn/plain/optim.py.

State is kept per parameter; `state_dict()` gives plain numbers and NumPy arrays, so it can be
saved with nn.save, and `load_state_dict()` resumes training exactly. Moving the model with
`model.to(...)` keeps its Parameter objects, so an optimizer made before the move keeps working;
its state follows the parameters to their new device and dtype on the next step.
"""
import math

import numpy as np

from . import plain
from .backend import device_of, elementwise, get_array_module, to_device, to_numpy

def _match(array, like):
    """`array` on `like`'s device with `like`'s dtype (a copy only when needed)."""
    array = to_device(array, device_of(like))
    return array if array.dtype == like.dtype else array.astype(like.dtype)


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad and state (de)serialisation.

    `param_groups` is a list of dicts, each with "params" (a list of Parameters) and the
    hyperparameters (missing ones filled from the defaults). `state[i]` (i = position of the
    parameter over all groups) is a dict of numbers and arrays.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        for group in params:
            group = dict(group)
            group["params"] = list(group["params"])
            for name, value in self.defaults.items():
                group.setdefault(name, value)
            self.param_groups.append(group)
        seen = set()
        for p in self._all_params():
            if id(p) in seen:
                raise ValueError("a parameter appears twice in the optimizer's parameter groups")
            seen.add(id(p))
        self.state = {}  # parameter index -> dict of step count and arrays

    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        """Forget accumulated gradients (sets every parameter's `.grad` to None)."""
        for p in self._all_params():
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, group by group."""
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state.setdefault(index, {})
                    for key, value in state.items():  # follow model.to(...) moves and casts
                        if hasattr(value, "dtype"):
                            state[key] = _match(value, p.data)
                    self._update(p.data, _match(p.grad.data, p.data), state, group)
                index += 1

    def _update(self, param, grad, state, group):
        raise NotImplementedError

    # ---- saving and resuming ----------------------------------------------------------------
    def state_dict(self):
        """{"state": {"0": {...}, ...}, "param_groups": [{hyperparameters, "params": [0, 1]}]}.

        Keys are strings and arrays are NumPy copies, so nn.save can store it as it is.
        """
        state = {str(i): {key: np.array(to_numpy(value), copy=True) if hasattr(value, "dtype")
                          else value for key, value in s.items()}
                 for i, s in self.state.items()}
        groups, index = [], 0
        for group in self.param_groups:
            saved = {key: (list(value) if isinstance(value, tuple) else value)
                     for key, value in group.items() if key != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and per-parameter state saved by `state_dict()`.

        The optimizer must have been built over the same parameters (same group sizes and
        shapes); arrays are converted to each parameter's device and dtype.
        """
        groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in groups]
        if sizes != saved_sizes:
            raise ValueError(f"optimizer state has parameter groups of sizes {saved_sizes}, this "
                             f"optimizer has {sizes}")
        for group, saved in zip(self.param_groups, groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) else value
        params = self._all_params()
        self.state = {}
        for key, saved in state_dict["state"].items():
            p = params[int(key)]
            state = {}
            for name, value in saved.items():
                if hasattr(value, "shape") and value.ndim == 0:
                    value = value.item()  # a step count saved as a 0-d array
                if hasattr(value, "shape"):
                    if value.shape != p.shape:
                        raise ValueError(f"optimizer state {name!r} of parameter {key} has shape "
                                         f"{value.shape}, the parameter has shape {p.shape}")
                    value = _match(np.array(value, copy=True), p.data)
                state[name] = value
            self.state[int(key)] = state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} parameters, {options}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (PyTorch's rule):

        g = grad + weight_decay * p
        buf = g                            (first step)
        buf = momentum * buf + g           (later steps)
        p = p - lr * buf                   (p = p - lr * g when momentum = 0)
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update(self, param, grad, state, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grad = grad + weight_decay * param  # a new array: p.grad is left untouched
        if momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += grad
            grad = state["momentum_buffer"]
        scratch = get_array_module(param).multiply(grad, lr)
        param -= scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), exactly as torch.optim.Adam computes it. Per parameter, at step t:

        g = grad + weight_decay * p                        (L2 penalty, as in PyTorch's Adam)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    m and v start at zero; t counts the steps this parameter has actually taken.
    On the GPU the update is one fused kernel per parameter (adam_kernel; a second one,
    decayed_gradient, with weight decay); on the CPU it runs in place with one scratch array.
    Plain version (the update in four lines): nn/plain/optim.py adam_update.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Adam settings lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _update(self, param, grad, state, group):
        if plain.enabled:                              # with nn.plain.on()
            return plain.adam_update(param, grad, state, group)
        xp = get_array_module(param)
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
        state["step"] += 1
        step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if group["weight_decay"] != 0:                 # a new array: p.grad is left untouched
            grad = elementwise(xp, decayed_gradient)(grad, param,
                                                     param.dtype.type(group["weight_decay"]))
        step_size = group["lr"] / (1.0 - beta1 ** step)
        bias_correction2_root = math.sqrt(1.0 - beta2 ** step)
        if xp is not np:                           # the GPU: one kernel, the scalars in p's dtype
            scalar = param.dtype.type
            elementwise(xp, adam_kernel)(param, grad, m, v, scalar(beta1), scalar(1.0 - beta1),
                                         scalar(beta2), scalar(1.0 - beta2), scalar(step_size),
                                         scalar(bias_correction2_root), scalar(group["eps"]))
            return
        scratch = xp.multiply(grad, 1.0 - beta1)   # m = beta1 * m + (1 - beta1) * g
        m *= beta1
        m += scratch
        xp.multiply(grad, grad, out=scratch)       # v = beta2 * v + (1 - beta2) * g^2
        scratch *= 1.0 - beta2
        v *= beta2
        v += scratch
        xp.sqrt(v, out=scratch)                    # denominator sqrt(v) / sqrt(1 - beta2^t) + eps
        scratch /= bias_correction2_root
        scratch += group["eps"]
        xp.divide(m, scratch, out=scratch)         # p -= step_size * m / denominator
        scratch *= step_size
        param -= scratch


def adam_kernel(param, grad, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                bias_correction2_root, eps):
    """Adam's update of one parameter, element by element, in place (Adam's docstring):

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - step_size * m / (sqrt(v) / bias_correction2_root + eps)
            with step_size = lr / (1 - beta1^t), bias_correction2_root = sqrt(1 - beta2^t)

    The operations of Adam._update's CPU path in the same order, so on NumPy it gives the same
    bits. On CuPy, elementwise(cupy, adam_kernel) runs it as one kernel; the scalars come in the
    arrays' dtype (CuPy compiles one kernel per set of dtypes, and never promotes to float64).
    """
    xp = get_array_module(param)
    m *= beta1
    m += grad * one_minus_beta1
    v *= beta2
    v += grad * grad * one_minus_beta2
    param -= m / (xp.sqrt(v) / bias_correction2_root + eps) * step_size


def decayed_gradient(grad, param, weight_decay):
    """g = grad + weight_decay * p (Adam's L2 penalty), one kernel on the GPU."""
    return grad + weight_decay * param


def average_kernel(average, value, weight):
    """average = average + (value - average) * weight, in place: one step of a moving average
    (one kernel on the GPU: elementwise(cupy, average_kernel))."""
    average += (value - average) * weight


def update_average(average, model, beta):
    """Exponential moving average of weights, for a copy of `model` used to draw samples
    (Karras et al. 2018, section 4.1; Yazici et al. 2019, "The unusual effectiveness of averaging
    in GAN training"):   theta_avg <- beta * theta_avg + (1 - beta) * theta
                                    = theta_avg + (theta - theta_avg) * (1 - beta),
    one kernel per parameter on the GPU (average_kernel).

    Buffers (batch norm's running statistics) are copied from `model` as they are: they describe
    the activations of the trained weights, which the averaged weights stay close to.
    """
    for p_avg, p in zip(average.parameters(), model.parameters()):
        update = elementwise(get_array_module(p.data), average_kernel)
        update(p_avg.data, p.data, p.data.dtype.type(1.0 - beta))
    for b_avg, b in zip(average.buffers(), model.buffers()):
        b_avg.data[...] = b.data
