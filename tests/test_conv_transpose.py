"""gan.conv_transpose.FastConvTranspose and FastConv: same forward values and gradients as
flax.linen.ConvTranspose / Conv(padding='SAME') with the same parameters, for many shapes;
gan.subpixel equals lax.conv_transpose for any pads; and no lhs-dilated convolution (XLA CPU's
slow path) is left in their forward or gradients.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import models
from jax import lax

from gan.conv_transpose import FastConv, FastConvTranspose
from gan.subpixel import conv_transpose_subpixel

# (kernel_size, strides, in_channels, out_channels, height, width)
CASES = [
    ((4, 4), (2, 2), 3, 5, 7, 7),  # the DCGAN layer shape
    ((3, 3), (2, 2), 2, 4, 5, 6),  # odd kernel, non-square input
    ((5, 5), (2, 2), 3, 3, 4, 4),
    ((3, 3), (1, 1), 3, 2, 5, 5),  # stride 1
    ((1, 1), (2, 2), 3, 2, 4, 4),  # kernel smaller than the stride
    ((2, 2), (2, 2), 1, 2, 4, 3),
    ((4, 4), (3, 3), 2, 2, 4, 4),  # stride 3
    ((3, 5), (2, 2), 2, 3, 5, 5),  # non-square kernel
    ((4, 4), (2, 1), 2, 3, 5, 5),  # different strides per axis
    ((2, 4), (1, 2), 2, 3, 5, 4),
]


def _variables(kernel_size, c_in, c_out, use_bias=True, seed=0):
    rng = np.random.default_rng(seed)
    params = {"kernel": rng.normal(size=(*kernel_size, c_in, c_out)).astype(np.float32)}
    if use_bias:
        params["bias"] = rng.normal(size=(c_out,)).astype(np.float32)
    return {"params": params}


def _value_and_grads(module, variables, x, cotangent):
    """Output, and gradients of <output, cotangent> w.r.t. (params, input), under jit."""
    def f(v, x):
        y = module.apply(v, x)
        return jnp.sum(y * cotangent), y
    (_, y), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(variables, x)
    return y, grads


def _assert_close(actual, expected, what, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("kernel_size, strides, c_in, c_out, h, w, use_bias",
                         [case + (True,) for case in CASES] + [CASES[0] + (False,)])
def test_matches_flax_conv_transpose(kernel_size, strides, c_in, c_out, h, w, use_bias):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, h, w, c_in)).astype(np.float32)
    variables = _variables(kernel_size, c_in, c_out, use_bias)
    ref = nn.ConvTranspose(c_out, kernel_size, strides, padding="SAME", use_bias=use_bias)
    fast = FastConvTranspose(c_out, kernel_size, strides, use_bias=use_bias)

    # 'SAME' transposed conv: output = stride * input size.
    out_shape = (2, h * strides[0], w * strides[1], c_out)
    cotangent = rng.normal(size=out_shape).astype(np.float32)
    y_ref, (gv_ref, gx_ref) = _value_and_grads(ref, variables, x, cotangent)
    y, (gv, gx) = _value_and_grads(fast, variables, x, cotangent)
    assert y.shape == y_ref.shape == out_shape
    _assert_close(y, y_ref, "forward")
    _assert_close(gx, gx_ref, "gradient w.r.t. the input")
    _assert_close(gv["params"]["kernel"], gv_ref["params"]["kernel"], "gradient w.r.t. kernel")
    if use_bias:
        _assert_close(gv["params"]["bias"], gv_ref["params"]["bias"], "gradient w.r.t. bias")
    assert np.any(np.asarray(gv["params"]["kernel"]) != 0)  # a live gradient, not all zeros


def test_parameters_are_interchangeable():
    """Same parameter names, shapes and dtypes as nn.ConvTranspose: checkpoints swap freely."""
    x = jnp.zeros((2, 7, 7, 6))
    shapes = {}
    for layer in (FastConvTranspose(3, (4, 4), (2, 2)),
                  nn.ConvTranspose(3, (4, 4), (2, 2), padding="SAME")):
        v = jax.eval_shape(lambda k, layer=layer: layer.init(k, x), jax.random.PRNGKey(0))
        shapes[type(layer).__name__] = jax.tree.map(lambda s: (s.shape, s.dtype), v)
    assert shapes["FastConvTranspose"] == shapes["ConvTranspose"]


def _count_lhs_dilated_convs(jaxpr):
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated" and any(
                d != 1 for d in eqn.params["lhs_dilation"]):
            count += 1
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (tuple, list)) else (param,)):
                inner = getattr(sub, "jaxpr", None)  # ClosedJaxpr -> Jaxpr
                if inner is not None and hasattr(inner, "eqns"):
                    count += _count_lhs_dilated_convs(inner)
                elif hasattr(sub, "eqns"):
                    count += _count_lhs_dilated_convs(sub)
    return count


def _lhs_dilated_in_forward_and_gradients(layer, x, variables):
    grad = jax.grad(lambda v, x: jnp.sum(layer.apply(v, x)), argnums=(0, 1))
    return _count_lhs_dilated_convs(jax.make_jaxpr(grad)(variables, x).jaxpr)


def test_no_lhs_dilated_conv_anywhere():
    """The fast path's point: flax's transposed conv is lhs-dilated in its forward and weight
    gradient, a strided conv in its input gradient; the fast layers have none of them."""
    x = jnp.ones((2, 8, 8, 8))
    variables = _variables((4, 4), 8, 4)
    count = functools.partial(_lhs_dilated_in_forward_and_gradients, x=x, variables=variables)
    assert count(nn.ConvTranspose(4, (4, 4), (2, 2), padding="SAME")) == 2  # sanity of the probe
    assert count(nn.Conv(4, (4, 4), (2, 2), padding="SAME")) == 1
    assert count(FastConvTranspose(4, (4, 4), (2, 2))) == 0
    assert count(FastConv(4, (4, 4), (2, 2))) == 0


def _conv_transpose_by_definition(x, w, stride, pads):
    """y[o] = sum_t xd[o + t] w[t], xd the input dilated by `stride` and padded by `pads`."""
    (lo_h, hi_h), (lo_w, hi_w) = pads
    b, h, wd, _ = x.shape
    kh, kw, _, c_out = w.shape
    y = np.zeros((b, (h - 1) * stride + lo_h + hi_h - kh + 2,
                  (wd - 1) * stride + lo_w + hi_w - kw + 2, c_out))
    for oh, ow, th, tw in np.ndindex(y.shape[1], y.shape[2], kh, kw):
        ph, pw = oh + th - lo_h, ow + tw - lo_w
        i, j = ph // stride, pw // stride
        if ph % stride == 0 and pw % stride == 0 and 0 <= i < h and 0 <= j < wd:
            y[:, oh, ow] += x[:, i, j] @ w[th, tw]
    return y


@pytest.mark.parametrize("kernel_size, strides", [(4, 2), (3, 2), (5, 2), (1, 2), (2, 2), (4, 3),
                                                  (3, 1), (5, 3)])
@pytest.mark.parametrize("size", [5, 7, 8])
def test_subpixel_matches_the_definition(kernel_size, strides, size):
    """Any explicit pads, including negative ones (a crop) and ones larger than the kernel.
    The reference is the definition, not lax.conv_transpose: XLA CPU's own lhs-dilated conv
    returns garbage for negative pads (seen with jaxlib 0.10.2)."""
    rng = np.random.default_rng(kernel_size * 100 + strides * 10 + size)
    x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    w = rng.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32)
    for pads in [(0, 0), (kernel_size - 1, kernel_size - 1), (1, 0), (0, 2), (-1, 1),
                 (kernel_size + 1, 1)]:
        expected = _conv_transpose_by_definition(x, w, strides, (pads, pads))
        if min(expected.shape[1:3]) <= 0:
            continue
        _assert_close(conv_transpose_subpixel(x, w, (strides,) * 2, (pads, pads)), expected,
                      f"pads {pads}")


def test_subpixel_equals_lax_conv_transpose_on_the_dcgan_layer():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 7, 7, 6)).astype(np.float32)
    w = rng.normal(size=(4, 4, 6, 5)).astype(np.float32)
    expected = lax.conv_transpose(x, w, (2, 2), ((2, 2), (2, 2)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _assert_close(conv_transpose_subpixel(x, w, (2, 2), ((2, 2), (2, 2))), expected, "DCGAN")


# (kernel_size, strides, in_channels, out_channels, height, width) of strided convs
CONV_CASES = [
    ((4, 4), (2, 2), 5, 3, 14, 14),  # the DCGAN layer shape
    ((4, 4), (2, 2), 1, 4, 28, 28),
    ((4, 4), (2, 2), 2, 3, 7, 7),    # odd size: asymmetric SAME pads
    ((3, 3), (2, 2), 2, 4, 5, 6),
    ((5, 5), (2, 2), 3, 3, 8, 8),
    ((3, 3), (1, 1), 3, 2, 5, 5),
    ((1, 1), (2, 2), 3, 2, 4, 4),
    ((4, 4), (3, 3), 2, 2, 10, 9),
    ((3, 5), (2, 1), 2, 3, 6, 5),
]


@pytest.mark.parametrize("kernel_size, strides, c_in, c_out, h, w", CONV_CASES)
def test_fast_conv_matches_flax_conv(kernel_size, strides, c_in, c_out, h, w):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, h, w, c_in)).astype(np.float32)
    variables = _variables(kernel_size, c_in, c_out)
    ref = nn.Conv(c_out, kernel_size, strides, padding="SAME")
    fast = FastConv(c_out, kernel_size, strides)
    shapes = [jax.eval_shape(lambda k, m=m: m.init(k, x), jax.random.PRNGKey(0))
              for m in (ref, fast)]
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes[0]) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes[1])
    y_shape = jax.eval_shape(ref.apply, variables, x).shape
    cotangent = rng.normal(size=y_shape).astype(np.float32)
    y_ref, (gv_ref, gx_ref) = _value_and_grads(ref, variables, x, cotangent)
    y, (gv, gx) = _value_and_grads(fast, variables, x, cotangent)
    _assert_close(y, y_ref, "forward")
    _assert_close(gx, gx_ref, "gradient w.r.t. the input")
    _assert_close(gv["params"]["kernel"], gv_ref["params"]["kernel"], "gradient w.r.t. kernel")
    _assert_close(gv["params"]["bias"], gv_ref["params"]["bias"], "gradient w.r.t. bias")
    assert np.any(np.asarray(gx) != 0)


def test_vmap_over_replicas():
    """Independent replicas (vmap over parameters and inputs) get each replica's own gradient."""
    layer = FastConvTranspose(3, (4, 4), (2, 2))
    rng = np.random.default_rng(2)
    kernels = rng.normal(size=(2, 4, 4, 2, 3)).astype(np.float32)
    xs = rng.normal(size=(2, 2, 5, 5, 2)).astype(np.float32)

    def loss(kernel, x):
        return jnp.sum(jnp.sin(layer.apply({"params": {"kernel": kernel, "bias": jnp.zeros(3)}},
                                           x)))

    grad = jax.grad(loss, argnums=(0, 1))
    batched = jax.jit(jax.vmap(grad))(kernels, xs)
    for i in range(2):
        single = grad(kernels[i], xs[i])
        _assert_close(batched[0][i], single[0], f"replica {i} kernel gradient")
        _assert_close(batched[1][i], single[1], f"replica {i} input gradient")


