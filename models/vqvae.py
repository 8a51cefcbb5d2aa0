"""VQ-VAE: a convolutional autoencoder whose latent map is made of codebook entries.

van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017.

    x --Encoder--> z_e(x) (N, D, h, w) --VectorQuantizer--> z_q(x) = e_k, k = argmin_j |z_e - e_j|
      --Decoder--> x_hat

The image is described by an (h, w) map of integers k in 0..K-1 (the "codes"); a PixelCNN prior
over those maps (models/pixelcnn.py) then generates new images. The loss is eq. (3) of the paper,

    L = |x - x_hat|^2 + |sg[z_e(x)] - e|^2 + beta |z_e(x) - sg[e]|^2          (sg = stop gradient)

the reconstruction error, the codebook loss (moves codes towards encoder outputs) and the
commitment loss (keeps encoder outputs near their codes), beta = 0.25. With `ema=True` the
codebook loss is replaced by exponential-moving-average updates of the codes (Appendix A.1).
"""
import numpy as np

import nn
import nn.functional as F

# ---- encoder and decoder ------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x))))  (the paper's block: ReLU, 3x3, ReLU, 1x1)."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.conv3 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv1 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class Encoder(nn.Module):
    """Image (N, 1, S, S) -> continuous latents z_e (N, D, S / 2^downsamples, ...).

    `downsamples` 4x4 stride-2 convolutions (each halves the side), a 3x3 convolution, residual
    blocks, ReLU, then a 1x1 convolution to the code dimension D.
    """

    def __init__(self, in_channels=1, channels=64, res_channels=32, n_res_blocks=2,
                 downsamples=2, code_dim=32):
        super().__init__()
        widths = [in_channels] + [channels // 2] * (downsamples - 1) + [channels]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        layers += [ResidualBlock(channels, res_channels) for _ in range(n_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(channels, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """Quantised latents (N, D, h, w) -> image (N, 1, h * 2^upsamples, ...), the encoder mirrored.

    3x3 convolution, residual blocks, ReLU, then 4x4 stride-2 transposed convolutions (kernel
    divisible by stride: no checkerboard). The output is linear (no tanh): the MSE target lies in
    [-1, 1] and the network learns to stay there.
    """

    def __init__(self, out_channels=1, channels=64, res_channels=32, n_res_blocks=2,
                 upsamples=2, code_dim=32):
        super().__init__()
        layers = [nn.Conv2d(code_dim, channels, 3, padding=1)]
        layers += [ResidualBlock(channels, res_channels) for _ in range(n_res_blocks)]
        layers.append(nn.ReLU())
        widths = [channels] + [channels // 2] * (upsamples - 1) + [out_channels]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < upsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


# ---- the vector quantiser -----------------------------------------------------------------------

class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup in a codebook of K vectors of dimension D (paper, Sec. 3.1).

    codebook: (K, D). For a latent vector z the code is k = argmin_j |z - e_j|^2, computed for all
    vectors at once as |z|^2 - 2 z.e_j + |e_j|^2 (one matrix product).

    ema=True: the codebook is not trained by gradient but set to running averages (Appendix A.1),
        N_j <- decay N_j + (1 - decay) n_j            n_j = how many z chose code j this batch
        m_j <- decay m_j + (1 - decay) sum_{z -> j} z
        e_j  = m_j / N~_j,   N~_j = (N_j + eps) / (n + K eps) * n,   n = sum_j N_j
    (N~ is N with Laplace smoothing, so a rarely used code never divides by ~0). N starts at 1 and
    m at the initial codebook, so e = m / N holds from the first step and unused codes stay put.

    Dead codes: `usage` is an exponential moving average of n_j (decay 0.99). A code whose usage
    falls below `restart_threshold` is re-initialised to a random recent encoder output, so it
    sits where the data is and gets chosen again (codebook collapse is the usual failure).
    """

    def __init__(self, num_codes=128, code_dim=32, beta=0.25, ema=True, decay=0.99, eps=1e-5,
                 restart_threshold=1.0):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.restart_threshold = restart_threshold
        self.codebook = nn.Parameter(np.zeros((num_codes, code_dim), np.float32),
                                     requires_grad=not ema)
        nn.init.uniform_(self.codebook, -1 / num_codes, 1 / num_codes)
        self.register_buffer("usage", np.full(num_codes, restart_threshold, np.float32))
        if ema:
            self.register_buffer("ema_count", np.ones(num_codes, np.float32))
            self.register_buffer("ema_sum", self.codebook.data.copy())

    # -- the lookup ---------------------------------------------------------------------------
    def nearest_codes(self, flat):
        """Index of the nearest code for each row of `flat` (M, D): raw arrays, no gradient."""
        e = self.codebook.data
        distances = ((flat ** 2).sum(axis=1, keepdims=True) - 2 * flat @ e.T
                     + (e ** 2).sum(axis=1)[None, :])
        return distances.argmin(axis=1)

    def lookup(self, codes):
        """Code vectors e_k for an integer array of codes (...) -> Tensor (..., D).

        Written as one_hot(codes) @ codebook, so the codebook gets its gradient from one matrix
        product (its transpose) rather than a scatter.
        """
        xp = nn.backend.get_array_module(self.codebook.data)
        one_hot = xp.eye(self.num_codes, dtype=self.codebook.dtype)[codes.reshape(-1)]
        vectors = nn.Tensor(one_hot) @ self.codebook
        return vectors.reshape(*codes.shape, self.code_dim)

    def forward(self, z):
        """z (N, D, h, w) -> dict with
            quantized: z + sg(e_k - z), the straight-through estimator (forward value e_k, gradient
                       copied unchanged to z: dL/dz = dL/dz_q, paper Sec. 3.1)
            codes (N, h, w) integer array; flat: the latents as (N*h*w, D) raw array
            codebook_loss: mean |sg(z) - e_k|^2 (zero Tensor with ema=True)
            commitment_loss: mean |z - sg(e_k)|^2 (multiply by beta in the total loss)
            loss: codebook_loss + beta * commitment_loss
        """
        n, d, h, w = z.shape
        z_last = z.transpose(0, 2, 3, 1)                           # (N, h, w, D)
        flat = z_last.data.reshape(-1, d)
        codes = self.nearest_codes(flat).reshape(n, h, w)
        if self.ema:
            quantized = nn.Tensor(self.lookup(codes).data)         # constant: no codebook grad
            codebook_loss = nn.Tensor(np.zeros((), z.dtype)).to(z.device)
        else:
            quantized = self.lookup(codes)
            codebook_loss = F.mse_loss(quantized, z_last.detach())
        commitment_loss = F.mse_loss(z_last, quantized.detach())
        straight_through = z_last + (quantized.data - z_last.data)  # z + sg(e_k - z)
        return {
            "quantized": straight_through.transpose(0, 3, 1, 2),
            "codes": codes,
            "flat": flat,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "loss": codebook_loss + self.beta * commitment_loss,
        }

    def decode_codes(self, codes):
        """Integer code map (N, h, w) -> quantised latents (N, D, h, w)."""
        return self.lookup(codes).transpose(0, 3, 1, 2)

    # -- codebook maintenance (call once per training step, after the optimizer step) ---------
    def update(self, flat, codes, rng):
        """EMA codebook update (if enabled) and dead-code restarts. Returns how many codes were
        restarted (a 0-d array on the device). Nothing is read back from the device."""
        counts = code_counts(codes, self.num_codes).astype(flat.dtype)
        self.usage.data[...] = self.decay * self.usage.data + (1 - self.decay) * counts
        if self.ema:
            self.ema_update(flat, codes, counts)
        return self.restart_dead_codes(flat, rng)

    def ema_update(self, flat, codes, counts):
        """N, m and e = m / N~ as in the class docstring (paper Appendix A.1, eqs. 6-8)."""
        xp = nn.backend.get_array_module(flat)
        one_hot = xp.eye(self.num_codes, dtype=flat.dtype)[codes.reshape(-1)]
        sums = one_hot.T @ flat                                    # sum of z per code, (K, D)
        d = self.decay
        self.ema_count.data[...] = d * self.ema_count.data + (1 - d) * counts
        self.ema_sum.data[...] = d * self.ema_sum.data + (1 - d) * sums
        total = self.ema_count.data.sum()
        smoothed = (self.ema_count.data + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.data[...] = self.ema_sum.data / smoothed[:, None]

    def restart_dead_codes(self, flat, rng):
        """Move codes with usage < restart_threshold onto random rows of `flat` (recent z_e).

        Without reading anything back from the device (which would make the CPU wait for the
        GPU): every code gets a candidate row, drawn on the host from `rng` (distinct rows when
        there are enough), and xp.where keeps the candidates of the dead codes only. Returns how
        many codes were restarted, a 0-d array on the device."""
        xp = nn.backend.get_array_module(flat)
        dead = self.usage.data < self.restart_threshold                          # (K,) bool
        rows = rng.choice(len(flat), size=self.num_codes, replace=self.num_codes > len(flat))
        candidates = flat[xp.asarray(rows)]                                      # (K, D)
        self.codebook.data[...] = xp.where(dead[:, None], candidates, self.codebook.data)
        threshold = np.float32(self.restart_threshold)       # a fresh start, not dead at once
        self.usage.data[...] = xp.where(dead, threshold, self.usage.data)
        if self.ema:
            self.ema_count.data[...] = xp.where(dead, np.float32(1), self.ema_count.data)
            self.ema_sum.data[...] = xp.where(dead[:, None], candidates, self.ema_sum.data)
        return dead.sum()


def code_counts(codes, num_codes):
    """How many times each of the K codes occurs in an integer array: (K,) int64, on the codes'
    device. counts[j] = how many codes equal j, by comparing them all with 0..K-1 (np.bincount
    would have to read the largest code back to the host first)."""
    xp = nn.backend.get_array_module(codes)
    return (codes.reshape(-1, 1) == xp.arange(num_codes)).sum(axis=0)


def perplexity(counts):
    """exp(entropy) of the code histogram: K if all codes are used equally, 1 if only one is.

    exp(-sum_j p_j log p_j), p_j = counts_j / sum(counts), with 0 log 0 = 0; a float32 0-d array
    on the counts' device."""
    xp = nn.backend.get_array_module(counts)
    p = counts.astype(np.float32) / xp.maximum(counts.sum(), 1).astype(np.float32)
    return xp.exp(-(p * xp.log(xp.where(p > 0, p, np.float32(1)))).sum())


# ---- the whole model ----------------------------------------------------------------------------

class VQVAE(nn.Module):
    """Encoder -> VectorQuantizer -> Decoder. `downsamples` stride-2 layers: S x S images become
    (S / 2^downsamples)^2 codes (64x64 with 2 downsamples: a 16x16 code map)."""

    def __init__(self, channels=64, res_channels=32, n_res_blocks=2, downsamples=2,
                 num_codes=128, code_dim=32, beta=0.25, ema=True, decay=0.99,
                 restart_threshold=1.0):
        super().__init__()
        self.encoder = Encoder(1, channels, res_channels, n_res_blocks, downsamples, code_dim)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, ema, decay,
                                         restart_threshold=restart_threshold)
        self.decoder = Decoder(1, channels, res_channels, n_res_blocks, downsamples, code_dim)

    def forward(self, x):
        """x (N, 1, S, S) -> (reconstruction, quantiser output dict)."""
        vq = self.quantizer(self.encoder(x))
        return self.decoder(vq["quantized"]), vq

    def encode(self, x):
        """Images -> integer code maps (N, h, w), no gradient."""
        with nn.no_grad():
            z = self.encoder(x)
            flat = z.data.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
            return self.quantizer.nearest_codes(flat).reshape(z.shape[0], *z.shape[2:])

    def decode(self, codes):
        """Integer code maps (N, h, w) -> images (N, 1, S, S), no gradient."""
        with nn.no_grad():
            return self.decoder(self.quantizer.decode_codes(codes))


# ---- using a trained model ----------------------------------------------------------------------

def reconstruct(model, images, batch_size=64):
    """Reconstructions (clipped to [-1, 1]) and code maps of float images (N, 1, S, S), as NumPy
    arrays, in eval mode and without a graph; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    xp = nn.backend.get_array_module(model.quantizer.codebook.data)
    outputs, codes = [], []
    for i in range(0, len(images), batch_size):
        c = model.encode(nn.Tensor(xp.asarray(images[i:i + batch_size])))
        outputs.append(np.clip(model.decode(c).numpy(), -1, 1))
        codes.append(nn.backend.to_numpy(c))
    model.train(was_training)
    return np.concatenate(outputs), np.concatenate(codes)


def generate(model, prior, n, side, seed, temperature=1.0, labels=None):
    """n code maps drawn from the prior, one code at a time, and the images the decoder makes of
    them: (float32 NumPy (n, 1, S, S) clipped to [-1, 1], int64 codes (n, side, side)).
    labels (n,): the slice level of each map, for a conditional prior; None: the n maps cover
    the levels evenly (GatedPixelCNN.sample)."""
    codes = prior.sample(n, (side, side), temperature=temperature, seed=seed, labels=labels)
    xp = nn.backend.get_array_module(model.quantizer.codebook.data)
    return np.clip(model.decode(xp.asarray(codes)).numpy(), -1, 1), codes
