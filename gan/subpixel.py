"""A transposed convolution as one stride-1 convolution followed by depth-to-space.

`lax.conv_transpose` (and the input gradient of a strided convolution, which is the same
operation) lowers to a convolution of the zero-dilated input. XLA's CPU backend runs that on a
slow generic path; ordinary stride-1 convolutions go to its fast library kernels. With stride s,
output pixel o = s*q + r - c (phase r of block q, shift c) reads the inputs q + dmin .. q + dmax
whatever its phase, so one stride-1 convolution with s*s*Cout output channels computes every
phase of every block at once, and depth-to-space interleaves them. Taps a phase does not use
are zero: for the DCGAN layer (k=4, s=2) that is (n+1)^2/n^2 of the exact work, 1.31x at n=7.
"""
import numpy as np
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")


def _plan(n, k, s, lo, hi):
    """One spatial dimension: (input pads (lo, hi), tap table [T, s], shift c, output size).

    tap table[j, r] is the kernel index phase r applies to input q + dmin + j (-1: none).
    The shift c is chosen to need the fewest taps T.
    """
    n_out = (n - 1) * s + lo + hi - k + 2
    c, dmin, dmax = min(((c, -((c + lo) // s), (s + k - 2 - c - lo) // s) for c in range(s)),
                        key=lambda p: p[2] - p[1])
    taps = np.full((dmax - dmin + 1, s), -1)
    for j in range(taps.shape[0]):
        for r in range(s):
            t = s * (dmin + j) + lo + c - r
            if 0 <= t < k:
                taps[j, r] = t
    blocks = -(-(n_out + c) // s)
    return (-dmin, blocks - 1 + dmax - (n - 1)), taps, c, n_out


def _pad_or_crop(x, axis, lo, hi):
    pads = [(0, 0)] * x.ndim
    pads[axis] = (max(lo, 0), max(hi, 0))
    x = jnp.pad(x, pads)
    return lax.slice_in_dim(x, max(-lo, 0), x.shape[axis] - max(-hi, 0), axis=axis)


def conv_transpose_subpixel(x, w, strides, pads):
    """Equals lax.conv_transpose(x, w, strides, pads, dimension_numbers=(NHWC, HWIO, NHWC)).

    x: (B, H, W, Cin), w: (kh, kw, Cin, Cout), strides (sh, sw), pads ((lo, hi), (lo, hi)).
    """
    b, _, _, cin = x.shape
    cout = w.shape[3]
    plans = [_plan(x.shape[1 + d], w.shape[d], strides[d], *pads[d]) for d in range(2)]
    (_, taps_h, c_h, n_h), (_, taps_w, c_w, n_w) = plans
    (sh, sw) = strides
    # kernel[jh, jw, Cin, rh, rw, Cout] = w[taps_h[jh, rh], taps_w[jw, rw]], zero where -1.
    kernel = w[np.clip(taps_h, 0, None)][:, :, np.clip(taps_w, 0, None)]  # jh rh jw rw I O
    used = (taps_h[:, :, None, None] >= 0) & (taps_w[None, None] >= 0)    # jh rh jw rw
    kernel = jnp.where(used[..., None, None], kernel, 0).transpose(0, 2, 4, 1, 3, 5)
    kernel = kernel.reshape(taps_h.shape[0], taps_w.shape[0], cin, sh * sw * cout)
    x = _pad_or_crop(_pad_or_crop(x, 1, *plans[0][0]), 2, *plans[1][0])
    y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS)
    qh, qw = y.shape[1:3]
    y = y.reshape(b, qh, qw, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, qh * sh, qw * sw, cout)
    return y[:, c_h:c_h + n_h, c_w:c_w + n_w]
