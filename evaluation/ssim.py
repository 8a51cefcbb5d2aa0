"""Image-quality metrics for generated brain slices, written by hand in NumPy.

SSIM (Wang, Bovik, Sheikh & Simoncelli 2004).  For two images x and y, at every pixel,

    mu_x    = G * x                     (G: normalised 11x11 Gaussian window, sigma 1.5)
    sigma_x^2 = G * x^2 - mu_x^2        (population, i.e. biased, variance)
    sigma_xy  = G * (x y) - mu_x mu_y
    SSIM(p) = (2 mu_x mu_y + C1)(2 sigma_xy + C2)
              / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, L = data range (2 for images in [-1, 1])

and the SSIM of the pair is the mean of SSIM(p) over the "valid" pixels: those whose whole 11x11
window lies inside the image, an (H-10) x (W-10) map.  This is exactly scikit-image's
``structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=L)``: it filters the whole image (reflect padding) and then crops
(win_size - 1) // 2 = 5 pixels from every border before averaging, which leaves only windows that
never touch the padding.

How it is computed.  The Gaussian is separable and "valid" filtering of one row of length W is a
matrix product with a banded (W, W-10) matrix B whose column j holds the 11 weights in rows
j..j+10.  A whole stack is filtered with two large matrix products (one per axis), done in
column blocks so that the zero part of B is skipped.  The stack is laid out as (H, N, W): then the
pass along W works on an (H*N, W) matrix and the pass along H on an (H, N*W) matrix, both without
copies.  Everything is float64, but for the nearest-neighbour search of images larger than
64x64 (float32: see nearest_neighbour_ssim).  For a pair only the cross term G*(xy) is new: the moments of
each image are filtered once and reused against every partner.

Every pair costs a filtering of the whole image, so for large sets at full resolution the run's
scores compare with at most --metrics-real training images (evaluation/comparison.py; timings in
benchmarks/README.md).

Generated images are judged with
- nearest-neighbour SSIM (the course metric): the best SSIM of each sample against all real images;
- pairwise SSIM (diversity): the mean SSIM over distinct pairs; samples that are much more alike
  than real images are to each other are a sign of mode collapse.

Inputs are NumPy arrays (or CuPy arrays, copied to the host), of shape (H, W), (N, H, W) or
(N, 1, H, W).
"""
import numpy as np

from evaluation.coverage import squared_distances
from nn.backend import to_numpy

K1, K2 = 0.01, 0.03
SIGMA = 1.5
RADIUS = 5                     # int(3.5 * sigma + 0.5), as in scikit-image: an 11-tap window
WIN = 2 * RADIUS + 1
BLOCK = 32                     # output columns per block of the banded matrix product
CHUNK_PIXELS = 2 ** 17         # about this many pixels per chunk of images (fits in cache)
SINGLE_PRECISION_ABOVE = 64 * 64   # nearest_neighbour_ssim of larger images: in float32
SEARCH_PAIR_PIXELS = 2 ** 29   # nearest_neighbour_ssim: above samples x real x pixels, candidates
MIN_CANDIDATES = 64            # ... at least this many real images per sample


def gaussian_window_1d(sigma=SIGMA, radius=RADIUS):
    """The 1-D window g[k] = exp(-k^2 / (2 sigma^2)) / sum, k = -radius..radius (sums to 1)."""
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-k ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def band_matrix(n, dtype=np.float64):
    """(n, n-10) matrix B with B[j + t, j] = g[t]: row @ B is the valid 1-D filtering of a row."""
    g = gaussian_window_1d()
    b = np.zeros((n, n - WIN + 1), dtype=dtype)
    for j in range(n - WIN + 1):
        b[j:j + WIN, j] = g
    return b


def _filter_last_axis(x2d, band):
    """Valid Gaussian filtering of every row of x2d (M, W) -> (M, W-10), skipping B's zeros."""
    n_out = band.shape[1]
    out = np.empty((x2d.shape[0], n_out), dtype=x2d.dtype)
    for j0 in range(0, n_out, BLOCK):
        j1 = min(j0 + BLOCK, n_out)
        # output columns j0..j1-1 only see input columns j0..j1+9
        out[:, j0:j1] = x2d[:, j0:j1 + WIN - 1] @ band[j0:j1 + WIN - 1, j0:j1]
    return out


