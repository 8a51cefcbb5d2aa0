"""Adam's update in four lines: the plain version of nn/optim.py Adam._update, which computes
the same with in-place operations and one scratch array on the CPU (no temporaries per step), and
as one fused kernel per parameter on the GPU (adam_kernel). tests/test_optim.py checks that they
agree."""
from ..backend import get_array_module


def adam_update(param, grad, state, group):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) on the arrays `param` (updated in place)
    and `grad`; `state` holds the step count t and the moving averages m and v, as in Adam:

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        m_hat, v_hat = m / (1 - beta1^t), v / (1 - beta2^t)        (undo the bias towards 0)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    """
    xp = get_array_module(param)
    beta1, beta2 = (float(b) for b in group["betas"])   # Python floats: float32 stays float32
    lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
    if not state:
        state.update(step=0, exp_avg=xp.zeros_like(param), exp_avg_sq=xp.zeros_like(param))
    state["step"] += 1
    t = state["step"]
    g = grad + weight_decay * param if weight_decay else grad     # L2 penalty, as in PyTorch

    m = state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * g
    v = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    param -= lr * m_hat / (xp.sqrt(v_hat) + eps)
