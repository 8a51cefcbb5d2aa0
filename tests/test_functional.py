"""nn.functional: gradient checks (first and second order), forward values against NumPy
references, batch-norm running statistics, dropout seeding, float32 preservation, errors."""
import numpy as np
import pytest

import nn
import nn.functional as F
from conftest import tensor
from nn.backend import to_device


def randn(rng, shape, device, requires_grad=True):
    return tensor(rng.standard_normal(shape), device, requires_grad)


def away_from_zero(rng, shape, device):
    """Values with |x| >= 0.2, so finite differences never straddle a kink at 0."""
    values = rng.standard_normal(shape)
    values = np.sign(values) * (0.2 + np.abs(values))
    return tensor(values, device, requires_grad=True)


def positive(rng, shape, device):
    return tensor(0.5 + rng.random(shape), device, requires_grad=True)


def labels(rng, shape, classes, device):
    return to_device(rng.integers(0, classes, size=shape), device)


# ---- first-order gradient checks of every op ----------------------------------------------------

def test_linear_gradcheck(device, rng):
    x, w, b = randn(rng, (3, 4), device), randn(rng, (5, 4), device), randn(rng, (5,), device)
    assert nn.gradcheck(F.linear, [x, w, b])
    x3 = randn(rng, (2, 3, 4), device)
    assert nn.gradcheck(lambda x, w: F.linear(x, w), [x3, w])


@pytest.mark.parametrize("op", [F.relu, lambda x: F.leaky_relu(x, 0.2), F.leaky_relu, F.tanh,
                                F.sigmoid, F.softplus, lambda x: F.softplus(x, beta=2.0), F.exp],
                         ids=["relu", "leaky_relu_0.2", "leaky_relu", "tanh", "sigmoid",
                              "softplus", "softplus_beta2", "exp"])
def test_elementwise_gradcheck(device, rng, op):
    assert nn.gradcheck(op, [away_from_zero(rng, (2, 3, 2, 2), device)])


@pytest.mark.parametrize("op", [F.log, F.sqrt], ids=["log", "sqrt"])
def test_positive_domain_gradcheck(device, rng, op):
    assert nn.gradcheck(op, [positive(rng, (2, 3, 2), device)])


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_batch_norm_training_gradcheck(device, rng, shape):
    x, w, b = randn(rng, shape, device), randn(rng, (3,), device), randn(rng, (3,), device)

    def fn(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True)
    assert nn.gradcheck(fn, [x, w, b])
    assert nn.gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


def test_batch_norm_eval_gradcheck(device, rng):
    x, w, b = randn(rng, (2, 3, 2, 2), device), randn(rng, (3,), device), randn(rng, (3,), device)
    mean = to_device(rng.standard_normal(3), device)
    var = to_device(0.5 + rng.random(3), device)
    assert nn.gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b), [x, w, b])


def test_instance_norm_gradcheck(device, rng):
    x, w, b = randn(rng, (2, 3, 2, 3), device), randn(rng, (3,), device), randn(rng, (3,), device)
    assert nn.gradcheck(lambda x, w, b: F.instance_norm(x, w, b), [x, w, b])
    assert nn.gradcheck(F.instance_norm, [x])


def test_adain_gradcheck(device, rng):
    x = randn(rng, (2, 3, 2, 3), device)
    scale, bias = randn(rng, (2, 3), device), randn(rng, (2, 3), device)
    assert nn.gradcheck(F.adain, [x, scale, bias])


def test_dropout_gradcheck_with_fixed_seed(device, rng):
    x = randn(rng, (3, 4, 2), device)
    assert nn.gradcheck(lambda x: F.dropout(x, 0.4, rng=7), [x])


@pytest.mark.parametrize("factor", [2, 3])
def test_upsample_nearest_gradcheck(device, rng, factor):
    assert nn.gradcheck(lambda x: F.upsample_nearest(x, factor), [randn(rng, (2, 3, 2, 2), device)])


