"""FID and KID on classifier features, in float64.

The matrix square root is taken of a symmetric PSD matrix by eigendecomposition, so FID stays
real and finite when a covariance is singular (all images identical, or fewer images than
feature dimensions), where `scipy.linalg.sqrtm(s1 @ s2)` can return complex or inf values.
"""
import numpy as np


def feature_stats(features):
    """Mean and covariance (float64) of (N, D) features; a single image has zero covariance."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        return f.mean(0), np.zeros((f.shape[1], f.shape[1]))
    return f.mean(0), np.cov(f, rowvar=False)


def sqrtm_psd(a):
    """Square root of a symmetric PSD matrix; eigenvalues below 0 (rounding) are clipped to 0."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1, s2):
    """tr sqrtm(s1 s2) = tr sqrtm(r s2 r) with r = sqrtm(s1): the right side is symmetric PSD."""
    r = sqrtm_psd(s1)
    m = r @ s2 @ r
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)).sum())


def frechet_distance(mu1, s1, mu2, s2):
    diff = mu1 - mu2
    d = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return max(float(d), 0.0)  # tiny negative values are rounding


def fid(real_features, fake_features):
    return frechet_distance(*feature_stats(real_features), *feature_stats(fake_features))


def _mmd2_unbiased(x, y):
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018)."""
    n, d = len(x), x.shape[1]
    cube = lambda k: k * k * k  # 4x faster than k ** 3
    kxx, kyy, kxy = (cube(a @ b.T / d + 1.0) for a, b in ((x, x), (y, y), (x, y)))
    off_diag = lambda k: (k.sum() - np.trace(k)) / (n * (n - 1))
    return off_diag(kxx) + off_diag(kyy) - 2.0 * kxy.mean()


def kid(real_features, fake_features, num_subsets=100, subset_size=1000, seed=0):
    """(mean, std) of the unbiased MMD^2 over random subsets of min(subset_size, N/2) images each.

    At most half of each set per subset, so subsets differ and the std means something also
    when N <= subset_size (with subsets of the whole set it was ~0)."""
    x, y = (np.asarray(f, np.float64) for f in (real_features, fake_features))
    n = min(subset_size, len(x) // 2, len(y) // 2)
    if n < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(x)} real, {len(y)} fake.")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(len(x), n, replace=False)],
                             y[rng.choice(len(y), n, replace=False)]) for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))
