"""`Module` and `Parameter`: the containers every layer and model is built from.

A Module owns Parameters (trainable Tensors), buffers (non-trainable state such as batch-norm
running statistics) and sub-Modules. Assigning one as an attribute registers it, in order:

    self.conv = nn.Conv2d(1, 8, 3)        # a sub-module, named "conv"
    self.gain = nn.Parameter(np.ones(8))  # a parameter, named "gain"
    self.register_buffer("count", np.zeros(1))

so `parameters()` and `state_dict()` find everything by walking the tree, with dotted names
such as "conv.weight".

Moving or converting a module (`to("gpu")`, `double()`) replaces each Parameter's `.data` but
keeps the Parameter objects themselves, so an optimizer created before the move still updates
the module's parameters.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from ..backend import to_device, to_numpy
from ..tensor import Tensor, array_of


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad=True, found by `module.parameters()`."""

    def __init__(self, data, requires_grad=True):
        super().__init__(array_of(data), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(RuntimeError):
    """`load_state_dict` got a state with missing or unexpected keys, or a wrong shape."""


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_array(value):
    """The array inside a Tensor, or the value as an array (NumPy, or CuPy as it is)."""
    value = array_of(value)
    return value if hasattr(value, "dtype") else np.asarray(value)


def _convert(array, device, dtype):
    """`array` on `device` with `dtype` (float arrays only change dtype)."""
    if device is not None:
        array = to_device(array, device)
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    return array


class Module:
    """Base class of all layers and models. Subclasses call `super().__init__()` first and
    define `forward`; `module(x)` runs `forward(x)`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call super().__init__() in {type(self).__name__}.__init__ "
                                 f"before assigning {name!r}")
        if isinstance(value, Parameter):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif name in self._buffers:  # a new value for a buffer: stays a buffer
            value = value if value is None or isinstance(value, Tensor) else Tensor(value)
            self._buffers[name] = value
        elif name in self._parameters and value is not None:
            raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                            f"{type(self).__name__}: wrap it in nn.Parameter, or change "
                            f"{name}.data in place")
        else:
            self._forget(name)
        object.__setattr__(self, name, value)

    def _forget(self, name):
        """Drop `name` from the registries (it is being replaced by something else)."""
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._non_persistent.discard(name)

    def __delattr__(self, name):
        self._forget(name)
        object.__delattr__(self, name)

    def register_buffer(self, name, value, persistent=True):
        """Register non-trainable state (an array or Tensor, kept as a Tensor without grad).

        Buffers move with `to()`; persistent ones are saved in `state_dict()`.
        """
        if value is not None and not isinstance(value, Tensor):
            value = Tensor(value)
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, value)

    def register_parameter(self, name, parameter):
        """Register a Parameter (or None, for an absent optional one such as a bias)."""
        if parameter is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, parameter)

    # ---- walking the tree ---------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(name, module) for this module and every sub-module, depth first, each once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        yield from self._modules.items()

    def children(self):
        yield from self._modules.values()

    def named_parameters(self):
        """(dotted name, Parameter) in registration order, as PyTorch lists them: this module's
        own parameters first, then each sub-module's, depth first. A shared Parameter appears
        once."""
        seen = set()
        for module_name, module in self.named_modules():
            for name, parameter in module._parameters.items():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self):
        for _, parameter in self.named_parameters():
            yield parameter

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def buffers(self):
        for _, buffer in self.named_buffers():
            yield buffer

    def _state_tensors(self):
        """(name, Tensor) for everything saved in a state dict: parameters, persistent buffers."""
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, parameter in module._parameters.items():
                yield prefix + name, parameter
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    yield prefix + name, buffer

    # ---- state dicts --------------------------------------------------------------------------
    def state_dict(self):
        """An ordered dict: dotted name -> NumPy array copy, for parameters and buffers."""
        return OrderedDict((name, np.array(to_numpy(t.data), copy=True))
                           for name, t in self._state_tensors())

    def load_state_dict(self, state, strict=True):
        """Copy arrays from `state` (name -> array) into the parameters and buffers.

        Values are converted to each tensor's device and dtype. A shape mismatch is always an
        error; with strict=True so is a missing or an unexpected key (StateDictError, naming
        the keys and shapes). Returns IncompatibleKeys(missing_keys, unexpected_keys).
        """
        own = OrderedDict(self._state_tensors())
        values = {name: _as_array(value) for name, value in state.items()}
        missing = [name for name in own if name not in values]
        unexpected = [name for name in values if name not in own]
        where = f"load_state_dict for {type(self).__name__}"
        if strict and (missing or unexpected):
            problems = []
            if missing:
                problems.append("missing keys: " + ", ".join(
                    f"{name} (this module has shape {own[name].shape})" for name in missing))
            if unexpected:
                problems.append("unexpected keys: " + ", ".join(
                    f"{name} (the state has shape {values[name].shape})"
                    for name in unexpected))
            raise StateDictError(f"{where}: " + "; ".join(problems))
        for name, tensor in own.items():
            if name in values and tuple(values[name].shape) != tuple(tensor.shape):
                raise StateDictError(
                    f"{where}: size mismatch for {name}: the state has shape "
                    f"{tuple(values[name].shape)}, this module has shape {tuple(tensor.shape)}")
        for name, tensor in own.items():  # only copy once everything has been checked
            if name in values:
                tensor.data[...] = to_device(values[name], tensor.device)  # casts to the dtype
        return IncompatibleKeys(missing, unexpected)

    # ---- modes, devices, dtypes ----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active, batch norm uses batch statistics) for the whole tree."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move ("cpu" | "gpu") and/or convert float parameters and buffers, in place.

        The Parameter objects stay the same (only their `.data` and `.grad` change), so
        optimizers built earlier keep working. Returns self.
        """
        if device not in (None, "cpu", "gpu"):
            raise ValueError(f"unknown device {device!r}: use 'cpu' (NumPy) or 'gpu' (CuPy)")
        for module in self.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is None:
                    continue
                tensor.data = _convert(tensor.data, device, dtype)
                if tensor.grad is not None:
                    tensor.grad = Tensor(_convert(tensor.grad.data, device, dtype))
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def requires_grad_(self, requires_grad=True):
        """Switch gradients of all parameters on or off (e.g. freeze D while training G)."""
        for parameter in self.parameters():
            parameter.requires_grad = requires_grad
        return self

    def zero_grad(self):
        """Forget accumulated gradients (sets every parameter's `.grad` to None)."""
        for parameter in self.parameters():
            parameter.grad = None

    # ---- printing -----------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of this module's repr, e.g. "in_features=3, ..."."""
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + "\n" + "\n".join(lines) + "\n)"