@pytest.mark.parametrize("kernel, stride, shape", [(2, None, (2, 3, 4, 4)), (2, None, (2, 2, 5, 3)),
                                                   (3, 1, (2, 2, 4, 4)), ((2, 1), (1, 2), (2, 2, 3, 4))])
def test_avg_pool2d_gradcheck(device, rng, kernel, stride, shape):
    assert nn.gradcheck(lambda x: F.avg_pool2d(x, kernel, stride), [randn(rng, shape, device)])


@pytest.mark.parametrize("padding", [(1, 2), (1, 0, 2, 1)])
def test_pad_gradcheck(device, rng, padding):
    assert nn.gradcheck(lambda x: F.pad(x, padding, value=0.5), [randn(rng, (2, 2, 2, 3), device)])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_and_stack_gradcheck(device, rng, axis):
    a, b, c = randn(rng, (2, 3, 2), device), randn(rng, (2, 3, 2), device), randn(rng, (2, 3, 2), device)
    assert nn.gradcheck(lambda a, b, c: F.concat([a, b, c], axis), [a, b, c])
    assert nn.gradcheck(lambda a, b, c: F.stack([a, b, c], axis), [a, b, c])


def test_where_gradcheck_with_broadcasting(device, rng):
    a, b = randn(rng, (3, 4), device), randn(rng, (1, 4), device)
    condition = to_device(rng.random((3, 4)) > 0.5, device)
    assert nn.gradcheck(lambda a, b: F.where(condition, a, b), [a, b])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_gradcheck(device, rng, reduction):
    x, t = randn(rng, (3, 2, 2), device), randn(rng, (3, 2, 2), device)
    assert nn.gradcheck(lambda x, t: F.mse_loss(x, t, reduction), [x, t])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_gradcheck(device, rng, reduction):
    x, t = randn(rng, (3, 4), device), tensor(rng.random((3, 4)), device, requires_grad=True)
    assert nn.gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction), [x, t])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_cross_entropy_gradcheck(device, rng, shape, reduction):
    logits = randn(rng, shape, device)
    target = labels(rng, (shape[0],) + shape[2:], shape[1], device)
    assert nn.gradcheck(lambda x: F.cross_entropy(x, target, reduction), [logits])


@pytest.mark.parametrize("op", [F.log_softmax, F.softmax, lambda x: F.log_softmax(x, axis=-1)],
                         ids=["log_softmax", "softmax", "log_softmax_last_axis"])
def test_softmax_gradcheck(device, rng, op):
    assert nn.gradcheck(op, [randn(rng, (2, 3, 2), device)])


def test_pixel_norm_gradcheck(device, rng):
    assert nn.gradcheck(F.pixel_norm, [randn(rng, (2, 3, 2, 2), device)])
    assert nn.gradcheck(F.pixel_norm, [randn(rng, (3, 4), device)])


@pytest.mark.parametrize("batch, group_size", [(4, 2), (4, 4), (2, 4)])
def test_minibatch_stddev_gradcheck(device, rng, batch, group_size):
    x = randn(rng, (batch, 2, 2, 2), device)
    assert nn.gradcheck(lambda x: F.minibatch_stddev(x, group_size), [x])


# ---- second-order checks for everything a discriminator (and its gradient penalty) uses ----------

SECOND_ORDER_OPS = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "relu": F.relu,
    "softplus": F.softplus,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "avg_pool2d_overlapping": lambda x: F.avg_pool2d(x, 3, 1),
    "upsample_nearest": lambda x: F.upsample_nearest(x, 2),
    "mean_var_sqrt": lambda x: (x.var(axis=(2, 3)) + 0.5).sqrt() * x.mean(axis=1).sum(),
    "pixel_norm": F.pixel_norm,
    "minibatch_stddev": lambda x: F.minibatch_stddev(x, 2),
    "instance_norm": F.instance_norm,
    "batch_norm_training": lambda x: F.batch_norm(x, None, None, training=True),
    "log_softmax": F.log_softmax,
    "pad": lambda x: F.pad(x, (1, 0, 0, 1)),
}


