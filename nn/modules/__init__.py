"""Layers and models: Module, Parameter and the built-in layers."""
from .layers import (ConvTranspose2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear,
                     MaskedConv2d, ModuleDict, ModuleList, ReLU, Sequential, Sigmoid, Tanh,
                     pixelcnn_mask)
from .module import IncompatibleKeys, Module, Parameter, StateDictError
from .norms import AdaIN, BatchNorm2d, InstanceNorm2d
