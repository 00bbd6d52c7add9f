"""Sample grids as PNG files."""
import math

import numpy as np
from PIL import Image

from gan.data import to_uint8


def make_grid(images, columns=None, pad=2):
    """(N, H, W, C) images in [-1, 1] (float) or uint8 -> one uint8 (rows*H, cols*W) or RGB grid."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid[..., 0] if c == 1 else grid


def save_grid(images, path, columns=None, scale=2):
    """Writes a PNG grid; `scale` enlarges pixels (nearest) so 28x28 digits are readable."""
    grid = Image.fromarray(make_grid(images, columns))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    grid.save(path)