def assert_create_graph_gives_the_same_gradient(fn, inputs, rng):
    """Fused ops rebuild their backward from primitives under create_graph=True; that
    first-order gradient must equal the plain one (gradgradcheck alone would not notice)."""
    y = fn(*inputs)
    upstream = nn.Tensor(rng.standard_normal(y.shape)).to(inputs[0].device)
    plain = nn.grad(y, inputs, upstream)
    recorded = nn.grad(fn(*inputs), inputs, upstream, create_graph=True)
    for g_plain, g_recorded in zip(plain, recorded):
        np.testing.assert_allclose(g_recorded.numpy(), g_plain.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_OPS))
def test_second_order(device, rng, name):
    x = away_from_zero(rng, (4, 2, 4, 4), device)
    assert nn.gradgradcheck(SECOND_ORDER_OPS[name], [x])
    assert_create_graph_gives_the_same_gradient(SECOND_ORDER_OPS[name], [x], rng)


def test_linear_gradgradcheck(device, rng):
    x, w, b = randn(rng, (3, 4), device), randn(rng, (2, 4), device), randn(rng, (2,), device)
    assert nn.gradgradcheck(F.linear, [x, w, b])


def test_normalisation_with_parameters_gradgradcheck(device, rng):
    x = randn(rng, (2, 3, 2, 2), device)
    scale, bias = randn(rng, (2, 3), device), randn(rng, (2, 3), device)
    w, b = randn(rng, (3,), device), randn(rng, (3,), device)
    assert nn.gradgradcheck(F.adain, [x, scale, bias])
    assert nn.gradgradcheck(lambda x, w, b: F.instance_norm(x, w, b), [x, w, b])
    assert nn.gradgradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                            [x, w, b])
    assert_create_graph_gives_the_same_gradient(F.adain, [x, scale, bias], rng)


@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
def test_losses_gradgradcheck(device, rng, loss):
    x = randn(rng, (3, 4), device)
    if loss == "bce":
        t = tensor(rng.random((3, 4)), device)
        assert nn.gradgradcheck(lambda x: F.binary_cross_entropy_with_logits(x, t), [x])
    else:
        target = labels(rng, (3,), 4, device)
        assert nn.gradgradcheck(lambda x: F.cross_entropy(x, target), [x])


def test_gradient_penalty_of_mlp_discriminator(device, rng):
    """WGAN-GP style: penalty = mean_n |dD/dx_n|^2 with D = linear -> leaky_relu -> linear;
    its gradient with respect to the weights (a second derivative) against finite differences."""
    x = randn(rng, (3, 4), device)
    w1, b1 = randn(rng, (5, 4), device), randn(rng, (5,), device)
    w2, b2 = randn(rng, (1, 5), device), randn(rng, (1,), device)

    def penalty(w1, b1, w2, b2):
        score = F.linear(F.leaky_relu(F.linear(x, w1, b1), 0.2), w2, b2)
        gx, = nn.grad(score.sum(), [x], create_graph=True)
        return ((gx * gx).sum(axis=1) - 1.0).mean()  # scalar, differentiable in the weights

    assert nn.gradcheck(penalty, [w1, b1, w2, b2])


def test_r1_penalty_through_stylegan_discriminator_ops(device, rng):
    """R1 = |d softplus(-D(x)) / dx|^2 for a tiny D made of per-channel affine, leaky_relu,
    avg_pool2d, minibatch_stddev, pixel_norm and linear; checked in all the weights."""
    x = randn(rng, (4, 2, 4, 4), device)
    a, c = randn(rng, (2,), device), randn(rng, (2,), device)
    w, b = randn(rng, (1, 12), device), randn(rng, (1,), device)

    def r1(a, c, w, b):
        h = F.leaky_relu(x * a.reshape(1, 2, 1, 1) + c.reshape(1, 2, 1, 1), 0.2)
        h = F.minibatch_stddev(F.avg_pool2d(h, 2), group_size=2)
        score = F.linear(F.pixel_norm(h).reshape(4, 12), w, b)
        gx, = nn.grad(F.softplus(-score).sum(), [x], create_graph=True)
        return (gx * gx).sum() * 5.0

    assert nn.gradcheck(r1, [a, c, w, b])


