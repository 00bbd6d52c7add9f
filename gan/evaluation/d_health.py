"""Health of a trained discriminator: dead units, gradient norms, calibration of its sigmoid.

Computed in inference mode (BatchNorm uses its running averages) on a fixed set of held-out
reals (label 1) and fresh fakes (label 0). Calibration reads sigmoid(logit) as P(real) whatever
the loss: for hinge and least squares, which never trained through a sigmoid, that is exactly
the reading claim C3 questions.
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from gan.data import to_model_range

ECE_BINS = 15
BATCH = 500


def _layer_index(name, num_hidden):
    """Hidden layer i owns Conv_i and its BatchNorm (BatchNorm_j follows Conv_{j+1}: the first
    layer has none); the output Dense is layer `num_hidden`."""
    kind, j = re.fullmatch(r"(\w+?)_(\d+)", name).groups()
    return {"Conv": int(j), "BatchNorm": int(j) + 1, "Dense": num_hidden}[kind]


def calibration(probs, labels, bins=ECE_BINS):
    """Expected calibration error (equal-width bins), Brier score and accuracy of P(real)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    ece = sum(abs(probs[which == b].mean() - labels[which == b].mean()) * np.mean(which == b)
              for b in range(bins) if np.any(which == b))
    return {"d_ece": float(ece), "d_brier": float(np.mean((probs - labels) ** 2)),
            "d_accuracy": float(np.mean((probs > 0.5) == (labels > 0.5)))}


@functools.lru_cache(maxsize=8)
def _forward(discriminator):
    """Compiled once per discriminator: evaluations inside training reuse it."""
    def forward(variables, x):
        def total_logit(params, x):
            logits, pre = discriminator.apply({**variables, "params": params}, x, train=False,
                                              return_preactivations=True)
            return logits.sum(), (logits, pre)
        # Each image's logit depends on its own input only (inference mode), so the gradient of
        # the sum w.r.t. the input holds every image's own input gradient.
        (_, (logits, pre)), (g_params, g_input) = jax.value_and_grad(
            total_logit, argnums=(0, 1), has_aux=True)(variables["params"], x)
        alive = [jnp.any(p > 0, axis=(0, 1, 2)) for p in pre]  # per channel, over batch and space
        input_norms = jnp.sqrt(jnp.sum(jnp.square(g_input), axis=(1, 2, 3)))
        return logits, alive, input_norms, g_params
    return jax.jit(forward)


def d_health(discriminator, d_variables, real_uint8, fake_uint8):
    images = np.concatenate([real_uint8, fake_uint8])
    labels = np.concatenate([np.ones(len(real_uint8)), np.zeros(len(fake_uint8))])
    forward = _forward(discriminator)

    logits, input_norms, alive, g_sum = [], [], None, None
    for s in range(0, len(images), BATCH):
        lg, al, norms, gp = forward(d_variables, to_model_range(images[s:s + BATCH]))
        logits.append(np.asarray(lg, np.float64))
        input_norms.append(np.asarray(norms, np.float64))
        alive = al if alive is None else [a | b for a, b in zip(alive, al)]
        g_sum = gp if g_sum is None else jax.tree.map(jnp.add, g_sum, gp)
    logits = np.concatenate(logits)

    out = {}
    dead = [1.0 - float(np.mean(np.asarray(a))) for a in alive]
    for i, d in enumerate(dead):
        out[f"d_dead_fraction_{i}"] = d
    out["d_dead_fraction_mean"] = float(np.mean(dead))
    out["d_input_grad_norm"] = float(np.concatenate(input_norms).mean())
    # Gradient of the mean logit over the set w.r.t. each layer's parameters.
    squares = {}
    for name, sub in g_sum.items():
        i = _layer_index(name, len(dead))
        squares[i] = squares.get(i, 0.0) + sum(
            float(np.sum((np.asarray(g, np.float64) / len(images)) ** 2)) for g in jax.tree.leaves(sub))
    for i in sorted(squares):
        out[f"d_param_grad_norm_{i}"] = float(np.sqrt(squares[i]))
    out.update(calibration(1.0 / (1.0 + np.exp(-logits)), labels))
    return out
