"""nn: a small reverse-mode autograd and layer library on NumPy (CPU) or CuPy (GPU)."""
from .backend import DeviceError, gpu_available
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .tensor import Function, Tensor, grad, is_grad_enabled, no_grad, set_grad_enabled