# ---- batch-norm running statistics -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2)])
def test_batch_norm_updates_running_stats_with_unbiased_variance(device, rng, shape):
    x = tensor(rng.standard_normal(shape) * 2 + 1, device)
    running_mean = to_device(rng.standard_normal(3), device)
    running_var = nn.Tensor(to_device(0.5 + rng.random(3), device))  # Tensors work too
    mean_before, var_before = running_mean.copy(), running_var.numpy().copy()
    y = F.batch_norm(x, running_mean, running_var, training=True, momentum=0.3)

    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    data = x.numpy()
    expected_mean = 0.7 * nn.backend.to_numpy(mean_before) + 0.3 * data.mean(axis=axes)
    expected_var = 0.7 * var_before + 0.3 * data.var(axis=axes, ddof=1)
    np.testing.assert_allclose(nn.backend.to_numpy(running_mean), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var.numpy(), expected_var, rtol=1e-12)
    # training output normalised with the BIASED batch variance
    view = (1, 3) + (1,) * (len(shape) - 2)
    normalised = (data - data.mean(axis=axes).reshape(view)) / np.sqrt(
        data.var(axis=axes).reshape(view) + 1e-5)
    np.testing.assert_allclose(y.numpy(), normalised, rtol=1e-10, atol=1e-12)


def test_batch_norm_eval_uses_running_stats_and_leaves_them(device, rng):
    x = tensor(rng.standard_normal((3, 2, 2, 2)), device)
    w, b = tensor([2.0, -1.0], device), tensor([0.5, 0.0], device)
    running_mean = to_device(np.array([0.3, -0.2]), device)
    running_var = to_device(np.array([1.5, 0.25]), device)
    y = F.batch_norm(x, running_mean, running_var, w, b, training=False, eps=1e-3)
    expected = ((x.numpy() - np.array([0.3, -0.2]).reshape(1, 2, 1, 1))
                / np.sqrt(np.array([1.5, 0.25]).reshape(1, 2, 1, 1) + 1e-3)
                * np.array([2.0, -1.0]).reshape(1, 2, 1, 1) + np.array([0.5, 0]).reshape(1, 2, 1, 1))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10)
    np.testing.assert_array_equal(nn.backend.to_numpy(running_mean), [0.3, -0.2])


# ---- forward values against NumPy references ---------------------------------------------------

def test_activations_forward(device):
    values = np.array([-1000.0, -3.0, -0.5, 0.5, 2.0, 1000.0])
    x = tensor(values, device)
    np.testing.assert_allclose(F.relu(x).numpy(), np.maximum(values, 0))
    np.testing.assert_allclose(F.leaky_relu(x, 0.2).numpy(), np.where(values > 0, values, 0.2 * values))
    np.testing.assert_allclose(F.sigmoid(x).numpy(), 1 / (1 + np.exp(-np.clip(values, -700, 700))),
                               atol=1e-15)
    np.testing.assert_allclose(F.tanh(x).numpy(), np.tanh(values))
    np.testing.assert_allclose(F.softplus(x).numpy(), np.logaddexp(0, values))
    np.testing.assert_allclose(F.softplus(x, beta=2).numpy(), np.logaddexp(0, 2 * values) / 2)


def test_stable_losses_on_extreme_logits(device):
    logits = nn.Tensor(np.array([[-500.0, 0.0, 500.0]], dtype=np.float32)).to(device)
    target = nn.Tensor(np.array([[1.0, 0.5, 0.0]], dtype=np.float32)).to(device)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").numpy()
    np.testing.assert_allclose(bce, [[500.0, np.log(2), 500.0]], rtol=1e-6)
    ce = F.cross_entropy(logits, to_device(np.array([0]), device)).item()
    assert np.isfinite(ce) and abs(ce - 1000.0) < 1e-2
    assert np.allclose(F.softmax(logits).numpy(), [[0, 0, 1]])