def test_generator_transpose_impls_agree():
    """Generator(transpose_impl='custom_vjp') == Generator(transpose_impl='flax'), same params,
    forward and every parameter gradient (train mode, BatchNorm included)."""
    z = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    gens = {impl: models.Generator(features=4, upsample="transpose", transpose_impl=impl)
            for impl in models.TRANSPOSE_IMPLS}
    shapes, shapes_fast = (
        jax.eval_shape(lambda k, g=g: g.init(k, z, train=False), jax.random.PRNGKey(0))
        for g in (gens["flax"], gens["custom_vjp"]))
    # Same parameter paths and shapes: a checkpoint of one impl restores into the other.
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(shapes_fast)
    assert jax.tree.leaves(shapes) == jax.tree.leaves(shapes_fast)
    rng = np.random.default_rng(4)
    variables = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)
    variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])  # var >= 0

    def run(gen):
        def f(params):
            out, _ = gen.apply({"params": params, "batch_stats": variables["batch_stats"]}, z,
                               train=True, mutable=["batch_stats"])
            return jnp.sum(out * jnp.linspace(-1, 1, out.size).reshape(out.shape)), out
        return jax.jit(jax.value_and_grad(f, has_aux=True))(variables["params"])

    (_, out_fast), grads_fast = run(gens["custom_vjp"])
    (_, out_flax), grads_flax = run(gens["flax"])
    _assert_close(out_fast, out_flax, "generator output")
    _assert_gradients_close(grads_fast, grads_flax)


