"""The plain versions of nn's fast paths: the same numbers, computed the way the formulas read.

    with nn.plain.on():                 # inside: conv2d, conv_transpose2d, batch_norm,
        losses = train_step(G, D, ...)  # instance_norm and every Adam step run the plain code

| fast (what nn runs by default)                      | plain (what it computes)               |
| --- | --- |
| nn/conv.py conv2d: im2col in blocks on channels-last | nn/plain/conv.py conv2d: a sum over    |
|   memory, hand-written backward                     |   kernel offsets of strided slices     |
| nn/conv.py conv_transpose2d: gather or scatter      | nn/plain/conv.py conv_transpose2d      |
| nn/functional.py batch_norm, instance_norm: fused   | nn/plain/norms.py: mean, variance and  |
|   Functions with hand-written backward formulas     |   division as separate primitive ops   |
| nn/optim.py Adam._update: in place, one scratch     | nn/plain/optim.py adam_update: 4 lines |

The plain functions take the same arguments as the fast ones and can be called directly
(`nn.plain.conv2d(x, w, stride=2, padding=1)`). Each is a composition of the primitive ops in
nn/ops.py, so its gradients and second derivatives come from those ops and nothing else.
tests/test_plain.py checks that every plain version equals its fast version (values, gradients,
second derivatives) and that a whole DCGAN training step gives the same losses and weights.
"""
import contextlib

enabled = False   # the fast functions check this once per call: `if plain.enabled: ...`


@contextlib.contextmanager
def on(switch=True):
    """`with nn.plain.on():` runs the plain versions inside the block (`on(False)`: the fast)."""
    global enabled
    previous, enabled = enabled, switch
    try:
        yield
    finally:
        enabled = previous


from .conv import conv2d, conv_transpose2d  # noqa: E402
from .norms import batch_norm, instance_norm  # noqa: E402
from .optim import adam_update  # noqa: E402
