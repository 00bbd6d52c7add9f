"""DCGAN generator and discriminator (Flax Linen), with the upsampling block under ablation.

Every upsampler maps (B, H, W, C) -> (B, 2H, 2W, features) with a (k, k, C, features) kernel,
so the arms of claim C1 have identical parameter counts and differ only in how they upsample.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan.conv_transpose import FastConv, FastConvTranspose

UPSAMPLERS = ("transpose", "bilinear", "nearest")
TRANSPOSE_IMPLS = ("custom_vjp", "flax")
D_ACTIVATIONS = ("leaky_relu", "relu")
D_NORMS = ("none", "batch")
# Image size -> (start resolution of G / end resolution of D, number of stride-2 layers).
SIZE_PATTERNS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}

_init = nn.initializers.normal(0.02)  # DCGAN's N(0, 0.02) weights


def size_pattern(image_size):
    if image_size not in SIZE_PATTERNS:
        raise ValueError(f"No stride-2 pattern fits image size {image_size}; supported sizes: "
                         f"{sorted(SIZE_PATTERNS)} (set config.dataset.image_size to one of them).")
    return SIZE_PATTERNS[image_size]


class Upsample(nn.Module):
    """x2 spatial upsampling: a stride-2 transposed conv, or a resize followed by a stride-1 conv."""
    features: int
    method: str = "transpose"
    kernel_size: int = 4
    transpose_impl: str = "custom_vjp"
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = (self.kernel_size, self.kernel_size)
        if self.method == "transpose":
            if self.transpose_impl not in TRANSPOSE_IMPLS:
                raise ValueError(f"Unknown transpose_impl {self.transpose_impl!r}; "
                                 f"valid: {TRANSPOSE_IMPLS}.")
            layer = FastConvTranspose if self.transpose_impl == "custom_vjp" else functools.partial(
                nn.ConvTranspose, padding="SAME")
            # One parameter path for both impls, so a checkpoint of either restores into the
            # other (the name is the custom_vjp default's auto-name: old checkpoints stay valid).
            return layer(self.features, k, strides=(2, 2), use_bias=self.use_bias,
                         kernel_init=_init, dtype=self.dtype, name="FastConvTranspose_0")(x)
        b, h, w, c = x.shape
        if self.method == "nearest":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # exact nearest x2, cheap to differentiate
        elif self.method == "bilinear":
            x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")
        else:
            raise ValueError(f"Unknown upsample {self.method!r}; valid: {UPSAMPLERS}.")
        return nn.Conv(self.features, k, padding="SAME", use_bias=self.use_bias,
                       kernel_init=_init, dtype=self.dtype)(x)


class Generator(nn.Module):
    """z -> dense -> s0 x s0 -> ... -> image_size x image_size, BatchNorm + ReLU, tanh output."""
    image_size: int = 28
    channels: int = 1
    features: int = 64
    upsample: str = "transpose"
    kernel_size: int = 4
    transpose_impl: str = "custom_vjp"
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str = None  # pmap axis over which BatchNorm statistics are synchronised

    @nn.compact
    def __call__(self, z, train: bool = True):
        start, n_up = size_pattern(self.image_size)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 dtype=self.dtype, axis_name=self.bn_axis_name)
        width = self.features * 2 ** (n_up - 1)
        x = nn.Dense(start * start * width, use_bias=False, kernel_init=_init, dtype=self.dtype)(z)
        x = nn.relu(norm()(x)).reshape(z.shape[0], start, start, width)
        for i in range(n_up - 1):
            width //= 2
            x = Upsample(width, self.upsample, self.kernel_size, self.transpose_impl,
                         use_bias=False, dtype=self.dtype)(x)
            x = nn.relu(norm()(x))
        x = Upsample(self.channels, self.upsample, self.kernel_size, self.transpose_impl,
                     dtype=self.dtype)(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """Stride-2 convs with ReLU or LeakyReLU, optional BatchNorm (not on the first layer), one logit.

    `__call__(..., return_preactivations=True)` also returns each hidden layer's
    pre-activation, which the dead-unit metric of claim C2 needs.
    """
    image_size: int = 28
    features: int = 64
    kernel_size: int = 4
    activation: str = "leaky_relu"
    leaky_slope: float = 0.2
    norm: str = "none"
    transpose_impl: str = "custom_vjp"  # the input gradient of a strided conv is a transposed conv
    dtype: jnp.dtype = jnp.float32
    bn_axis_name: str = None  # pmap axis over which BatchNorm statistics are synchronised

    @nn.compact
    def __call__(self, x, train: bool = True, return_preactivations: bool = False):
        _, n_down = size_pattern(self.image_size)
        if self.transpose_impl == "custom_vjp":
            conv = FastConv
        elif self.transpose_impl == "flax":
            conv = functools.partial(nn.Conv, padding="SAME")
        else:
            raise ValueError(f"Unknown transpose_impl {self.transpose_impl!r}; "
                             f"valid: {TRANSPOSE_IMPLS}.")
        if self.activation == "leaky_relu":
            act = functools.partial(nn.leaky_relu, negative_slope=self.leaky_slope)
        elif self.activation == "relu":
            act = nn.relu
        else:
            raise ValueError(f"Unknown d_activation {self.activation!r}; valid: {D_ACTIVATIONS}.")
        if self.norm not in D_NORMS:
            raise ValueError(f"Unknown d_norm {self.norm!r}; valid: {D_NORMS}.")
        preacts = []
        x = x.astype(self.dtype)
        for i in range(n_down):
            use_norm = self.norm == "batch" and i > 0
            # Named as nn.Conv auto-names itself: both impls share one parameter path.
            x = conv(self.features * 2 ** i, (self.kernel_size,) * 2, strides=(2, 2),
                     use_bias=not use_norm, kernel_init=_init, dtype=self.dtype,
                     name=f"Conv_{i}")(x)
            if use_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 axis_name=self.bn_axis_name)(x)
            preacts.append(x)
            x = act(x)
        logit = nn.Dense(1, kernel_init=_init, dtype=self.dtype)(x.reshape(x.shape[0], -1))
        logit = logit[:, 0].astype(jnp.float32)
        return (logit, preacts) if return_preactivations else logit


def make_models(config, image_size, channels=1, dtype=jnp.float32, bn_axis_name=None):
    m = config.model
    generator = Generator(image_size=image_size, channels=channels, features=m.g_features,
                          upsample=m.upsample, kernel_size=m.kernel_size,
                          transpose_impl=m.transpose_impl, dtype=dtype, bn_axis_name=bn_axis_name)
    discriminator = Discriminator(image_size=image_size, features=m.d_features,
                                  kernel_size=m.kernel_size, activation=m.d_activation,
                                  leaky_slope=m.leaky_slope, norm=m.d_norm,
                                  transpose_impl=m.transpose_impl, dtype=dtype,
                                  bn_axis_name=bn_axis_name)
    return generator, discriminator


def param_count(params):
    return sum(int(p.size) for p in jax.tree.leaves(params))
