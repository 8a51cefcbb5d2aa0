"""Gated PixelCNN: causality (no look-ahead, no blind spot), sampling, the row-cropping shortcut,
and the class-conditional layers (slice levels, eq. 4): gradients, labels' effect, sampling."""
import numpy as np
import pytest

import nn
from models.pixelcnn import GatedLayer, GatedPixelCNN, bits_per_code, draw, even_levels, mean_bits

K, SIDE, LEVELS = 5, 6, 3


def small_model(device, dtype=np.float64, map_size=(SIDE, SIDE), levels=0):
    """First layer 7x7-equivalent, then 3x3: after 3 layers every earlier position of a 6x6 map
    is inside the receptive field. With a learned position map unless map_size is None; with
    `levels` slice levels (class-conditional) when given."""
    nn.manual_seed(0)
    return GatedPixelCNN(num_codes=K, channels=6, n_layers=3, kernel=3, first_kernel=7,
                         map_size=map_size, levels=levels).to(device, dtype)


def logits_of(model, codes, device, labels=None):
    with nn.no_grad():
        return model(nn.backend.to_device(codes, device), labels).numpy()   # (N, K, h, w)


def dependence(model, device, labels=None):
    """depends[p, q] = True when the logits at position q change if the code at p changes
    (positions numbered in raster order)."""
    base = np.random.default_rng(1).integers(0, K, (1, SIDE, SIDE))
    reference = logits_of(model, base, device, labels)
    n = SIDE * SIDE
    depends = np.zeros((n, n), dtype=bool)
    for p in range(n):
        changed = base.copy()
        changed[0, p // SIDE, p % SIDE] = (changed[0, p // SIDE, p % SIDE] + 1) % K
        difference = np.abs(logits_of(model, changed, device, labels) - reference).max(axis=1)[0]
        depends[p] = difference.reshape(-1) > 1e-9
    return depends


@pytest.mark.parametrize("map_size, levels", [((SIDE, SIDE), 0), (None, 0), ((SIDE, SIDE), LEVELS)],
                         ids=["position", "no-position", "position-and-levels"])
def test_causal_no_look_ahead_and_no_blind_spot(device, map_size, levels):
    labels = np.array([2]) if levels else None
    depends = dependence(small_model(device, map_size=map_size, levels=levels), device, labels)
    n = SIDE * SIDE
    for p in range(n):
        for q in range(n):
            if p >= q:   # the code at p comes at or after q: q's logits must ignore it
                assert not depends[p, q], f"logits at {divmod(q, SIDE)} see {divmod(p, SIDE)}"
            else:        # every earlier code must be seen: no blind spot
                assert depends[p, q], f"logits at {divmod(q, SIDE)} miss {divmod(p, SIDE)}"


def test_sees_above_right_the_plain_masked_blind_spot(device):
    """(i-1, j+2) is the classic blind spot of stacked 3x3 mask-B convolutions."""
    depends = dependence(small_model(device), device)
    i, j = 3, 1
    assert depends[(i - 1) * SIDE + j + 2, i * SIDE + j]
    assert depends[(i - 1) * SIDE + SIDE - 1, i * SIDE]   # far above-right


def test_top_rows_give_the_same_logits_as_the_whole_map(device):
    """Sampling runs the network on rows 0..i only; that must not change row i's logits."""
    model = small_model(device)
    codes = np.random.default_rng(2).integers(0, K, (2, SIDE, SIDE))
    full = logits_of(model, codes, device)
    for i in range(SIDE):
        top = logits_of(model, codes[:, :i + 1], device)
        np.testing.assert_allclose(top[:, :, i], full[:, :, i], rtol=1e-10, atol=1e-12)


def test_sampling_valid_and_deterministic(device):
    model = small_model(device, np.float32)
    a = model.sample(4, (3, 4), temperature=1.0, seed=7)
    b = model.sample(4, (3, 4), temperature=1.0, seed=7)
    c = model.sample(4, (3, 4), temperature=1.0, seed=8)
    assert a.shape == (4, 3, 4) and a.dtype.kind == "i"
    assert a.min() >= 0 and a.max() < K
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert model.training   # sampling puts the model back in the mode it found


def test_low_temperature_sampling_is_greedy(device):
    model = small_model(device)
    codes = model.sample(2, (2, 3), temperature=1e-6, seed=0)
    logits = logits_of(model, codes, device)
    np.testing.assert_array_equal(codes, logits.argmax(axis=1))


def test_draw_follows_the_probabilities():
    probs = np.tile([[0.1, 0.0, 0.6, 0.3]], (20000, 1))
    picked = draw(probs, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(picked, minlength=4) / 20000, probs[0], atol=0.015)


def test_loss_in_bits_and_learning(device):
    """Cross entropy starts near log K and a few Adam steps fit one fixed map."""
    model = small_model(device, np.float32)
    codes = nn.backend.to_device(np.random.default_rng(3).integers(0, K, (2, SIDE, SIDE)), device)
    optimizer = nn.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(codes).item()
    assert abs(bits_per_code(first) - np.log2(K)) < 1.5
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(codes)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * first
    five = np.random.default_rng(4).integers(0, K, (5, SIDE, SIDE))   # NumPy, in chunks of 2
    expected = np.mean([model.loss(nn.backend.to_device(five[i:i + 1], device)).item()
                        for i in range(5)])
    assert mean_bits(model, five, batch_size=2) == pytest.approx(bits_per_code(expected), rel=1e-5)


def test_the_position_map_tells_rows_apart_that_convolutions_cannot(device):
    """On a constant map, far from the top and left borders, every position looks the same to a
    plain gated PixelCNN (2 layers see at most 4 rows up); with the position map they differ."""
    codes = np.zeros((1, 12, 12), dtype=np.int64)
    for map_size, expect_different in (((12, 12), True), (None, False)):
        nn.manual_seed(0)
        model = GatedPixelCNN(num_codes=K, channels=6, n_layers=2, map_size=map_size).to(device)
        logits = logits_of(model, codes, device)[0]
        different = np.abs(logits[:, 9, 8] - logits[:, 11, 8]).max() > 1e-6
        assert different == expect_different


def test_a_map_larger_than_the_position_map_is_refused(device):
    with pytest.raises(ValueError, match="larger than the 6x6"):
        small_model(device)(np.zeros((1, SIDE + 1, SIDE), dtype=np.int64))


# ---- the class-conditional prior: y = tanh(W_f * x + V_f^T h) * sigmoid(W_g * x + V_g^T h) -----

def test_conditioned_gated_layer_gradients(device, rng):
    """Every input (v, h, the position map s, the class vectors) and every parameter, the class
    embeddings V_v, V_h included, against finite differences with a random upstream gradient."""
    nn.manual_seed(0)
    layer = GatedLayer(3, 3, position_channels=2, levels=LEVELS).to(device, np.float64)
    assert {"level_to_vertical.weight", "level_to_horizontal.weight"} <= \
        dict(layer.named_parameters()).keys()

    def tensor(*shape):
        return nn.Tensor(rng.standard_normal(shape), requires_grad=True).to(device)
    v, h, position, level = tensor(2, 3, 4, 5), tensor(2, 3, 4, 5), tensor(1, 2, 4, 5), \
        tensor(2, LEVELS)
    assert nn.gradcheck(lambda *inputs: layer(*inputs), [v, h, position, level],
                        params=list(layer.parameters()))


def test_conditional_pixelcnn_gradients_reach_every_parameter(device):
    """The logits of a conditional prior as a function of all its parameters (the code and
    position embeddings, every layer's convolutions and class embeddings, the head)."""
    model = GatedPixelCNN(num_codes=K, channels=3, n_layers=2, kernel=3, first_kernel=3,
                          map_size=(3, 3), position_channels=2, levels=LEVELS)
    model.to(device, np.float64)
    codes = np.random.default_rng(5).integers(0, K, (2, 3, 3))
    labels = np.array([0, 2])
    assert nn.gradcheck(lambda: model(codes, labels), [], params=list(model.parameters()))


def test_the_label_changes_the_logits_everywhere(device):
    model = small_model(device, levels=LEVELS)
    codes = np.random.default_rng(6).integers(0, K, (1, SIDE, SIDE))
    low = logits_of(model, codes, device, np.array([0]))
    high = logits_of(model, codes, device, np.array([2]))
    assert (np.abs(low - high).max(axis=1) > 1e-6).all()      # at every position, (0, 0) too


def test_labels_are_required_exactly_when_the_prior_has_levels(device):
    codes = np.zeros((2, SIDE, SIDE), dtype=np.int64)
    with pytest.raises(ValueError, match="conditioned on 3 slice levels"):
        small_model(device, levels=LEVELS)(codes)
    with pytest.raises(ValueError, match="labels must be 2 whole numbers in 0..2"):
        small_model(device, levels=LEVELS)(codes, np.array([0, 3]))
    with pytest.raises(ValueError, match="no slice levels"):
        small_model(device)(codes, np.array([0, 1]))


def test_conditional_sampling_follows_the_labels(device):
    """Greedy samples are the argmax of the logits given their own label; without labels the
    samples cover the levels evenly."""
    model = small_model(device, levels=LEVELS)
    labels = np.array([0, 2, 1])
    codes = model.sample(3, (2, 3), temperature=1e-6, seed=0, labels=labels)
    np.testing.assert_array_equal(codes, logits_of(model, codes, device, labels).argmax(axis=1))
    np.testing.assert_array_equal(even_levels(7, 3), [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(model.sample(6, (2, 2), seed=1),
                                  model.sample(6, (2, 2), seed=1, labels=[0, 0, 1, 1, 2, 2]))
    five = codes
    expected = np.mean([model.loss(nn.backend.to_device(five[i:i + 1], device),
                                   labels[i:i + 1]).item() for i in range(3)])
    assert mean_bits(model, five, labels, batch_size=2) == pytest.approx(bits_per_code(expected))


def dropout_model(device, p=0.3):
    """small_model with dropout p in every gated layer, weights identical to small_model's."""
    nn.manual_seed(0)
    return GatedPixelCNN(num_codes=K, channels=6, n_layers=3, kernel=3, first_kernel=7,
                         map_size=(SIDE, SIDE), dropout=p).to(device, np.float64)


def test_dropout_acts_only_while_training(device):
    codes = np.random.default_rng(3).integers(0, K, (2, SIDE, SIDE))
    plain, dropped = small_model(device), dropout_model(device)
    first, second = logits_of(dropped, codes, device), logits_of(dropped, codes, device)
    assert not np.allclose(first, second)                  # a new mask every training call
    assert not np.allclose(first, logits_of(plain, codes, device))
    dropped.eval()
    np.testing.assert_allclose(logits_of(dropped, codes, device), logits_of(plain, codes, device),
                               rtol=1e-12, atol=1e-12)    # eval: the same network without dropout
    dropped.train()
    assert mean_bits(dropped, codes) == pytest.approx(mean_bits(plain, codes), rel=1e-12)
    assert dropped.training                  # mean_bits measures in eval mode, then restores it


def test_dropout_keeps_the_prior_causal(device):
    """With the same masks in every call (a fixed seed), no logit sees its own code or a later one:
    dropout multiplies each feature by a number that does not depend on the codes."""
    model = dropout_model(device)
    for layer in model.layers:
        layer.dropout.generator = 11                       # an int seed: the same mask each call
    depends = dependence(model, device)
    n = SIDE * SIDE
    for p in range(n):
        for q in range(p + 1):
            assert not depends[p, q], f"logits at {divmod(q, SIDE)} see {divmod(p, SIDE)}"


def test_gated_layer_with_dropout_gradients(device, rng):
    """With a fixed mask (an int seed draws the same mask every call) the layer with dropout is a
    smooth function: every input and parameter against finite differences."""
    nn.manual_seed(0)
    layer = GatedLayer(3, 3, position_channels=2, levels=LEVELS, dropout=0.3,
                       generator=5).to(device, np.float64)

    def tensor(*shape):
        return nn.Tensor(rng.standard_normal(shape), requires_grad=True).to(device)
    v, h, position, level = tensor(2, 3, 4, 5), tensor(2, 3, 4, 5), tensor(1, 2, 4, 5), \
        tensor(2, LEVELS)
    with nn.no_grad():
        first = layer(v, h, position, level)[1].numpy()
        second = layer(v, h, position, level)[1].numpy()
    np.testing.assert_array_equal(first, second)           # the same mask in every call
    assert nn.gradcheck(lambda *inputs: layer(*inputs), [v, h, position, level],
                        params=list(layer.parameters()))
