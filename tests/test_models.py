"""gan.models: shapes and parameter counts of G and D for every upsampler and image size.

Expected parameter counts are computed from the architecture the spec describes (issue 2):
G = dense (no bias) -> BatchNorm -> ReLU -> reshape to s0 x s0 -> [x2 upsample (no bias) ->
BatchNorm -> ReLU] * (n-1) -> x2 upsample to the image channels (with bias) -> tanh, with the
channel count halving per layer and `features` channels in the last hidden layer; D = n stride-2
convs doubling from `features` (bias unless batch-normed) -> dense to one logit. The sizes'
stride patterns are 7->14->28 (spec) and the DCGAN paper's 4->8->...->size for 32 and 64.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import config_checks, models

UPSAMPLERS = ("transpose", "bilinear", "nearest")
PATTERNS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # size -> (start resolution, stride-2 layers)


def expected_g_params(size, latent, features, kernel, channels=1):
    s0, n = PATTERNS[size]
    width = features * 2 ** (n - 1)
    total = latent * s0 * s0 * width  # dense, no bias (BatchNorm follows)
    total += 2 * s0 * s0 * width  # BatchNorm scale + bias over the dense features
    for _ in range(n - 1):
        out = width // 2
        total += kernel * kernel * width * out + 2 * out  # upsample (no bias) + BatchNorm
        width = out
    return total + kernel * kernel * width * channels + channels  # last upsample, with bias


def expected_d_params(size, features, kernel, norm="none", channels=1):
    s0, n = PATTERNS[size]
    total, c_in = 0, channels
    for i in range(n):
        c_out = features * 2 ** i
        batch_norm = norm == "batch" and i > 0
        total += kernel * kernel * c_in * c_out + (2 * c_out if batch_norm else c_out)
        c_in = c_out
    return total + s0 * s0 * c_in + 1  # dense to one logit


def _shapes(module, *args, **kwargs):
    """Variable shapes of `module.init(...)` without computing anything (jax.eval_shape)."""
    return jax.eval_shape(lambda k: module.init(k, *args, **kwargs), jax.random.PRNGKey(0))


def _numpy_variables(module, *args, seed=0, **kwargs):
    """Variables shaped like `module.init(...)`, drawn with numpy: N(0, 0.02) weights, unit
    BatchNorm scales and variances. (XLA CPU compiles every new random shape, seconds each.)"""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "scale" in name or "var" in name:
            return np.ones(leaf.shape, leaf.dtype)
        if "mean" in name:
            return np.zeros(leaf.shape, leaf.dtype)
        return rng.normal(0.0, 0.02, leaf.shape).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, _shapes(module, *args, **kwargs))


def test_expected_count_formula_by_hand():
    # The default 28x28 DCGAN (latent 100, features 64, kernel 4), counted by hand:
    # dense 100*7*7*128 + BN 2*6272 + up 4*4*128*64 + BN 2*64 + up 4*4*64*1 + 1
    assert expected_g_params(28, 100, 64, 4) == 627200 + 12544 + 131072 + 128 + 1025
    # conv 4*4*1*64 + 64, conv 4*4*64*128 + 128, dense 7*7*128 + 1
    assert expected_d_params(28, 64, 4) == 1088 + 131200 + 6273


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("upsample", UPSAMPLERS)
def test_generator_shapes_and_parameter_count(size, upsample):
    latent, features, kernel = 100, 64, 4
    g = models.Generator(image_size=size, features=features, upsample=upsample,
                         kernel_size=kernel)
    z = jnp.zeros((3, latent))
    variables = _shapes(g, z, train=False)
    assert models.param_count(variables["params"]) == expected_g_params(size, latent, features,
                                                                        kernel)
    out = jax.eval_shape(lambda v: g.apply(v, z, train=False), variables)
    assert out.shape == (3, size, size, 1) and out.dtype == jnp.float32
    _, n = PATTERNS[size]
    # One BatchNorm after the dense layer and after each hidden upsample: n of them.
    assert len(variables["batch_stats"]) == n


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_discriminator_shapes_and_parameter_count(size, norm):
    d = models.Discriminator(image_size=size, features=64, kernel_size=4, norm=norm)
    x = jnp.zeros((3, size, size, 1))
    variables = _shapes(d, x, train=False)
    assert models.param_count(variables["params"]) == expected_d_params(size, 64, 4, norm)
    logit, preacts = jax.eval_shape(
        lambda v: d.apply(v, x, train=False, return_preactivations=True), variables)
    assert logit.shape == (3,) and logit.dtype == jnp.float32  # one logit per image
    _, n = PATTERNS[size]
    assert [p.shape for p in preacts] == [(3, size // 2 ** (i + 1), size // 2 ** (i + 1),
                                           64 * 2 ** i) for i in range(n)]


@pytest.mark.parametrize("size", [28, 32, 64])
def test_upsamplers_have_identical_parameters(size):
    """Claim C1's arms differ only in how they upsample: same counts, same per-layer shapes."""
    layer_shapes = {}
    for upsample in UPSAMPLERS:
        g = models.Generator(image_size=size, features=16, upsample=upsample, kernel_size=5)
        params = _shapes(g, jnp.zeros((1, 20)), train=False)["params"]
        layer_shapes[upsample] = sorted(tuple(p.shape) for p in jax.tree.leaves(params))
    assert layer_shapes["transpose"] == layer_shapes["bilinear"] == layer_shapes["nearest"]


