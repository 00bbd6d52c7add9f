"""Images to evaluate: validated and quantised to uint8 (N, H, W, 1), the way reals are stored."""
import glob
import os

import numpy as np
from PIL import Image

from gan.data import to_uint8
from gan.errors import UserFacingError

MIN_IMAGES = 10  # the k = 5 neighbour balls and KID's subsets need a few; metrics are noisy below ~1000


class SampleError(UserFacingError, ValueError):
    """Images to evaluate have a bad shape, dtype, value range or count."""


def as_uint8_images(array, name="samples"):
    """uint8, or float in [-1, 1], shaped (N, H, W) or (N, H, W, 1) -> uint8 (N, H, W, 1)."""
    a = np.asarray(array)
    shape = a.shape
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] != 1 or a.shape[1] != a.shape[2]:
        raise SampleError(f"{name}: shape {shape}; expected grayscale square images shaped "
                          "(N, H, W) or (N, H, W, 1), e.g. (10000, 28, 28).")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise SampleError(f"{name}: integer values span [{a.min()}, {a.max()}]; integers must "
                              "be pixel values in [0, 255] (save them as uint8).")
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.floating):
        raise SampleError(f"{name}: dtype {a.dtype}; expected uint8 or float in [-1, 1].")
    if not np.all(np.isfinite(a)):
        raise SampleError(f"{name}: {int(np.sum(~np.isfinite(a)))} values are NaN or infinite.")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1.001 or hi > 1.001:
        raise SampleError(f"{name}: float values span [{lo:.3g}, {hi:.3g}]; floats must be in "
                          "[-1, 1] (the generator's tanh range). Uint8 pixels must be saved as uint8.")
    if lo >= 0:
        raise SampleError(f"{name}: float values span [{lo:.3g}, {hi:.3g}], which looks like [0, 1] "
                          "images; floats must be in [-1, 1]: pass 2 * x - 1, or uint8 pixels.")
    return to_uint8(a)


def check_count(images, num_samples=None, name="samples"):
    """The first `num_samples` images (all if None), after checking there are enough."""
    need = num_samples or len(images)
    if need < MIN_IMAGES or len(images) < need:
        raise SampleError(f"{name}: {len(images)} images, but {max(need, MIN_IMAGES)} are needed "
                          f"(num_samples={num_samples}, minimum {MIN_IMAGES}); pass more images, "
                          f"or a num_samples between {MIN_IMAGES} and the number of images.")
    return images[:need]


def load_samples(path):
    """A .npy, a .npz (its one array, or its 'images' array) or a folder of PNGs -> uint8 (N, H, W, 1)."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.png")))
        if not files:
            raise SampleError(f"{path}: folder holds no .png files.")
        arrays = []
        for f in files:
            with Image.open(f) as im:
                if im.mode not in ("L", "1", "P", "RGB", "RGBA"):
                    raise SampleError(f"{f}: image mode {im.mode}; expected 8-bit grayscale PNGs.")
                a = np.asarray(im.convert("RGB") if im.mode != "L" else im)
            if a.ndim == 3:
                if np.any(a[..., 0] != a[..., 1]) or np.any(a[..., 0] != a[..., 2]):
                    raise SampleError(f"{f}: a colour image; expected grayscale.")
                a = a[..., 0]
            arrays.append(a)
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise SampleError(f"{path}: PNGs of different sizes {sorted(shapes)}; all must match.")
        return as_uint8_images(np.stack(arrays), path)
    if not os.path.isfile(path):
        raise SampleError(f"{path}: no such file or folder.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SampleError(f"{path}: not a readable .npy/.npz file ({e}).") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if len(keys) != 1 and "images" not in keys:
                raise SampleError(f"{path}: .npz holds arrays {keys}; store one array, or name the "
                                  "images 'images'.")
            loaded = loaded["images" if "images" in keys else keys[0]]
    return as_uint8_images(loaded, path)