def test_cross_entropy_matches_numpy_and_averages_over_positions(device, rng):
    logits = rng.standard_normal((2, 4, 3, 2))
    target = rng.integers(0, 4, size=(2, 3, 2))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(log_probs, target[:, None], axis=1)[:, 0]
    x = tensor(logits, device)
    t = to_device(target, device)
    np.testing.assert_allclose(F.cross_entropy(x, t).item(), -picked.mean())
    np.testing.assert_allclose(F.cross_entropy(x, t, "sum").item(), -picked.sum())
    np.testing.assert_allclose(F.cross_entropy(x, t, "none").numpy(), -picked)


def test_resampling_forward(device, rng):
    data = rng.standard_normal((2, 3, 4, 6))
    x = tensor(data, device)
    np.testing.assert_array_equal(F.upsample_nearest(x, 2).numpy(), data.repeat(2, 2).repeat(2, 3))
    blocks = data.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(F.avg_pool2d(x, 2).numpy(), blocks)
    overlapping = np.array([[data[:, :, i:i + 3, j:j + 3].mean(axis=(2, 3)) for j in range(0, 4, 2)]
                            for i in range(2)]).transpose(2, 3, 0, 1)
    np.testing.assert_allclose(F.avg_pool2d(x, 3, stride=(1, 2)).numpy(), overlapping)


def test_pad_concat_stack_where_forward(device, rng):
    data = rng.standard_normal((1, 2, 2, 3))
    x = tensor(data, device)
    expected = np.pad(data, ((0, 0), (0, 0), (3, 4), (1, 2)), constant_values=-1.0)
    np.testing.assert_array_equal(F.pad(x, (1, 2, 3, 4), value=-1.0).numpy(), expected)
    np.testing.assert_array_equal(F.cat([x, x * 2.0], axis=1).numpy(),
                                  np.concatenate([data, data * 2], axis=1))
    np.testing.assert_array_equal(F.stack([x, x], axis=-1).numpy(), np.stack([data, data], axis=-1))
    condition = data > 0
    np.testing.assert_array_equal(F.where(to_device(condition, device), x, 0.0).numpy(),
                                  np.where(condition, data, 0.0))


