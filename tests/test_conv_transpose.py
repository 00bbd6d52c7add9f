"""gan.conv_transpose.FastConvTranspose: same forward values and gradients as
flax.linen.ConvTranspose(padding='SAME') with the same parameters, for many shapes; and it
really computes its weight gradient as an ordinary (not lhs-dilated) convolution.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import models
from gan.conv_transpose import FastConvTranspose

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


def test_gradient_uses_no_lhs_dilated_weight_gradient():
    """The fast path's point: the only lhs-dilated conv is the forward one (flax's autodiff adds
    a second for the weight gradient, the pathologically slow op on XLA CPU)."""
    x = jnp.ones((2, 7, 7, 8))
    variables = _variables((4, 4), 8, 4)

    def count(layer):
        grad = jax.grad(lambda v, x: jnp.sum(layer.apply(v, x)), argnums=(0, 1))
        return _count_lhs_dilated_convs(jax.make_jaxpr(grad)(variables, x).jaxpr)

    assert count(nn.ConvTranspose(4, (4, 4), (2, 2), padding="SAME")) == 2  # sanity of the probe
    assert count(FastConvTranspose(4, (4, 4), (2, 2))) == 1


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
    for (path, g_fast), g_flax in zip(jax.tree_util.tree_leaves_with_path(grads_fast),
                                      jax.tree.leaves(grads_flax)):
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