def _assert_gradients_close(grads_fast, grads_flax):
    for (path, g_fast), g_flax in zip(jax.tree_util.tree_leaves_with_path(grads_fast),
                                      jax.tree.leaves(grads_flax), strict=True):
        _assert_close(g_fast, g_flax, f"gradient {jax.tree_util.keystr(path)}", rtol=1e-4)


def test_low_precision_compute_keeps_float32_params():
    x = np.random.default_rng(5).normal(size=(2, 7, 7, 3)).astype(np.float32)
    variables = _variables((4, 4), 3, 2)
    layer = FastConvTranspose(2, (4, 4), (2, 2), dtype=jnp.bfloat16)
    y, (gv, gx) = _value_and_grads(layer, variables, x, 1.0)
    assert y.dtype == jnp.bfloat16
    assert gv["params"]["kernel"].dtype == jnp.float32 and gx.dtype == jnp.float32
    ref_y, (ref_gv, _) = _value_and_grads(FastConvTranspose(2, (4, 4), (2, 2)), variables, x, 1.0)
    _assert_close(y, ref_y, "bfloat16 forward", rtol=3e-2)
    _assert_close(gv["params"]["kernel"], ref_gv["params"]["kernel"], "bfloat16 kernel grad",
                  rtol=3e-2)


def test_discriminator_transpose_impls_agree():
    """Discriminator(transpose_impl='custom_vjp') == 'flax': same parameter paths, logits, and
    gradients w.r.t. every parameter and the input images (what G's update flows through)."""
    x = np.random.default_rng(7).uniform(-1, 1, size=(4, 28, 28, 1)).astype(np.float32)
    discs = {impl: models.Discriminator(features=4, norm="batch", transpose_impl=impl)
             for impl in models.TRANSPOSE_IMPLS}
    variables = discs["flax"].init(jax.random.PRNGKey(0), x, train=False)
    fast_shapes = jax.eval_shape(lambda k: discs["custom_vjp"].init(k, x, train=False),
                                 jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(fast_shapes) == jax.tree_util.tree_structure(variables)

    def run(disc):
        def f(params, x):
            logits, _ = disc.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                   x, train=True, mutable=["batch_stats"])
            return jnp.sum(logits * jnp.arange(1.0, 5.0)), logits
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
            variables["params"], x)

    (_, logits_fast), grads_fast = run(discs["custom_vjp"])
    (_, logits_flax), grads_flax = run(discs["flax"])
    _assert_close(logits_fast, logits_flax, "logits")
    _assert_gradients_close(grads_fast, grads_flax)
