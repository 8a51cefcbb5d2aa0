"""Gated PixelCNN: an autoregressive prior over VQ-VAE code maps.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image Generation
with PixelCNN Decoders", NeurIPS 2016 (the gated PixelCNN, Sec. 2.1-2.2, Fig. 2).

A code map c (h, w) with values in 0..K-1 is modelled in raster order,

    p(c) = prod_{i, j} p(c[i, j] | c[i', j'] for all (i', j') before (i, j)),

so the logits at (i, j) may depend only on rows above and on the same row to the left. A plain
stack of masked 3x3 convolutions has a blind spot (part of the region above-right is never seen).
The gated PixelCNN avoids it with two stacks:

  vertical stack v:   a (k//2 + 1) x k convolution over rows i - k//2 .. i (all columns j +- k//2).
                      v at row i has seen rows <= i, so it is SHIFTED DOWN ONE ROW before it is
                      added to the horizontal stack (which must not see row i to the right).
  horizontal stack h: a 1 x (k//2 + 1) convolution over columns j - k//2 .. j of the same row,
                      plus a 1x1 convolution of the down-shifted vertical features.
  the first layer:    the horizontal convolution covers columns j - k//2 .. j - 1 only, so it
                      never sees the code it predicts (the "mask A" of PixelCNN); all later
                      layers may include column j (their input at (i, j) is already causal:
                      "mask B").

Each stack is gated: y = tanh(a) * sigmoid(b), a and b the two halves of the convolution output.
With `map_size` given, both gates also get a learned map of the position (the paper's
location-dependent conditioning, Sec. 2.3: y = tanh(W_f * x + V_f * s) * sigmoid(W_g * x + V_g * s),
with s a learned (E, h, w) map and V 1x1 convolutions). Convolutions are translation-equivariant
and only the top and left borders are visible through the padding, so without it the prior cannot
tell row 14 from row 10; brain slices, and the VQ-VAE's background codes near the frame, depend on
where they are. s does not depend on any code, so causality is untouched.
With `levels` = L > 0 the prior is also class-conditional (Sec. 2.3, eq. 4):

    y = tanh(W_f * x + V_f^T h) * sigmoid(W_g * x + V_g^T h),     h = one_hot(label) of L classes,

so V^T h is a learned bias per class and gate channel, the same at every position (here the class
is the slice's level, data/levels.py). It too is independent of the codes: causality holds.
The horizontal stack ends with a 1x1 convolution and a residual connection (except in the first
layer); with `dropout` p > 0 the gated features are dropped (zeroed with probability p, the rest
scaled by 1 / (1 - p)) before that 1x1 convolution while training, against a prior that learns its
few hundred training maps by heart. Causality is enforced by padding only at the top and left and cropping, instead of masks.
A head (ReLU, 1x1, ReLU, 1x1) maps h to K logits per position; training minimises the cross
entropy against the code map itself.
"""
import math

import numpy as np

import nn
import nn.functional as F


def gate(x):
    """tanh(a) * sigmoid(b) for x = [a, b] stacked along the channels (paper eq. 2)."""
    half = x.shape[1] // 2
    return F.tanh(x[:, :half]) * F.sigmoid(x[:, half:])


