"""Feature spaces for the sample-quality metrics, needing no downloaded weights.

The k-nearest-neighbour metrics (evaluation/coverage.py) and KID (evaluation/kid.py) compare two
clouds of points.  Published numbers use Inception-v3 or VGG-16 activations, pretrained on
ImageNet; a course machine may not be able to download those weights, and ImageNet features were
never meant for greyscale brain slices anyway.  So the default here is a feature space fitted on
the real training images themselves:

PCA of the training images (Pearson 1901; Hotelling 1933).  Flatten each image to a row of D = H*W
pixels; with the training rows X (n, D), mean m and the economy SVD of the centred rows
X - m = U S V^T (singular values s_1 >= s_2 >= ...), the features of any image x are

    f(x) = V_d^T (x - m) / c,    c = sqrt( sum_{i<=d} s_i^2 / (n d) )

i.e. the coordinates of x along the d directions in which the training images vary most, divided
by one number c so that the training features have mean squared coordinate 1.  That single scale
changes no nearest-neighbour ranking (precision, recall, density and coverage are unchanged when
all distances are multiplied by the same number), and keeps x.y / d of order 1 in KID's kernel.
Each principal axis is given the sign that makes its largest-magnitude entry positive, so the
features do not depend on the LAPACK build.

Why PCA: it needs nothing but the training images, it is fitted once in well under a second
(an SVD of a few hundred rows), it is deterministic, a student can inspect its axes as images, and
Euclidean distance between features is the pixel distance within the subspace that holds most of
the data's variance (on the bundled 64x64 slices d = 32 keeps 99.5% of it).

What it cannot see.  PCA is linear and global, so it measures layout and intensity structure (where
the brain is, how big, how bright the ventricles are), not fine texture: the small components it
drops are where sharp edges, noise and checkerboard artefacts live, so a blurry or noisy sample
can land right next to a real one.  It is not shift-invariant: a brain moved by a few pixels is
a different point, farther away than many different brains that are aligned.  It only knows the
variation present in the training images: a new kind of artefact that is orthogonal to every
principal axis is invisible (only its projection counts).  Numbers computed with different fits
(other data, image size or d) are not comparable.

Any other extractor can be plugged in instead (for example the project's own trained VQ-VAE
encoder, averaged over positions): the metrics only need an object with
``transform(images) -> float64 (N, d)``, taking images of shape (N, 1, H, W) in [-1, 1].
"""
import numpy as np

from nn.backend import to_numpy

FIT_OPERATIONS = 2e10   # the PCA fit uses at most sqrt(FIT_OPERATIONS / pixels) images

DEFAULT_DIMS = 32
TRANSFORM_CHUNK = 512            # images converted to float64 at a time (memory, not results)


def check_images(images, name="images"):
    """Check a stack of (N, 1, H, W) finite images in about [-1, 1]; returns it as a NumPy array.

    Values a little outside [-1, 1] are accepted (a generator's raw output); values beyond
    +-1.5 mean the images are not in the models' range (uint8 0..255 passed by mistake?).
    """
    images = to_numpy(images)
    if images.ndim != 4 or images.shape[1] != 1 or len(images) == 0:
        raise ValueError(f"{name}: expected a non-empty (N, 1, H, W) stack, got shape "
                         f"{images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name}: expected float images in [-1, 1], got dtype {images.dtype}; "
                         "convert uint8 images with data.to_float")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if np.abs(images).max() > 1.5:
        raise ValueError(f"{name}: values reach {np.abs(images).max():.3g}, expected [-1, 1]; "
                         "convert uint8 images with data.to_float")
    return images


def flatten(images, name="images"):
    """(N, 1, H, W) images -> float64 rows (N, H*W)."""
    images = check_images(images, name)
    return images.reshape(len(images), -1).astype(np.float64)


class PixelFeatures:
    """The identity feature space: every pixel is a coordinate, f(x) = x (float64, (N, H*W))."""

    def fit(self, real_images, dims=None):
        """Nothing to learn; kept so that every extractor is used the same way."""
        return self

    def transform(self, images):
        return flatten(images)