@pytest.fixture(scope="module")
def small_config():
    config = config_checks.default_config()
    config.model.latent_dim, config.model.g_features, config.model.d_features = 16, 8, 8
    return config


def test_make_models_follows_the_config(small_config):
    g, d = models.make_models(small_config, 32)
    assert (g.image_size, g.features, g.upsample, g.kernel_size) == (32, 8, "transpose", 4)
    assert (d.image_size, d.features, d.activation, d.leaky_slope, d.norm) == (
        32, 8, "leaky_relu", 0.2, "none")


@pytest.mark.parametrize("upsample", UPSAMPLERS)
def test_forward_pass_values(upsample):
    """A real forward pass: tanh range, finite, BatchNorm statistics updated in train mode."""
    g = models.Generator(features=8, upsample=upsample)
    z = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
    g_vars = _numpy_variables(g, z, train=False)
    images, updates = g.apply(g_vars, z, train=True, mutable=["batch_stats"])
    assert images.shape == (4, 28, 28, 1)
    assert np.all(np.isfinite(images)) and np.all(np.abs(images) <= 1.0)
    assert float(jnp.std(images)) > 0  # not a constant image
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), g_vars["batch_stats"],
                           updates["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # Inference mode uses the running statistics: differs from train mode's batch statistics.
    assert not np.allclose(g.apply(g_vars, z, train=False), images)


def test_discriminator_forward_and_activations():
    """Same parameters, different activation / slope -> different logits; finite outputs."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    variables = _numpy_variables(models.Discriminator(features=4), x, train=False)
    outs = {}
    for act, slope in (("leaky_relu", 0.2), ("leaky_relu", 0.5), ("relu", 0.2)):
        d = models.Discriminator(features=4, activation=act, leaky_slope=slope)
        outs[act, slope], _ = d.apply(variables, x, train=False, return_preactivations=True)
        assert outs[act, slope].shape == (2,) and np.all(np.isfinite(outs[act, slope]))
    assert not np.allclose(outs["leaky_relu", 0.2], outs["leaky_relu", 0.5])
    assert not np.allclose(outs["leaky_relu", 0.2], outs["relu", 0.2])
    # The activation is applied to the reported pre-activations: layer 2 of a relu D equals
    # the conv of relu(layer-1 pre-activation).
    conv = nn.Conv(8, (4, 4), strides=(2, 2), padding="SAME")
    _, pre_relu = models.Discriminator(features=4, activation="relu").apply(
        variables, x, train=False, return_preactivations=True)
    expected = conv.apply({"params": variables["params"]["Conv_1"]}, jax.nn.relu(pre_relu[0]))
    np.testing.assert_allclose(pre_relu[1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method, resize", [("nearest", "nearest"), ("bilinear", "bilinear")])
def test_resize_upsamplers_are_resize_then_same_size_conv(method, resize):
    """'nearest'/'bilinear' = resize x2, then a stride-1 conv of the same kernel and width."""
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    up = models.Upsample(features=4, method=method, kernel_size=3)
    params = _numpy_variables(up, x)["params"]
    (conv_name,) = params
    assert params[conv_name]["kernel"].shape == (3, 3, 3, 4)
    resized = jax.image.resize(x, (2, 10, 12, 3), resize)
    expected = nn.Conv(4, (3, 3), padding="SAME").apply({"params": params[conv_name]}, resized)
    np.testing.assert_allclose(up.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


def test_nearest_repeats_each_pixel_into_a_2x2_block():
    x = jnp.arange(6.0).reshape(1, 2, 3, 1)
    up = models.Upsample(features=1, method="nearest", kernel_size=1, use_bias=False)
    params = {"Conv_0": {"kernel": jnp.ones((1, 1, 1, 1))}}  # identity 1x1 conv
    y = up.apply({"params": params}, x)[0, :, :, 0]
    np.testing.assert_array_equal(y, [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                      [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])


# ---------------------------------------------------------------- clear errors

def test_unknown_upsampler_is_a_clear_error():
    g = models.Generator(upsample="pixelshuffle")
    with pytest.raises(ValueError) as info:
        _shapes(g, jnp.zeros((1, 100)))
    message = str(info.value)
    assert "pixelshuffle" in message
    assert all(name in message for name in UPSAMPLERS)


@pytest.mark.parametrize("size", [27, 30, 48, 128])
def test_unsupported_image_size_is_a_clear_error(size):
    with pytest.raises(ValueError) as info:
        models.size_pattern(size)
    assert str(size) in str(info.value)
    assert all(str(s) in str(info.value) for s in (28, 32, 64))
    with pytest.raises(ValueError, match=str(size)):
        _shapes(models.Generator(image_size=size), jnp.zeros((1, 100)))
    with pytest.raises(ValueError, match=str(size)):
        _shapes(models.Discriminator(image_size=size), jnp.zeros((1, size, size, 1)))


def test_unknown_discriminator_options_are_clear_errors():
    x = jnp.zeros((1, 28, 28, 1))
    with pytest.raises(ValueError, match="tanh.*leaky_relu"):
        _shapes(models.Discriminator(activation="tanh"), x)
    with pytest.raises(ValueError, match="spectral.*batch"):
        _shapes(models.Discriminator(norm="spectral"), x)


def test_unknown_transpose_impl_is_a_clear_error():
    g = models.Generator(upsample="transpose", transpose_impl="cudnn")
    with pytest.raises(ValueError, match="cudnn.*custom_vjp"):
        _shapes(g, jnp.zeros((1, 100)))
