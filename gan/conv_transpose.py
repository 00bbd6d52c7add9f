"""Strided and transposed convolutions with no lhs-dilated convolution anywhere.

`lax.conv_transpose` is a convolution of the zero-dilated ("lhs-dilated") input, and so is the
input gradient of a strided convolution. XLA's CPU backend runs those on a slow generic path
(a transposed conv's autodiff weight gradient, another one, ~10x slower than an ordinary conv's).
The math is bilinear, so with v = the kernel flipped in space and with in/out channels swapped:

    <conv_transpose(x, w), gy> = <x, conv(gy, v)>      (conv: ordinary, stride s)

hence a transposed conv's dx = conv(gy, v) and dv = the ordinary conv's weight gradient at
cotangent x, and a strided conv's dx = conv_transpose(gy, v). Every conv_transpose here, forward
or gradient, is computed as a stride-1 conv plus depth-to-space (`gan.subpixel`).
`FastConvTranspose` and `FastConv` keep flax.linen.ConvTranspose's and Conv's parameter names
and shapes, so each is interchangeable with its flax counterpart.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from gan.subpixel import conv_transpose_subpixel

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
    return conv_transpose_subpixel(x, w, strides, pads)


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


def _conv_pads(in_shape, kernel_shape, strides):
    """Explicit (lo, hi) pads of a 'SAME' conv (output = ceil(input / stride)), as XLA's."""
    pads = []
    for n, k, s in zip(in_shape, kernel_shape, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x, w, strides, pads):
    """Same as lax.conv_general_dilated(x, w, strides, pads, NHWC/HWIO), fast input gradient."""
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMS)


def _conv_fwd(x, w, strides, pads):
    return strided_conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, residuals, gy):
    x, w = residuals
    # dx = conv_transpose(gy, v), padded so that it has x's shape: input i receives output o
    # through tap t = i - s*o + lo, i.e. flipped tap k-1-t at transposed-conv pad k-1-lo.
    adjoint_pads = []
    for n_in, n_out, k, s, (lo, _) in zip(x.shape[1:3], gy.shape[1:3], w.shape[:2], strides,
                                          pads):
        pad_lo = k - 1 - lo
        adjoint_pads.append((pad_lo, n_in - (n_out - 1) * s - pad_lo + k - 2))
    dx = conv_transpose_subpixel(gy, _flip_swap(w), strides, tuple(adjoint_pads))
    _, conv_vjp = jax.vjp(
        lambda v: lax.conv_general_dilated(x, v, strides, pads, dimension_numbers=_DIMS), w)
    (dw,) = conv_vjp(gy)
    return dx.astype(x.dtype), dw.astype(w.dtype)


strided_conv.defvjp(_conv_fwd, _conv_bwd)


class _SameConvLayer(nn.Module):
    """Kernel and bias as flax's nn.Conv / nn.ConvTranspose name and shape them; subclasses
    say which 'SAME' convolution applies the kernel."""
    features: int
    kernel_size: tuple
    strides: tuple
    use_bias: bool = True
    kernel_init: callable = nn.initializers.lecun_normal()
    bias_init: callable = nn.initializers.zeros
    dtype: jnp.dtype = None
    param_dtype: jnp.dtype = jnp.float32

    def convolve(self, x, kernel):
        raise NotImplementedError

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        y = self.convolve(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(y.dtype)
        return y


class FastConvTranspose(_SameConvLayer):
    """Drop-in for nn.ConvTranspose(features, (k, k), strides, padding='SAME')."""

    def convolve(self, x, kernel):
        kh, kw = self.kernel_size
        pads = (same_padding(kh, self.strides[0]), same_padding(kw, self.strides[1]))
        return conv_transpose(x, kernel, tuple(self.strides), pads)


class FastConv(_SameConvLayer):
    """Drop-in for nn.Conv(features, (k, k), strides, padding='SAME')."""

    def convolve(self, x, kernel):
        pads = _conv_pads(x.shape[1:3], self.kernel_size, self.strides)
        return strided_conv(x, kernel, tuple(self.strides), pads)
