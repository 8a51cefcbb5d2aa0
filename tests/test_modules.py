"""Modules: gradient checks of every layer, PixelCNN mask causality, and the Module API."""
import numpy as np
import pytest

import nn
import nn.functional as F
from conftest import tensor


def random_input(device, *shape, seed=0):
    return tensor(np.random.default_rng(seed).standard_normal(shape), device, requires_grad=True)


def check_module(module, device, *inputs):
    """gradcheck a float64 copy of `module` with respect to its inputs and all its parameters."""
    module.double().to(device)
    params = list(module.parameters())
    assert all(p.dtype == np.float64 for p in params)
    assert nn.gradcheck(module, list(inputs), params=params)


# ---- a gradient check of every module ------------------------------------------------------------

def test_gradcheck_linear(device):
    check_module(nn.Linear(4, 3), device, random_input(device, 2, 4))


def test_gradcheck_conv2d_stride2_padding1_nonsquare(device):
    conv = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=2, padding=1)
    check_module(conv, device, random_input(device, 2, 2, 5, 4))


def test_gradcheck_conv_transpose2d_output_padding(device):
    deconv = nn.ConvTranspose2d(2, 3, kernel_size=3, stride=2, padding=1, output_padding=1)
    deconv.to(device)
    x = random_input(device, 2, 2, 3, 3)
    assert deconv(x.float()).shape == (2, 3, 6, 6)
    check_module(deconv, device, x)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_gradcheck_masked_conv2d(device, mask_type):
    check_module(nn.MaskedConv2d(2, 2, 3, mask_type), device, random_input(device, 2, 2, 4, 4))


def test_gradcheck_batchnorm2d_training(device):
    bn = nn.BatchNorm2d(3)
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    check_module(bn, device, random_input(device, 3, 3, 2, 3))


def test_gradcheck_batchnorm2d_eval(device):
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.data[...] = [0.5, -1.0]
    bn.running_var.data[...] = [2.0, 0.5]
    check_module(bn, device, random_input(device, 2, 2, 2, 2))


def test_gradcheck_instancenorm2d_affine(device):
    norm = nn.InstanceNorm2d(2, affine=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    check_module(norm, device, random_input(device, 2, 2, 3, 3))


def test_gradcheck_adain(device):
    adain = nn.AdaIN(channels=2, w_dim=3)
    x, w = random_input(device, 2, 2, 3, 3), random_input(device, 2, 3, seed=1)
    check_module(adain, device, x, w)


def test_gradcheck_dropout_with_fixed_seed(device):
    dropout = nn.Dropout(0.5)

    def fixed_mask_dropout(x):
        nn.manual_seed(0)  # the same mask at every evaluation
        return dropout(x)

    x = random_input(device, 4, 5)
    assert nn.gradcheck(fixed_mask_dropout, [x])
    y = fixed_mask_dropout(x).numpy()
    dropped = y == 0
    assert 0 < dropped.sum() < y.size
    np.testing.assert_allclose(y[~dropped], 2 * x.numpy()[~dropped])


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(),
                                        nn.Flatten(), nn.Identity()], ids=repr)
def test_gradcheck_activations(device, activation):
    values = np.random.default_rng(0).standard_normal((2, 3, 2))
    values[np.abs(values) < 1e-3] = 0.5  # keep clear of the kink of ReLU at 0
    check_module(activation, device, tensor(values, device, requires_grad=True))


def test_gradcheck_sequential(device):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.LeakyReLU(0.2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 2), nn.Tanh())
    check_module(model, device, random_input(device, 2, 1, 3, 3))


# ---- layer behaviour --------------------------------------------------------------------------

