"""gan.losses: every loss finite with finite gradients at extreme logits, equal to the textbook
formula (computed naively in float64) at moderate logits, with gradients pointing the right way.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import losses

ALL = ("minimax", "nonsaturating", "hinge", "least_squares")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Textbook definitions (Goodfellow et al. 2014; Lim & Ye 2017 / Miyato et al. 2018 for hinge;
# Mao et al. 2017 for least squares with a=0, b=c=1), written naively in float64.
def naive_d_loss(name, r, f):
    r, f = np.asarray(r, np.float64), np.asarray(f, np.float64)
    if name in ("minimax", "nonsaturating"):
        return np.mean(-np.log(_sigmoid(r))) + np.mean(-np.log(1.0 - _sigmoid(f)))
    if name == "hinge":
        return np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))
    return 0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f ** 2)


def naive_g_loss(name, f):
    f = np.asarray(f, np.float64)
    if name == "minimax":
        return np.mean(np.log(1.0 - _sigmoid(f)))
    if name == "nonsaturating":
        return np.mean(-np.log(_sigmoid(f)))
    if name == "hinge":
        return -np.mean(f)
    return 0.5 * np.mean((f - 1) ** 2)


MODERATE_REAL = np.array([-3.0, -0.7, 0.0, 0.4, 2.5, 5.0], np.float32)
MODERATE_FAKE = np.array([-4.0, -1.2, -0.1, 0.3, 1.5, 3.0], np.float32)


@pytest.mark.parametrize("name", ALL)
def test_d_loss_matches_textbook_formula(name):
    got = losses.d_loss(name, jnp.asarray(MODERATE_REAL), jnp.asarray(MODERATE_FAKE))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), naive_d_loss(name, MODERATE_REAL, MODERATE_FAKE),
                               rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_g_loss_matches_textbook_formula(name):
    got = losses.g_loss(name, jnp.asarray(MODERATE_FAKE))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), naive_g_loss(name, MODERATE_FAKE), rtol=1e-5)


EXTREMES = [-1000.0, -100.0, 100.0, 1000.0]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("real", EXTREMES)
@pytest.mark.parametrize("fake", EXTREMES)
def test_finite_values_and_gradients_at_extreme_logits(name, real, fake):
    r = jnp.full((4,), real, jnp.float32)
    f = jnp.full((4,), fake, jnp.float32)
    d_val, (d_gr, d_gf) = jax.value_and_grad(lambda r, f: losses.d_loss(name, r, f),
                                             argnums=(0, 1))(r, f)
    g_val, g_gf = jax.value_and_grad(lambda f: losses.g_loss(name, f))(f)
    for x in (d_val, d_gr, d_gf, g_val, g_gf):
        assert np.all(np.isfinite(np.asarray(x))), (name, real, fake)


@pytest.mark.parametrize("name", ["minimax", "nonsaturating"])
def test_sigmoid_losses_are_exact_at_extreme_logits(name):
    """Computed from logits: -log(sigmoid(-100)) = softplus(100) = 100 + log1p(e^-100) ~= 100,
    where the naive float32 log(sigmoid(x)) would give inf."""
    wrong = jnp.array([-100.0], jnp.float32)  # D calls a real "fake" with logit -100
    np.testing.assert_allclose(float(losses.d_loss(name, wrong, -wrong)), 200.0, rtol=1e-6)
    confident = jnp.array([100.0], jnp.float32)  # and is right: loss ~ 0, not NaN
    assert 0.0 <= float(losses.d_loss(name, confident, -confident)) < 1e-30
    naive = -jnp.log(jax.nn.sigmoid(jnp.float32(-200.0)))
    assert not np.isfinite(float(naive))  # the trap the logits form avoids (sanity of the test)
    if name == "nonsaturating":
        np.testing.assert_allclose(float(losses.g_loss(name, wrong)), 100.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(float(losses.g_loss(name, -wrong)), -100.0, rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("logit", [-2.0, -0.5, 0.0, 0.5])
def test_generator_gradient_raises_the_fake_logit(name, logit):
    """Every G loss decreases when D scores the fakes as more real."""
    grad = jax.grad(lambda f: losses.g_loss(name, f))(jnp.full((3,), logit))
    assert np.all(np.asarray(grad) < 0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("logit", [0.25, 0.5, 0.75])
def test_discriminator_gradient_separates_real_and_fake(name, logit):
    """Inside every loss's active region (between least squares' fake target 0 and the hinge /
    least-squares real target 1), D's gradient pushes reals up and fakes down."""
    x = jnp.full((3,), logit)
    g_real, g_fake = jax.grad(lambda r, f: losses.d_loss(name, r, f), argnums=(0, 1))(x, x)
    assert np.all(np.asarray(g_real) < 0)  # D wants higher scores on reals
    assert np.all(np.asarray(g_fake) > 0)  # and lower on fakes


def test_gradients_match_the_analytic_derivatives():
    f = jnp.asarray(MODERATE_FAKE)
    n = f.size
    s = _sigmoid(np.asarray(MODERATE_FAKE, np.float64))
    # d/df mean(log(1 - sigmoid f)) = -sigmoid(f) / n ; d/df mean(-log sigmoid f) = -(1 - sigmoid f) / n
    np.testing.assert_allclose(jax.grad(lambda f: losses.g_loss("minimax", f))(f), -s / n,
                               rtol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda f: losses.g_loss("nonsaturating", f))(f),
                               -(1 - s) / n, rtol=1e-5)


def test_minimax_saturates_where_nonsaturating_does_not():
    """Goodfellow et al.'s motivation for the non-saturating loss: when D confidently rejects
    the fakes (logit -10), minimax's G gradient vanishes while the non-saturating one does not."""
    f = jnp.full((1,), -10.0)
    g_minimax = float(jax.grad(lambda f: losses.g_loss("minimax", f))(f)[0])
    g_nonsat = float(jax.grad(lambda f: losses.g_loss("nonsaturating", f))(f)[0])
    assert -1e-4 < g_minimax < 0
    assert g_nonsat < -0.99
    # At logit -100 the non-saturating gradient is still -1, finite and useful.
    g_far = float(jax.grad(lambda f: losses.g_loss("nonsaturating", f))(jnp.full((1,), -100.0))[0])
    assert g_far == pytest.approx(-1.0)


def test_d_loss_is_the_same_for_both_sigmoid_losses():
    r, f = jnp.asarray(MODERATE_REAL), jnp.asarray(MODERATE_FAKE)
    assert float(losses.d_loss("minimax", r, f)) == float(losses.d_loss("nonsaturating", r, f))


def test_unknown_loss_names_the_valid_ones():
    for fn in (lambda: losses.d_loss("wasserstein", jnp.zeros(2), jnp.zeros(2)),
               lambda: losses.g_loss("wasserstein", jnp.zeros(2))):
        with pytest.raises(ValueError) as info:
            fn()
        assert "wasserstein" in str(info.value)
        assert all(name in str(info.value) for name in ALL)