def _filter_first_axis(x2d, band):
    """Valid Gaussian filtering along the first axis of x2d (H, M) -> (H-10, M)."""
    n_out = band.shape[1]
    out = np.empty((n_out, x2d.shape[1]), dtype=x2d.dtype)
    for i0 in range(0, n_out, BLOCK):
        i1 = min(i0 + BLOCK, n_out)
        np.matmul(band[i0:i1 + WIN - 1, i0:i1].T, x2d[i0:i1 + WIN - 1], out=out[i0:i1])
    return out


def gaussian_filter_valid(stack_hnw, band_h, band_w):
    """G * x for a stack laid out as (H, N, W): returns (H-10, N, W-10)."""
    h, n, w = stack_hnw.shape
    along_w = _filter_last_axis(stack_hnw.reshape(h * n, w), band_w)      # (H*N, W-10)
    both = _filter_first_axis(along_w.reshape(h, n * (w - WIN + 1)), band_h)
    return both.reshape(h - WIN + 1, n, w - WIN + 1)


def as_image_stack(x, name="images", dtype=np.float64):
    """(H, W), (N, H, W) or (N, 1, H, W) -> (N, H, W) of `dtype`; checks the window fits."""
    x = np.asarray(to_numpy(x), dtype=dtype)             # a GPU array is copied to the host
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name}: expected (H, W), (N, H, W) or (N, 1, H, W), got shape {x.shape}")
    if x.shape[1] < WIN or x.shape[2] < WIN:
        raise ValueError(f"{name}: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                         f"{WIN}x{WIN} SSIM window")
    return x


def _check_range(data_range):
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return (K1 * data_range) ** 2, (K2 * data_range) ** 2


class _Stats:
    """Filtered moments of a stack, in (H-10, N, W-10) layout, ready for the SSIM formula.

    mu = G*x; var = G*x^2 - mu^2.  Each image also carries half of each constant, so that
    the denominator of a pair is (lum_x + lum_y)(con_x + con_y), with lum = mu^2 + C1/2 and
    con = var + C2/2.
    """

    def __init__(self, stack_nhw, band_h, band_w, c1, c2):
        self.hnw = np.ascontiguousarray(stack_nhw.transpose(1, 0, 2))
        self.mu = gaussian_filter_valid(self.hnw, band_h, band_w)
        mu_squared = self.mu ** 2
        self.con = gaussian_filter_valid(self.hnw * self.hnw, band_h, band_w) - mu_squared + c2 / 2
        self.lum = mu_squared + c1 / 2

    def image(self, i):
        """Image i (pixels, mu, lum, con), keeping a length-1 N axis for broadcasting."""
        one = slice(i, i + 1)
        return self.hnw[:, one], self.mu[:, one], self.lum[:, one], self.con[:, one]


def _mean_ssim(mu_x, lum_x, con_x, mu_y, lum_y, con_y, cross, c1, c2):
    """Mean SSIM map over the valid pixels, one value per image pair (axis 1 of the layout).

    cross = G*(x y) is overwritten.  In-place arithmetic because this is where the time goes:

        SSIM = (2 mu_x mu_y + C1) (2 (G*(xy) - mu_x mu_y) + C2) / ((lum_x + lum_y)(con_x + con_y))
    """
    mu_xy = mu_x * mu_y
    ssim_map = cross
    ssim_map -= mu_xy                     # sigma_xy
    ssim_map *= 2.0
    ssim_map += c2                        # 2 sigma_xy + C2
    mu_xy *= 2.0
    mu_xy += c1                           # 2 mu_x mu_y + C1
    ssim_map *= mu_xy
    denominator = np.add(lum_x, lum_y, out=mu_xy)
    denominator *= con_x + con_y
    ssim_map /= denominator
    return ssim_map.sum(axis=0).sum(axis=1) / (ssim_map.shape[0] * ssim_map.shape[2])


def _chunk_size(h, w, chunk):
    return max(1, int(chunk) if chunk else CHUNK_PIXELS // (h * w))


def ssim_batch(a, b, data_range=2.0, chunk=None):
    """Per-pair SSIM of two stacks (N, H, W) (or (1, H, W) against (N, H, W)): shape (N,)."""
    c1, c2 = _check_range(data_range)
    a, b = as_image_stack(a, "a"), as_image_stack(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    if len(a) != len(b):
        if len(a) != 1 and len(b) != 1:
            raise ValueError(f"cannot pair {len(a)} images with {len(b)}")
        n = max(len(a), len(b))
        a, b = np.broadcast_to(a, (n,) + a.shape[1:]), np.broadcast_to(b, (n,) + b.shape[1:])
    band_h, band_w = band_matrix(a.shape[1]), band_matrix(a.shape[2])
    step = _chunk_size(a.shape[1], a.shape[2], chunk)
    out = np.empty(len(a))
    for i in range(0, len(a), step):
        sa = _Stats(a[i:i + step], band_h, band_w, c1, c2)
        sb = _Stats(b[i:i + step], band_h, band_w, c1, c2)
        cross = gaussian_filter_valid(sa.hnw * sb.hnw, band_h, band_w)
        out[i:i + step] = _mean_ssim(sa.mu, sa.lum, sa.con, sb.mu, sb.lum, sb.con, cross, c1, c2)
    return out


def ssim(a, b, data_range=2.0):
    """SSIM of two 2-D images (H, W) as a float (see the module docstring for the formula)."""
    a, b = as_image_stack(a, "a"), as_image_stack(b, "b")
    if len(a) != 1 or len(b) != 1:
        raise ValueError("ssim compares two single images; use ssim_batch for stacks")
    return float(ssim_batch(a, b, data_range)[0])


def ssim_matrix(x, y, data_range=2.0, chunk=None, dtype=np.float64, wanted=None):
    """SSIM of every image of x against every image of y: shape (len(x), len(y)), computed in
    `dtype` (float32: about twice as fast, means within 1e-6 of float64's).

    The filtered moments G*x, G*x^2 of each image are computed once (per chunk of x, and per
    chunk of y inside it); for a pair only the cross term G*(x y) is new.  y is processed in
    chunks of `chunk` images (default: about CHUNK_PIXELS pixels, which keeps the arrays of one
    step in cache); x in chunks of up to 32 times as many.

    wanted: an optional boolean (len(x), len(y)) mask; only those pairs are computed (the others
    are -inf), and a chunk of y that no pair wants is not even filtered.
    """
    c1, c2 = _check_range(data_range)
    x, y = as_image_stack(x, "x", dtype), as_image_stack(y, "y", dtype)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"image sizes differ: {x.shape[1:]} vs {y.shape[1:]}")
    if wanted is None:
        wanted = np.ones((len(x), len(y)), bool)
    band_h, band_w = band_matrix(x.shape[1], dtype), band_matrix(x.shape[2], dtype)
    step = _chunk_size(x.shape[1], x.shape[2], chunk)
    out = np.full((len(x), len(y)), -np.inf)
    for i0 in range(0, len(x), 32 * step):
        sx = _Stats(x[i0:i0 + 32 * step], band_h, band_w, c1, c2)
        for j0 in range(0, len(y), step):
            block = wanted[i0:i0 + 32 * step, j0:j0 + step]
            if not block.any():
                continue
            sy = _Stats(y[j0:j0 + step], band_h, band_w, c1, c2)
            for i in np.flatnonzero(block.any(axis=1)):
                image, mu, lum, con = sx.image(i)
                if block[i].all():
                    cols, y_hnw, y_mu, y_lum, y_con = slice(None), sy.hnw, sy.mu, sy.lum, sy.con
                else:                             # only the wanted partners (copies)
                    cols = np.flatnonzero(block[i])
                    y_hnw, y_mu, y_lum, y_con = (a[:, cols] for a in (sy.hnw, sy.mu, sy.lum, sy.con))
                cross = gaussian_filter_valid(image * y_hnw, band_h, band_w)
                out[i0 + i, j0:j0 + step][cols] = _mean_ssim(mu, lum, con, y_mu, y_lum, y_con,
                                                             cross, c1, c2)
    return out


def nearest_neighbour_ssim(samples, real, data_range=2.0, chunk=None, return_index=False,
                           candidates=None):
    """Best SSIM of each sample against all real images (the course metric), shape (S,).

    score_s = max_r SSIM(sample_s, real_r).  With return_index=True also returns the argmax r.
    Images larger than 64x64 are compared in float32 (SINGLE_PRECISION_ABOVE): every pair costs a
    filtering of the whole image, so 64 samples against 2,000 slices of 256x256 take about half
    the time, and the means stay within 1e-6 of float64's (tested).

    Large searches look only among candidates: when S x R x pixels exceeds SEARCH_PAIR_PIXELS
    (e.g. 64 samples against 2,000 slices of 256x256), each sample is compared with the
    `candidates` real images nearest to it in pixel distance (default: as many as the budget
    allows, at least MIN_CANDIDATES), max over r in C_s of SSIM(sample_s, real_r).  That is never
    more than the exact score, and equal whenever the best match by SSIM is among the nearest by
    pixels (on the bundled 64x64 slices, 20 candidates of 106 gave means within 0.001 of the exact
    search for four runs' samples, and the identical score for the held-out real slices)."""
    pixels = int(np.prod(np.shape(real)[-2:]))
    big = pixels > SINGLE_PRECISION_ABOVE
    if candidates is None:
        candidates = len(real) if len(samples) * len(real) * pixels <= SEARCH_PAIR_PIXELS else \
            max(MIN_CANDIDATES, SEARCH_PAIR_PIXELS // (len(samples) * pixels))
    wanted = None
    if candidates < len(real):
        flat_s = as_image_stack(samples, "samples", np.float32).reshape(len(samples), -1)
        flat_r = as_image_stack(real, "real", np.float32).reshape(len(real), -1)
        distance = squared_distances(flat_s, flat_r)            # |s - r|^2, (S, R)
        nearest = np.argsort(distance, axis=1)[:, :candidates]
        wanted = np.zeros(distance.shape, bool)
        np.put_along_axis(wanted, nearest, True, axis=1)
    scores = ssim_matrix(samples, real, data_range, chunk, np.float32 if big else np.float64,
                         wanted=wanted)
    best = scores.argmax(axis=1)
    values = scores[np.arange(len(best)), best]
    return (values, best) if return_index else values


def _pair_from_rank(rank, n):
    """Map k in [0, n(n-1)/2) to the k-th pair (i, j), i < j, in row-major order."""
    row_starts = np.cumsum(np.r_[0, np.arange(n - 1, 0, -1)])   # first rank of each row i
    i = np.searchsorted(row_starts, rank, side="right") - 1
    j = rank - row_starts[i] + i + 1
    return i, j


def pairwise_ssim(images, data_range=2.0, max_pairs=None, seed=0):
    """Mean SSIM over distinct pairs i < j (diversity; lower means more diverse).

    All n(n-1)/2 pairs by default, the upper triangle of the SSIM matrix (each image's moments
    are then filtered once).  With max_pairs below that, a seeded random subset of that many distinct
    pairs is scored pair by pair instead.
    """
    images = as_image_stack(images)
    n = len(images)
    if n < 2:
        raise ValueError("pairwise_ssim needs at least two images")
    n_pairs = n * (n - 1) // 2
    if max_pairs is None or max_pairs >= n_pairs:
        upper = np.triu(np.ones((n, n), bool), k=1)              # each pair once
        return float(ssim_matrix(images, images, data_range, wanted=upper)[upper].mean())
    ranks = np.random.default_rng(seed).choice(n_pairs, size=int(max_pairs), replace=False)
    i, j = _pair_from_rank(np.sort(ranks), n)
    return float(ssim_batch(images[i], images[j], data_range).mean())