def test_layer_output_shapes_and_dtype():
    x = nn.Tensor(np.zeros((2, 3, 8, 8), dtype=np.float32))
    assert nn.Conv2d(3, 5, 4, stride=2, padding=1)(x).shape == (2, 5, 4, 4)
    assert nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1)(x).shape == (2, 5, 16, 16)
    assert nn.MaskedConv2d(3, 5, 7, "A")(x).shape == (2, 5, 8, 8)
    assert nn.Linear(3 * 8 * 8, 4)(nn.Flatten()(x)).shape == (2, 4)
    for layer in (nn.Conv2d(3, 5, 3), nn.BatchNorm2d(3), nn.AdaIN(3, 4), nn.Linear(3, 4)):
        assert all(p.dtype == np.float32 for p in layer.parameters())
    assert nn.BatchNorm2d(3)(x).dtype == np.float32


def test_sizes_strides_and_paddings_are_checked_where_they_are_given():
    assert nn.Conv2d(1, 2, (3, 5), stride=2, padding=(0, 1)).kernel_size == (3, 5)
    assert nn.ConvTranspose2d(1, 2, 4, stride=2, padding=1).stride == (2, 2)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.Conv2d(1, 2, 0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        nn.ConvTranspose2d(1, 2, 4, padding=-1)
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints, got \(1, 2, 3\)"):
        nn.MaskedConv2d(1, 2, 3, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair of ints, got 2.0"):
        F.avg_pool2d(nn.Tensor(np.zeros((1, 1, 4, 4))), 2.0)

def test_default_init_follows_pytorch_bounds():
    nn.manual_seed(0)
    linear = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    w = linear.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    assert np.abs(linear.bias.numpy()).max() <= bound
    conv = nn.Conv2d(8, 4, (3, 2))
    assert np.abs(conv.weight.numpy()).max() <= 1 / np.sqrt(8 * 3 * 2)
    deconv = nn.ConvTranspose2d(8, 4, 3)  # PyTorch's fan_in for (in, out, kh, kw) is out*kh*kw
    assert np.abs(deconv.bias.numpy()).max() <= 1 / np.sqrt(4 * 3 * 3)


def test_manual_seed_makes_models_repeatable():
    nn.manual_seed(3)
    a = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2))
    nn.manual_seed(3)
    b = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2))
    c = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
        assert not np.array_equal(pa.numpy(), pc.numpy())


def test_init_functions_keep_dtype_and_device(device):
    t = nn.Tensor(np.zeros((30, 20), dtype=np.float32)).to(device)
    array_before = t.data
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert t.data is array_before and t.dtype == np.float32 and t.device == device
    assert abs(t.numpy().std() - np.sqrt(2 / 20)) < 0.03
    nn.init.xavier_uniform_(t)
    assert np.abs(t.numpy()).max() <= np.sqrt(6 / 50)
    nn.init.constant_(t, 0.25)
    assert np.all(t.numpy() == 0.25)
    nn.init.uniform_(t, 2, 3)
    assert t.numpy().min() >= 2 and t.numpy().max() <= 3
    nn.init.zeros_(t)
    assert np.all(t.numpy() == 0)
    nn.init.ones_(t)
    assert np.all(t.numpy() == 1)