def test_normalisation_forward(device, rng):
    data = rng.standard_normal((2, 3, 2, 2)) * 3 + 1
    x = tensor(data, device)
    mean, var = data.mean(axis=(2, 3), keepdims=True), data.var(axis=(2, 3), keepdims=True)
    normalised = (data - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(F.instance_norm(x).numpy(), normalised, rtol=1e-10)
    scale, bias = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    styled = F.adain(x, tensor(scale, device), tensor(bias, device))
    np.testing.assert_allclose(styled.numpy(), scale[:, :, None, None] * normalised
                               + bias[:, :, None, None], rtol=1e-10)
    rms = np.sqrt((data ** 2).mean(axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(F.pixel_norm(x).numpy(), data / rms, rtol=1e-10)


def test_minibatch_stddev_forward(device, rng):
    data = rng.standard_normal((4, 3, 2, 2))
    y = F.minibatch_stddev(tensor(data, device), group_size=2).numpy()
    assert y.shape == (4, 4, 2, 2)
    np.testing.assert_array_equal(y[:, :3], data)
    for n in range(4):  # groups: samples {0, 2} and {1, 3}
        group = data[[n % 2, n % 2 + 2]]
        expected = np.sqrt(group.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[n, 3], expected, rtol=1e-12)


def test_linear_forward(device, rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    y = F.linear(tensor(x, device), tensor(w, device), tensor(b, device))
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-12)


# ---- dropout -----------------------------------------------------------------------------------

def test_dropout_is_reproducible_and_inverted(device, rng):
    x = tensor(np.ones((100, 100)), device)
    a, b = F.dropout(x, 0.3, rng=5).numpy(), F.dropout(x, 0.3, rng=5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, F.dropout(x, 0.3, rng=6).numpy())
    assert set(np.unique(a)) == {0.0, 1 / 0.7}
    assert abs((a == 0).mean() - 0.3) < 0.03
    assert F.dropout(x, 0.3, rng=np.random.default_rng(1)).device == device   # on both devices
    nn.manual_seed(2)
    c = F.dropout(x, 0.3).numpy()                           # rng=None: nn.init's shared generator
    nn.manual_seed(2)
    np.testing.assert_array_equal(F.dropout(x, 0.3).numpy(), c)


def test_dropout_off_in_eval_and_for_p_zero(device, rng):
    x = randn(rng, (3, 4), device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


# ---- float32 stays float32 ---------------------------------------------------------------------

def _labels32(shape, classes, device):
    return to_device(np.arange(int(np.prod(shape))).reshape(shape) % classes, device)


def _running_stats(x):
    """Running mean 0 and variance 1 for 2 channels, on x's device (as BatchNorm2d's buffers)."""
    return (nn.backend.to_device(np.zeros(2, np.float32), x.device),
            nn.backend.to_device(np.ones(2, np.float32), x.device))


FLOAT32_CASES = {
    "linear": (lambda x, w, b: F.linear(x, w, b), [(3, 4), (2, 4), (2,)]),
    "relu": (F.relu, [(2, 3)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [(2, 3)]),
    "tanh": (F.tanh, [(2, 3)]),
    "sigmoid": (F.sigmoid, [(2, 3)]),
    "softplus": (lambda x: F.softplus(x, beta=2), [(2, 3)]),
    "exp": (F.exp, [(2, 3)]),
    "log": (lambda x: F.log(x * x + 1.0), [(2, 3)]),
    "sqrt": (lambda x: F.sqrt(x * x + 1.0), [(2, 3)]),
    "batch_norm_train": (lambda x, w, b: F.batch_norm(
        x, *_running_stats(x), w, b, training=True), [(3, 2, 2, 2), (2,), (2,)]),
    "batch_norm_eval": (lambda x, w, b: F.batch_norm(
        x, *_running_stats(x), w, b), [(3, 2, 2, 2), (2,), (2,)]),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, w, b), [(2, 2, 2, 2), (2,), (2,)]),
    "adain": (F.adain, [(2, 2, 2, 2), (2, 2), (2, 2)]),
    "dropout": (lambda x: F.dropout(x, 0.5, rng=0), [(4, 4)]),
    "upsample_nearest": (F.upsample_nearest, [(2, 2, 2, 2)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [(2, 2, 4, 4)]),
    "avg_pool2d_overlapping": (lambda x: F.avg_pool2d(x, 3, 1), [(2, 2, 4, 4)]),
    "pad": (lambda x: F.pad(x, (1, 1, 2, 0), value=1.5), [(2, 2, 2, 2)]),
    "concat": (lambda a, b: F.concat([a, b], 1), [(2, 3), (2, 2)]),
    "stack": (lambda a, b: F.stack([a, b]), [(2, 3), (2, 3)]),
    "where": (lambda a, b: F.where(a.data > 0, a, b), [(2, 3), (2, 3)]),
    "mse_loss": (F.mse_loss, [(2, 3), (2, 3)]),
    "bce_with_logits": (F.binary_cross_entropy_with_logits, [(2, 3), (2, 3)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, _labels32((2,), 3, x.device)), [(2, 3)]),
    "cross_entropy_2d": (lambda x: F.cross_entropy(x, _labels32((2, 2, 2), 3, x.device)),
                         [(2, 3, 2, 2)]),
    "log_softmax": (F.log_softmax, [(2, 3)]),
    "softmax": (F.softmax, [(2, 3)]),
    "pixel_norm": (F.pixel_norm, [(2, 3, 2, 2)]),
    "minibatch_stddev": (F.minibatch_stddev, [(4, 2, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_in_float32_out_and_grads(device, rng, name):
    fn, shapes = FLOAT32_CASES[name]
    inputs = [nn.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True).to(device)
              for s in shapes]
    y = fn(*inputs)
    assert y.dtype == np.float32
    y.backward(nn.Tensor(rng.standard_normal(y.shape).astype(np.float32)).to(device))
    for x in inputs:
        assert x.grad is not None and x.grad.dtype == np.float32, name


def test_float32_second_order_gradients_stay_float32(device, rng):
    x = nn.Tensor(rng.standard_normal((4, 2, 2, 2)).astype(np.float32), requires_grad=True).to(device)
    score = F.softplus(F.minibatch_stddev(F.instance_norm(F.leaky_relu(x, 0.2)))).sum()
    gx, = nn.grad(score, [x], create_graph=True)
    assert gx.dtype == np.float32
    penalty = (gx * gx).sum()
    penalty.backward()
    assert penalty.dtype == np.float32 and x.grad.dtype == np.float32


# ---- clear errors for bad arguments ------------------------------------------------------------

def test_bad_arguments_raise_value_errors(device, rng):
    x = randn(rng, (2, 3, 4, 4), device)
    bad_calls = [
        lambda: F.linear(randn(rng, (2, 3), device), randn(rng, (4, 5), device)),
        lambda: F.linear(randn(rng, (2, 3), device), randn(rng, (4, 3), device), randn(rng, (3,), device)),
        lambda: F.mse_loss(x, randn(rng, (2, 3, 4, 1), device)),
        lambda: F.mse_loss(x, x, reduction="average"),
        lambda: F.binary_cross_entropy_with_logits(x, randn(rng, (2, 3), device)),
        lambda: F.cross_entropy(x, labels(rng, (2, 4), 3, device)),
        lambda: F.dropout(x, 1.0),
        lambda: F.dropout(x, -0.1),
        lambda: F.pad(x, (1, 2, 3)),
        lambda: F.pad(x, (-1, 0)),
        lambda: F.upsample_nearest(x, 1.5),
        lambda: F.avg_pool2d(x, 5),
        lambda: F.minibatch_stddev(randn(rng, (6, 3, 2, 2), device), 4),
        lambda: F.adain(x, randn(rng, (2, 4), device), randn(rng, (2, 3), device)),
        lambda: F.batch_norm(x, None, None, randn(rng, (4,), device), training=True),
        lambda: F.batch_norm(randn(rng, (1, 3), device), None, None, training=True),
        lambda: F.batch_norm(x, None, None, training=False),
        lambda: F.instance_norm(randn(rng, (2, 3), device)),
        lambda: F.concat([x, randn(rng, (2, 3, 4, 5), device)], axis=1),
        lambda: F.stack([x, randn(rng, (2, 3, 4, 5), device)]),
    ]
    for number, call in enumerate(bad_calls):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"bad call {number} did not raise")


def test_cross_entropy_targets_out_of_range(device, rng):
    """A ValueError on the CPU; a nan loss on the GPU, where checking would wait for the GPU."""
    x = randn(rng, (2, 3, 4, 4), device)
    for shift in (3, -3):
        bad = labels(rng, (2, 4, 4), 3, device) + shift
        if device == "cpu":
            with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
                F.cross_entropy(x, bad)
        else:
            assert np.isnan(F.cross_entropy(x, bad).item())
            losses = F.cross_entropy(x, bad, reduction="none").numpy()
            assert np.isnan(losses).all()
    good = labels(rng, (2, 4, 4), 3, device)
    assert np.isfinite(F.cross_entropy(x, good).item())


def test_cross_entropy_rejects_targets_on_another_device(device, rng):
    if device != "gpu":
        pytest.skip("needs the GPU: a NumPy target for CuPy logits")
    logits = randn(rng, (2, 3), device)
    with pytest.raises(ValueError, match="target is on cpu"):
        F.cross_entropy(logits, np.array([0, 1]))
