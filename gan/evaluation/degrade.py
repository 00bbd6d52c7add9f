"""Known degradations of real images, for calibrating the metrics: each must move them the
right way. All take and return uint8 (N, H, W, 1)."""
import numpy as np
from scipy import ndimage


def _quantise(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blur(images, sigma):
    """Gaussian blur with standard deviation `sigma` pixels."""
    return _quantise(ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0)))


def noise(images, sigma, seed=0):
    """Additive Gaussian noise; `sigma` on the [0, 1] pixel scale."""
    rng = np.random.default_rng(seed)
    return _quantise(images + rng.normal(0.0, 255.0 * sigma, images.shape))


def checkerboard(images, amplitude):
    """Strokes modulated by a period-2 pattern, 1 +- amplitude: the uneven-overlap artifact of a
    stride-2 transposed convolution, which scales its input rather than adding to the background."""
    h, w = images.shape[1:3]
    pattern = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2, -1.0, 1.0)
    return _quantise(images * (1.0 + amplitude * pattern)[None, :, :, None])


def drop_classes(images, labels, num_dropped, n, seed=0):
    """n images drawn from the classes num_dropped..9 only (classes 0..num_dropped-1 are missing)."""
    keep = np.flatnonzero(labels >= num_dropped)
    rng = np.random.default_rng(seed)
    return images[rng.choice(keep, n, replace=len(keep) < n)]


def collapse(images, n, index=0):
    """One image repeated n times: a fully collapsed generator."""
    return np.repeat(images[index:index + 1], n, axis=0)