def test_adain_scale_starts_near_one():
    adain = nn.AdaIN(channels=4, w_dim=8)
    np.testing.assert_array_equal(adain.style.bias.numpy(), [1, 1, 1, 1, 0, 0, 0, 0])
    x = nn.Tensor(np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32))
    w = nn.Tensor(np.zeros((2, 8), dtype=np.float32))  # w = 0: the style is the bias alone
    y = adain(x, w).numpy()
    expected = (x.numpy() - x.numpy().mean(axis=(2, 3), keepdims=True)) / np.sqrt(
        x.numpy().var(axis=(2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_dropout_only_in_training_mode_and_seedable():
    x = nn.Tensor(np.ones((50, 40), dtype=np.float32))
    dropout = nn.Dropout(0.25)
    nn.manual_seed(1)
    first = dropout(x).numpy()
    nn.manual_seed(1)
    np.testing.assert_array_equal(dropout(x).numpy(), first)
    assert abs((first == 0).mean() - 0.25) < 0.03
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    dropout.eval()
    assert dropout(x) is x


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    dropout = nn.Dropout(0.5)
    x = nn.Tensor(np.ones((8, 8), dtype=np.float32))
    nn.manual_seed(5)
    dropout(x)
    nn.save({"rng": nn.get_rng_state()}, tmp_path / "rng.npz")
    expected = dropout(x).numpy()
    nn.manual_seed(0)
    nn.set_rng_state(nn.load(tmp_path / "rng.npz")["rng"])
    np.testing.assert_array_equal(dropout(x).numpy(), expected)


# ---- MaskedConv2d: PixelCNN masks and causality --------------------------------------------------

def test_pixelcnn_masks():
    np.testing.assert_array_equal(nn.MaskedConv2d(1, 1, 3, "A").mask.numpy(),
                                  [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(nn.MaskedConv2d(1, 1, 3, "B").mask.numpy(),
                                  [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(nn.MaskedConv2d(1, 1, (3, 5), "B").mask.numpy(),
                                  [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="mask_type"):
        nn.MaskedConv2d(1, 1, 3, "C")


def test_masked_weights_get_zero_gradient(device):
    conv = nn.MaskedConv2d(2, 3, 5, "A").to(device)
    conv.weight.data[...] = 1.0  # even if the stored masked weights are not zero
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    x = nn.Tensor(x).to(device)
    (conv(x) ** 2).sum().backward()
    grad = conv.weight.grad.numpy()
    mask = conv.mask.numpy()
    assert np.all(grad[:, :, mask == 0] == 0)
    assert np.all(grad[:, :, mask == 1] != 0)


def causal_outputs_unchanged(model, x, i, j, include_centre, device):
    """Does model(x)[:, :, i, j] stay the same when inputs after (i, j) (in raster order, all
    channels; and (i, j) itself when include_centre) are replaced by random values?"""
    h, w = x.shape[2:]
    later = np.arange(h * w).reshape(h, w) > i * w + j
    if include_centre:
        later[i, j] = True
    changed = x.copy()
    changed[:, :, later] = np.random.default_rng(i * w + j).standard_normal(
        (x.shape[0], x.shape[1], later.sum()))
    before = model(tensor(x, device)).numpy()[:, :, i, j]
    after = model(tensor(changed, device)).numpy()[:, :, i, j]
    return np.array_equal(before, after)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_causality(device, mask_type):
    nn.manual_seed(0)
    layer = nn.MaskedConv2d(3, 4, 5, mask_type).double().to(device)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    for i in range(6):
        for j in range(6):
            assert causal_outputs_unchanged(layer, x, i, j, mask_type == "A", device), (i, j)


def test_masked_conv_type_b_sees_centre_type_a_does_not(device):
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    for mask_type, sees_centre in (("A", False), ("B", True)):
        layer = nn.MaskedConv2d(2, 3, 3, mask_type).double().to(device)
        changed = x.copy()
        changed[0, 1, 2, 2] += 1.0  # one channel of the centre pixel
        before = layer(tensor(x, device)).numpy()[:, :, 2, 2]
        after = layer(tensor(changed, device)).numpy()[:, :, 2, 2]
        assert (not np.array_equal(before, after)) == sees_centre
        changed = x.copy()
        changed[0, 0, 2, 1] += 1.0  # the pixel to the left is always seen
        assert not np.array_equal(before, layer(tensor(changed, device)).numpy()[:, :, 2, 2])


def test_pixelcnn_stack_is_causal(device):
    """A first, B after: the whole stack still never sees the current pixel or later ones."""
    model = nn.Sequential(nn.MaskedConv2d(1, 4, 7, "A"), nn.ReLU(), nn.MaskedConv2d(4, 4, 3, "B"),
                          nn.ReLU(), nn.Conv2d(4, 2, 1)).double().to(device)
    x = np.random.default_rng(1).standard_normal((1, 1, 5, 5))
    for i, j in [(0, 0), (1, 3), (2, 2), (4, 0), (4, 4)]:
        assert causal_outputs_unchanged(model, x, i, j, True, device), (i, j)


# ---- the Module API ---------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.norm = nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(2 * 4 * 4, 3))
        self.gain = nn.Parameter(np.ones(3, dtype=np.float32))

    def forward(self, x):
        return self.head(nn.functional.relu(self.norm(self.conv(x)))) * self.gain


def net_input(seed=0):
    return nn.Tensor(np.random.default_rng(seed).standard_normal((4, 1, 4, 4)).astype(np.float32))


def test_parameters_in_registration_order():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    # as in PyTorch: a module's own parameters first, then each child's, in registration order
    assert names == ["gain", "conv.weight", "conv.bias", "norm.weight", "norm.bias",
                     "head.2.weight", "head.2.bias"]
    assert [p for p in net.parameters()] == [p for _, p in net.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [name for name, _ in net.named_buffers()] == ["norm.running_mean", "norm.running_var"]
    assert [type(m).__name__ for m in net.children()] == ["Conv2d", "BatchNorm2d", "Sequential"]
    assert len(list(net.modules())) == 7


def test_shared_parameter_listed_once():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    assert len(list(net.parameters())) == 3


def test_assigning_a_tensor_to_a_parameter_name_is_an_error():
    linear = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="weight"):
        linear.weight = linear.weight * 2
    linear.bias = None  # an optional parameter may be removed
    assert [name for name, _ in linear.named_parameters()] == ["weight"]


def test_state_dict_round_trip_includes_batchnorm_buffers():
    nn.manual_seed(0)
    net = Net()
    for seed in range(3):  # training steps move the running statistics away from 0 and 1
        net(net_input(seed))
    state = net.state_dict()
    assert list(state) == [name for name, _ in net._state_tensors()]
    assert "norm.running_mean" in state and "norm.running_var" in state
    assert not np.allclose(state["norm.running_mean"], 0)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    net.state_dict()["conv.bias"][...] = 100  # a copy: the model is not changed
    assert np.abs(net.conv.bias.numpy()).max() < 100

    fresh = Net()
    fresh.load_state_dict(state)
    net.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(net_input(9)).numpy(), net(net_input(9)).numpy())
    np.testing.assert_array_equal(fresh.norm.running_var.numpy(), state["norm.running_var"])


def test_load_state_dict_missing_key_names_it():
    state = Net().state_dict()
    del state["norm.running_var"]
    with pytest.raises(nn.StateDictError, match=r"missing keys: norm\.running_var \(this module "
                                                r"has shape \(2,\)\)"):
        Net().load_state_dict(state)


def test_load_state_dict_unexpected_key_names_it():
    state = Net().state_dict()
    state["extra.weight"] = np.zeros((5, 6))
    with pytest.raises(nn.StateDictError, match=r"unexpected keys: extra\.weight .*\(5, 6\)"):
        Net().load_state_dict(state)
    missing, unexpected = Net().load_state_dict(state, strict=False)
    assert missing == [] and unexpected == ["extra.weight"]


def test_load_state_dict_shape_mismatch_names_key_and_both_shapes():
    net = Net()
    before = net.conv.bias.numpy().copy()
    state = net.state_dict()
    state["conv.bias"] = state["conv.bias"] + 1
    state["head.2.weight"] = np.zeros((3, 31), dtype=np.float32)
    with pytest.raises(nn.StateDictError, match=r"head\.2\.weight: the state has shape \(3, 31\), "
                                                r"this module has shape \(3, 32\)"):
        net.load_state_dict(state)
    with pytest.raises(nn.StateDictError, match="size mismatch"):
        net.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(net.conv.bias.numpy(), before)  # nothing half-loaded


def test_load_state_dict_converts_to_module_dtype_and_device(device):
    net = Net().to(device)
    state = {k: v.astype(np.float64) for k, v in Net().state_dict().items()}
    net.load_state_dict(state)
    for name, t in net._state_tensors():
        assert t.dtype == np.float32 and t.device == device
        np.testing.assert_allclose(t.numpy(), state[name].astype(np.float32))


def test_train_eval_propagates():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert not net.head[1].training
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.norm.training


def test_to_dtype_keeps_parameter_identity_and_optimizer():
    net = Net()
    params_before = list(net.parameters())
    optimizer = nn.optim.SGD(net.parameters(), lr=0.1)
    net(net_input()).mean().backward()
    net.double()
    assert all(p.grad.dtype == np.float64 for p in net.parameters())  # gradients follow
    net.zero_grad()
    assert [id(p) for p in net.parameters()] == [id(p) for p in params_before]
    assert all(t.dtype == np.float64 for _, t in net._state_tensors())
    out = net(net_input().double())
    assert out.dtype == np.float64
    out.mean().backward()
    old_gain = net.gain.numpy().copy()
    optimizer.step()  # the optimizer built before .double() updates the converted parameters
    np.testing.assert_allclose(net.gain.numpy(), old_gain - 0.1 * net.gain.grad.numpy())
    assert net.float() is net and net.gain.dtype == np.float32


def test_to_device_moves_parameters_and_buffers(device):
    net = Net()
    gain = net.gain
    assert net.to(device) is net and net.gain is gain
    assert all(t.device == device for _, t in net._state_tensors())
    out = net(net_input().to(device))
    assert out.device == device and out.dtype == np.float32
    net.to("cpu")
    assert all(t.device == "cpu" for _, t in net._state_tensors())
    with pytest.raises(ValueError, match="cuda"):
        net.to("cuda")


def test_zero_grad_sets_grads_to_none():
    net = Net()
    net(net_input()).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_masked_conv_mask_is_not_saved_but_moves(device):
    conv = nn.MaskedConv2d(1, 2, 3, "A")
    assert list(conv.state_dict()) == ["weight", "bias"]
    conv.double().to(device)
    assert conv.mask.device == device and conv.mask.dtype == np.float64


def test_repr_reads_like_pytorch():
    text = repr(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm2d(4)))
    assert text == ("Sequential(\n"
                    "  (0): Linear(in_features=3, out_features=4, bias=True)\n"
                    "  (1): ReLU()\n"
                    "  (2): BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True)\n"
                    ")")
    assert repr(nn.Parameter(np.zeros(2))).startswith("Parameter containing:")


def test_module_list_and_forgotten_super_init():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    layers.append(nn.ReLU())
    assert len(layers) == 3 and len(list(layers.parameters())) == 4

    class Broken(nn.Module):
        def __init__(self):
            self.linear = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_module_dict_indexes_by_key_and_names_the_state_by_it():
    blocks = nn.ModuleDict({8: nn.Linear(2, 3), 16: nn.Linear(3, 4)})
    blocks[32] = nn.Linear(4, 5)
    assert list(blocks) == ["8", "16", "32"] and len(blocks) == 3
    assert blocks[16] is blocks["16"] and 16 in blocks and 64 not in blocks
    assert blocks[16].out_features == 4
    assert list(blocks.state_dict()) == ["8.weight", "8.bias", "16.weight", "16.bias",
                                         "32.weight", "32.bias"]
    assert [p.shape for p in blocks.parameters()][::2] == [(3, 2), (4, 3), (5, 4)]
    with pytest.raises(KeyError):
        blocks[64]

def test_deepcopy_gives_an_independent_module():
    """copy.deepcopy is how a generator's moving average (EMA copy) is made."""
    import copy
    net = Net()
    twin = copy.deepcopy(net)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert twin.conv.weight is twin._modules["conv"]._parameters["weight"]
    twin.conv.weight.data[...] = 0
    assert np.abs(net.conv.weight.numpy()).max() > 0


def test_requires_grad_freezes_parameters():
    net = Net()
    assert net.requires_grad_(False) is net
    assert not any(p.requires_grad for p in net.parameters())
    x = net_input()
    x.requires_grad = True
    net(x).mean().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    net.requires_grad_()
    assert all(p.requires_grad for p in net.parameters())
