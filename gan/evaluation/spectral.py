"""Power spectra of image sets: high-frequency energy and checkerboard artifacts vs the reals.

Images are uint8 (quantised like the reals) scaled to [0, 1]; each image's mean is removed so
the DC term does not swamp the rest. Frequencies are in cycles per pixel (Nyquist = 0.5).
"""
import numpy as np


def mean_power(images_uint8):
    """Mean |FFT2|^2 over a set of (N, H, W, 1) images, float64, unshifted (index 0 = DC)."""
    x = np.asarray(images_uint8, np.float64)[..., 0] / 255.0
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = np.zeros(x.shape[1:])
    for s in range(0, len(x), 1000):
        power += (np.abs(np.fft.fft2(x[s:s + 1000])) ** 2).sum(0)
    return power / (len(x) * x.shape[1] * x.shape[2])


def _radius(shape):
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    return np.hypot(fy, fx)


def radial_profile(power):
    """Azimuthal average in bins of width 1/H cycles per pixel, from 0 to the corner."""
    bins = np.rint(_radius(power.shape) * power.shape[0]).astype(int)
    return np.bincount(bins.ravel(), power.ravel()) / np.bincount(bins.ravel())


def high_frequency_energy(power, cutoff):
    return float(power[_radius(power.shape) > cutoff].sum())


def line_contrast(power):
    """Mean power on the Nyquist (1/2) and half-Nyquist (1/4) rows and columns, over the mean
    power on their neighbouring rows and columns: a stride-2 layer's periodic artifact puts
    power on these lines, while a smooth spectrum is similar on the neighbours."""
    h, w = power.shape
    if h % 4 or w % 4:
        raise ValueError(f"Checkerboard score needs image sides divisible by 4, got {h}x{w}.")
    def lines(n):
        at = {n // 2, n // 4, 3 * n // 4}
        return sorted(at), sorted({(i + d) % n for i in at for d in (-1, 1)} - at)
    (rows_on, rows_off), (cols_on, cols_off) = lines(h), lines(w)
    on = np.concatenate([power[rows_on].ravel(), power[:, cols_on].ravel()]).mean()
    off = np.concatenate([power[rows_off].ravel(), power[:, cols_off].ravel()]).mean()
    return float(on / off)


def spectral_metrics(fake_uint8, real_uint8, hf_cutoff=0.25):
    """hf_ratio > 1 means more high-frequency energy than the reals (artifacts), < 1 blur;
    checkerboard > 1 means more power on the stride-2 lines than the reals have."""
    if not 0 < hf_cutoff < np.sqrt(0.5):
        raise ValueError(f"hf_cutoff={hf_cutoff} must lie in (0, 0.707) cycles per pixel.")
    pf, pr = mean_power(fake_uint8), mean_power(real_uint8)
    return {"hf_ratio": high_frequency_energy(pf, hf_cutoff) / high_frequency_energy(pr, hf_cutoff),
            "checkerboard": line_contrast(pf) / line_contrast(pr),
            "spectrum_fake": [float(v) for v in radial_profile(pf)],
            "spectrum_real": [float(v) for v in radial_profile(pr)]}