def singular_values_and_axes(centred):
    """s and V^T of the thin SVD centred = U diag(s) V^T, largest first.

    Images have far more pixels D than there are images n, so this works on the n x n Gram matrix
    K = X X^T = U diag(s^2) U^T (eigh) and recovers V^T = diag(1/s) U^T X: about 2 n^2 D
    operations in matrix products, which run many times faster than LAPACK's SVD of the wide X
    (550 images of 256x256: 39 s for the SVD on one core, measured). Axes whose s is zero
    (at most n - 1 are not, for centred rows) are left as zero rows."""
    n, pixels = centred.shape
    if n >= pixels:
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        return s, vt
    eigenvalues, u = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(eigenvalues)[::-1]
    s = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    u = u[:, order]
    kept = s > s[0] * 1e-10 if s[0] > 0 else np.zeros(n, bool)
    vt = np.zeros((n, pixels))
    vt[kept] = (u[:, kept].T @ centred) / s[kept, None]
    return s, vt


class PCAFeatures:
    """PCA of the real training images, fitted once (see the module docstring for the formula).

        extractor = PCAFeatures().fit(train_images, dims=32)      # (N, 1, H, W) in [-1, 1]
        f = extractor.transform(samples)                          # float64 (M, 32)

    Fitted state: mean (D,), components (d, D) with orthonormal rows (V_d^T), scale c, and
    explained_variance_ratio (d,) = s_i^2 / sum_j s_j^2.
    """

    def __init__(self):
        self.mean = self.components = self.scale = self.explained_variance_ratio = None
        self.image_shape = None

    @property
    def dims(self):
        return None if self.components is None else len(self.components)

    def fit(self, real_images, dims=DEFAULT_DIMS, max_images=2000, seed=0):
        """Fit on real images; d = min(dims, n - 1) (n - 1 is the most centred rows can span).

        max_images: fit on a seeded random subset of at most that many images, and of at most
        sqrt(FIT_OPERATIONS / D) for images of D pixels: the fit (singular_values_and_axes) costs
        about 2 n^2 D operations, so 2,000 images of 64x64 take seconds, and at 256x256 the fit
        uses ~550 of them (seconds; 32 axes are well estimated from those).
        """
        images = check_images(real_images, "real_images")
        if len(images) < 2:
            raise ValueError("PCAFeatures.fit needs at least two images")
        if dims < 1:
            raise ValueError(f"dims must be at least 1, got {dims}")
        pixels = int(np.prod(images.shape[1:]))
        max_images = max(2, min(max_images, int((FIT_OPERATIONS / pixels) ** 0.5)))
        if len(images) > max_images:
            keep = np.random.default_rng(seed).choice(len(images), size=max_images, replace=False)
            images = images[np.sort(keep)]
        rows = images.reshape(len(images), -1).astype(np.float64)
        self.image_shape = images.shape[1:]
        self.mean = rows.mean(axis=0)
        centred = rows - self.mean
        s, vt = singular_values_and_axes(centred)
        d = min(int(dims), len(rows) - 1)
        vt = vt[:d]
        signs = np.sign(vt[np.arange(d), np.abs(vt).argmax(axis=1)])
        self.components = vt * signs[:, None]
        total = (s ** 2).sum()
        self.explained_variance_ratio = s[:d] ** 2 / total if total > 0 else np.zeros(d)
        self.scale = float(np.sqrt((s[:d] ** 2).sum() / (len(rows) * d))) or 1.0
        return self

    def transform(self, images):
        """Features f(x) = V_d^T (x - m) / c of (N, 1, H, W) images: float64 (N, d)."""
        if self.components is None:
            raise ValueError("PCAFeatures: call fit(real_images) before transform")
        images = check_images(images)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"images of shape {images.shape[1:]} but the PCA was fitted on "
                             f"{self.image_shape}")
        out = np.empty((len(images), self.dims))
        for i in range(0, len(images), TRANSFORM_CHUNK):
            rows = images[i:i + TRANSFORM_CHUNK].reshape(-1, self.mean.size).astype(np.float64)
            out[i:i + TRANSFORM_CHUNK] = (rows - self.mean) @ self.components.T / self.scale
        return out
