"""A transposed convolution whose gradients XLA's CPU backend runs fast.

`lax.conv_transpose` is a convolution of the zero-dilated input. Autodiff turns its weight
gradient into another lhs-dilated convolution, which XLA CPU runs ~10x slower than an ordinary
convolution's weight gradient. The math is bilinear, so with v = the kernel flipped in space and
with in/out channels swapped:

    <conv_transpose(x, w), gy> = <x, conv(gy, v)>      (conv: ordinary, stride s)

hence dx = conv(gy, v) and dv = the ordinary conv's weight gradient at cotangent x. Forward
values are `lax.conv_transpose`'s; `FastConvTranspose` keeps flax.linen.ConvTranspose's
parameter names and shapes, so the two are interchangeable.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")


def same_padding(kernel_size, stride):
    """Explicit (lo, hi) pads that `lax.conv_transpose(padding='SAME')` uses: output = stride * input."""
    pad_len = kernel_size + stride - 2
    pad_lo = kernel_size - 1 if stride > kernel_size - 1 else -(-pad_len // 2)  # ceil
    return pad_lo, pad_len - pad_lo


def _adjoint_padding(kernel_shape, pads):
    """Pads of the ordinary strided conv that is the adjoint of the transposed conv.

    `kernel_shape` is the kernel's spatial shape (kh, kw): each dimension uses its own size.
    """
    return tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_shape, pads))


def _flip_swap(w):
    """HWIO kernel -> spatially flipped kernel with I and O swapped (an involution)."""
    return jnp.swapaxes(w[::-1, ::-1], 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose(x, w, strides, pads):
    """Same as lax.conv_transpose(x, w, strides, pads, NHWC/HWIO) with fast gradients."""
    return lax.conv_transpose(x, w, strides, pads, dimension_numbers=_DIMS)


def _fwd(x, w, strides, pads):
    return conv_transpose(x, w, strides, pads), (x, w)


def _bwd(strides, pads, residuals, gy):
    x, w = residuals
    adjoint_pads = _adjoint_padding(w.shape[:2], pads)

    def conv(v):
        return lax.conv_general_dilated(gy, v, strides, adjoint_pads, dimension_numbers=_DIMS)

    dx, conv_vjp = jax.vjp(conv, _flip_swap(w))
    (dv,) = conv_vjp(x.astype(dx.dtype))
    return dx.astype(x.dtype), _flip_swap(dv).astype(w.dtype)


conv_transpose.defvjp(_fwd, _bwd)


class FastConvTranspose(nn.Module):
    """Drop-in for nn.ConvTranspose(features, (k, k), strides, padding='SAME')."""
    features: int
    kernel_size: tuple
    strides: tuple
    use_bias: bool = True
    kernel_init: callable = nn.initializers.lecun_normal()
    bias_init: callable = nn.initializers.zeros
    dtype: jnp.dtype = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        pads = (same_padding(kh, self.strides[0]), same_padding(kw, self.strides[1]))
        y = conv_transpose(x, kernel, tuple(self.strides), pads)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(y.dtype)
        return y
