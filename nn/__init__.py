"""nn: a small reverse-mode autograd and layer library on NumPy (CPU) or CuPy (GPU).

    import nn
    import nn.functional as F
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = nn.optim.Adam(model.parameters(), lr=1e-3)
    nn.save(model.state_dict(), "model.npz"); model.load_state_dict(nn.load("model.npz"))

`nn.manual_seed(seed)` seeds weight initialisation and Dropout; `nn.get_rng_state()` and
`nn.set_rng_state(state)` save and restore that random state (e.g. in a checkpoint).

For reading and watching it run (docs/stepping-through.md): `with nn.plain.on():` runs the plain
versions of the fast paths (nn/plain/), `with nn.profile() as prof:` times every op
(profiler.py), and `nn.draw_graph(loss, "graph.png")` draws the graph behind a tensor (graph.py).
"""
from . import backend
from .backend import DeviceError, gpu_available
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .tensor import Function, Tensor, grad, is_grad_enabled, no_grad, set_grad_enabled
from . import functional
from . import init
from .init import get_rng_state, manual_seed, set_rng_state
from .modules import (AdaIN, BatchNorm2d, ConvTranspose2d, Conv2d, Dropout, Flatten, Identity,
                      IncompatibleKeys, InstanceNorm2d, LeakyReLU, Linear, MaskedConv2d, Module,
                      ModuleDict, ModuleList, Parameter, ReLU, Sequential, Sigmoid, StateDictError,
                      Tanh)
from . import optim
from . import plain
from .profiler import Profile, profile, profile_steps
from .graph import draw_graph, to_dot
from .serialization import CheckpointError, load, save