def shift_down(x):
    """Move a (N, C, H, W) map down one row: row i receives row i - 1, row 0 is zero."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def per_image(x):
    """(N, C) -> (N, C, 1, 1), to add a per-image vector at every position of a (N, C, H, W) map."""
    return x.reshape(*x.shape, 1, 1)


def even_levels(n, levels):
    """n labels that cover 0..levels-1 evenly, in order: level l for samples l n / L .. (l+1) n / L."""
    return np.arange(n) * levels // n


class GatedLayer(nn.Module):
    """One layer of the two stacks (paper Fig. 2). `first=True` makes it the mask-A layer."""

    def __init__(self, channels, kernel, first=False, position_channels=0, levels=0, dropout=0.0,
                 generator=None):
        super().__init__()
        self.first, self.half = first, kernel // 2
        width = self.half if first else self.half + 1   # first layer: strictly left of j
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.half + 1, kernel))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, width))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        if position_channels:   # V_v * s and V_h * s: the position's say in each gate
            self.position_to_vertical = nn.Conv2d(position_channels, 2 * channels, 1)
            self.position_to_horizontal = nn.Conv2d(position_channels, 2 * channels, 1)
        self.conditioned = bool(position_channels)
        if levels:              # V_f^T h and V_g^T h of eq. 4: a learned bias per class and gate
            self.level_to_vertical = nn.Linear(levels, 2 * channels, bias=False)
            self.level_to_horizontal = nn.Linear(levels, 2 * channels, bias=False)
        self.levels = levels
        self.dropout = nn.Dropout(dropout, generator)   # the identity in eval mode or at p = 0

    def forward(self, v, h, position=None, level=None):
        """v, h (N, C, H, W) -> (v', h'). position: the (1, E, H, W) map s; level: the (N, L)
        class vectors h of eq. 4 (one-hot rows); each only when the layer was built for it."""
        height, width = v.shape[2:]
        k = self.half
        # rows i-k .. i, columns j-k .. j+k: pad k rows on top and k columns on each side
        v_pre = self.vertical(F.pad(v, (k, k, k, 0)))
        # columns j-k .. j (first layer: j-k .. j-1, by padding k on the left and cropping)
        h_pre = self.horizontal(F.pad(h, (k, 0, 0, 0)))[:, :, :, :width]
        h_pre = h_pre + self.vertical_to_horizontal(shift_down(v_pre))
        if self.conditioned:
            v_pre = v_pre + self.position_to_vertical(position)
            h_pre = h_pre + self.position_to_horizontal(position)
        if self.levels:       # + V^T h, one (2C,) bias per image, broadcast over the positions
            v_pre = v_pre + per_image(self.level_to_vertical(level))
            h_pre = h_pre + per_image(self.level_to_horizontal(level))
        h_out = self.horizontal_out(self.dropout(gate(h_pre)))
        if not self.first:
            h_out = h_out + h
        return gate(v_pre), h_out


class GatedPixelCNN(nn.Module):
    """Codes (N, h, w) in 0..K-1 -> logits (N, K, h, w) for the same positions.

    num_codes: K; channels: width of both stacks; n_layers: gated layers (the first uses a
    kernel of `first_kernel`, the others `kernel`). map_size: (h, w) of the code maps, to learn a
    position map s of `position_channels` channels that conditions every gate (None: no s; maps
    of any size then work). A map smaller than map_size uses its top-left part (sampling runs on
    the top rows only). levels: L classes for eq. 4 (0: unconditional); every call then takes
    `labels`, one integer in 0..L-1 per code map. dropout: the probability p of dropping a gated
    feature of the horizontal stack while training; its masks come from `generator` (an
    np.random.Generator; None: nn.init's shared one).
    """

    def __init__(self, num_codes=128, channels=64, n_layers=8, kernel=3, first_kernel=7,
                 map_size=None, position_channels=8, levels=0, dropout=0.0, generator=None):
        super().__init__()
        self.num_codes, self.levels = num_codes, levels
        self.embedding = nn.Parameter(np.zeros((num_codes, channels), np.float32))
        nn.init.normal_(self.embedding)
        self.position = None
        if map_size is not None:
            self.position = nn.Parameter(np.zeros((1, position_channels, *map_size), np.float32))
            nn.init.normal_(self.position)
        e = position_channels if map_size is not None else 0
        drop = {"dropout": dropout, "generator": generator}
        layers = [GatedLayer(channels, first_kernel, first=True, position_channels=e,
                             levels=levels, **drop)]
        layers += [GatedLayer(channels, kernel, position_channels=e, levels=levels, **drop)
                   for _ in range(n_layers - 1)]
        self.layers = nn.ModuleList(layers)
        self.head_hidden = nn.Conv2d(channels, channels, 1)
        self.head_out = nn.Conv2d(channels, num_codes, 1)

    def embed(self, codes):
        """Integer map (N, h, w) -> (N, C, h, w) learned code vectors, as one_hot @ embedding."""
        xp = nn.backend.get_array_module(self.embedding.data)
        codes = xp.asarray(codes)
        one_hot = xp.eye(self.num_codes, dtype=self.embedding.dtype)[codes.reshape(-1)]
        vectors = nn.Tensor(one_hot) @ self.embedding                 # (N*h*w, C)
        return vectors.reshape(*codes.shape, -1).transpose(0, 3, 1, 2)

    def level_vectors(self, labels, n):
        """The class vectors h of eq. 4: labels (n,) -> one-hot (n, L) Tensor; None when the
        prior is unconditional. Labels must be given exactly when the prior has levels."""
        if not self.levels:
            if labels is not None:
                raise ValueError("this prior has no slice levels (levels=0); give no labels")
            return None
        if labels is None:
            raise ValueError(f"this prior is conditioned on {self.levels} slice levels; give a "
                             "label (0..L-1) for every code map")
        if isinstance(labels, np.ndarray) and (labels.shape != (n,) or labels.min() < 0
                                               or labels.max() >= self.levels):
            raise ValueError(f"labels must be {n} whole numbers in 0..{self.levels - 1}")
        xp = nn.backend.get_array_module(self.embedding.data)
        return nn.Tensor(xp.eye(self.levels, dtype=self.embedding.dtype)[xp.asarray(labels)])

    def forward(self, codes, labels=None):
        """Codes (N, h, w) and, for a conditional prior, labels (N,) -> logits (N, K, h, w)."""
        x = self.embed(codes)
        level = self.level_vectors(labels, x.shape[0])
        position = None
        if self.position is not None:
            height, width = x.shape[2:]
            if height > self.position.shape[2] or width > self.position.shape[3]:
                raise ValueError(f"code maps of {height}x{width} are larger than the "
                                 f"{self.position.shape[2]}x{self.position.shape[3]} this prior "
                                 f"was built for")
            position = self.position[:, :, :height, :width]
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, position, level)
        return self.head_out(F.relu(self.head_hidden(F.relu(h))))

    def loss(self, codes, labels=None):
        """Mean cross entropy (nats per code) of the model's predictions for `codes`."""
        xp = nn.backend.get_array_module(self.embedding.data)
        return F.cross_entropy(self(codes, labels), xp.asarray(codes))

    def sample(self, n, shape, temperature=1.0, seed=0, labels=None):
        """n code maps of `shape` (h, w), one position at a time in raster order.

        A conditional prior draws map m at level labels[m]; without labels the n maps cover the
        levels evenly (even_levels: n / L maps of each level, lowest first), not in proportion
        to the training slices.

        Logits are divided by `temperature` (< 1: more likely codes, less variety). Because the
        network never looks down, position (i, j) only needs rows 0..i: each pass runs on the
        top i + 1 rows (half the work on average). Returns an int64 NumPy array (n, h, w),
        the same for the same seed.
        """
        rng = np.random.default_rng(seed)
        xp = nn.backend.get_array_module(self.embedding.data)
        height, width = shape
        if self.levels and labels is None:
            labels = even_levels(n, self.levels)
        codes = np.zeros((n, height, width), dtype=np.int64)
        was_training = self.training
        self.eval()
        with nn.no_grad():
            for i in range(height):
                for j in range(width):
                    logits = self(xp.asarray(codes[:, :i + 1]), labels).data[:, :, i, j]
                    probs = softmax(nn.backend.to_numpy(logits).astype(np.float64) / temperature)
                    codes[:, i, j] = draw(probs, rng)
        self.train(was_training)
        return codes


def softmax(logits):
    """Row-wise softmax of a (N, K) array, computed stably."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def draw(probs, rng):
    """One index per row of (N, K) probabilities, by inverting the cumulative sum."""
    cumulative = probs.cumsum(axis=1)
    u = rng.random((len(probs), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < u).sum(axis=1), probs.shape[1] - 1)


def bits_per_code(nats):
    """Negative log-likelihood in bits: nats / ln 2."""
    return nats / math.log(2)


def mean_bits(prior, codes, labels=None, batch_size=64):
    """Negative log-likelihood of code maps (NumPy (N, h, w)) under the prior, in bits per code;
    labels (N,): their levels, for a conditional prior. Measured in eval mode (no dropout)."""
    xp = nn.backend.get_array_module(prior.embedding.data)
    total = 0.0
    was_training = prior.training
    prior.eval()
    with nn.no_grad():
        for i in range(0, len(codes), batch_size):
            chunk = codes[i:i + batch_size]
            chunk_labels = None if labels is None else labels[i:i + batch_size]
            total += prior.loss(xp.asarray(chunk), chunk_labels).item() * len(chunk)
    prior.train(was_training)
    return bits_per_code(total / len(codes))
