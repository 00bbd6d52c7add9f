"""GAN losses, all computed from D's logits (never from log(sigmoid(x))) so they stay finite.

`d_loss` takes real and fake logits, `g_loss` fake logits; both return a scalar mean. `minimax` and `nonsaturating` read the logit through a sigmoid (claim C3);
`hinge` and `least_squares` use the raw score.
"""
import jax.numpy as jnp
import optax
from jax import nn

LOSSES = ("minimax", "nonsaturating", "hinge", "least_squares")
SIGMOID_LOSSES = ("minimax", "nonsaturating")


def _bce(logits, label):
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)).mean()


def d_loss(name, real_logits, fake_logits):
    if name in SIGMOID_LOSSES:
        return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)
    if name == "hinge":
        return nn.relu(1.0 - real_logits).mean() + nn.relu(1.0 + fake_logits).mean()
    if name == "least_squares":
        return 0.5 * (jnp.square(real_logits - 1.0).mean() + jnp.square(fake_logits).mean())
    raise ValueError(f"Unknown loss {name!r}; valid: {LOSSES}.")


def g_loss(name, fake_logits):
    if name == "minimax":
        return -_bce(fake_logits, 0.0)  # minimise log(1 - D(G(z)))
    if name == "nonsaturating":
        return _bce(fake_logits, 1.0)  # minimise -log D(G(z))
    if name == "hinge":
        return -fake_logits.mean()
    if name == "least_squares":
        return 0.5 * jnp.square(fake_logits - 1.0).mean()
    raise ValueError(f"Unknown loss {name!r}; valid: {LOSSES}.")
