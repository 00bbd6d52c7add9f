"""The training state pytree and the pure D+G update step.

`train_step(state, real) -> (state, metrics)` is a pure function of one pytree, so `jit`,
`pmap`/sharding and `vmap` over independent replicas all apply to the same code.
"""
import flax
import jax
import jax.numpy as jnp
import optax

from gan import losses
from gan.data import to_model_range


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    rng: jnp.ndarray
    g_params: dict
    g_batch_stats: dict
    d_params: dict
    d_batch_stats: dict
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState


def make_optimizers(config):
    o = config.optim
    return (optax.adam(o.g_lr, b1=o.g_b1, b2=o.b2), optax.adam(o.d_lr, b1=o.d_b1, b2=o.b2))


def create_state(config, generator, discriminator, image_shape, seed):
    """Initial state; image_shape is (H, W, C). Parameters and optimizer state are float32."""
    g_tx, d_tx = make_optimizers(config)
    rng, g_key, d_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = jnp.zeros((2, config.model.latent_dim), jnp.float32)
    g_vars = generator.init(g_key, z, train=False)
    d_vars = discriminator.init(d_key, jnp.zeros((2, *image_shape), jnp.float32), train=False)
    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=rng,
        g_params=g_vars["params"], g_batch_stats=g_vars.get("batch_stats", {}),
        d_params=d_vars["params"], d_batch_stats=d_vars.get("batch_stats", {}),
        g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]))


def make_train_step(config, generator, discriminator, axis_name=None, num_shards=1,
                    batch_sharding=None):
    """One D update on (real, fresh fakes), then one G update on fresh latents.

    Under `pmap` pass the mapped `axis_name` and the number of shards: each device then draws
    the global batch's latents and keeps its slice, gradients, metrics and batch-norm statistics
    are averaged across devices, so the update equals the single-device one on the global batch.
    Under `jit` with shardings pass `batch_sharding`: the latents are split like the real batch
    (left to itself the partitioner ran the whole generator on every device).
    """
    g_tx, d_tx = make_optimizers(config)
    loss_name, latent_dim = config.loss, config.model.latent_dim

    def latents(key, batch):
        if axis_name is None:
            z = jax.random.normal(key, (batch, latent_dim))
            if batch_sharding is not None:
                z = jax.lax.with_sharding_constraint(z, batch_sharding)
            return z
        full = jax.random.normal(key, (batch * num_shards, latent_dim))
        return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(axis_name) * batch, batch)

    def sync(tree):
        return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

    def apply_d(params, batch_stats, images):
        logits, updates = discriminator.apply({"params": params, "batch_stats": batch_stats},
                                              images, train=True, mutable=["batch_stats"])
        return logits, updates.get("batch_stats", {})

    def train_step(state, real):
        rng, d_key, g_key = jax.random.split(state.rng, 3)
        batch = real.shape[0]

        fake, g_updates = generator.apply(
            {"params": state.g_params, "batch_stats": state.g_batch_stats},
            latents(d_key, batch), train=True, mutable=["batch_stats"])
        fake = jax.lax.stop_gradient(fake)
        g_batch_stats = g_updates.get("batch_stats", {})

        def d_objective(d_params):
            real_logits, stats = apply_d(d_params, state.d_batch_stats, real)
            fake_logits, stats = apply_d(d_params, stats, fake)
            return losses.d_loss(loss_name, real_logits, fake_logits), (stats, real_logits,
                                                                         fake_logits)

        (d_loss, (d_batch_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
            d_objective, has_aux=True)(state.d_params)
        d_grads, d_batch_stats = sync((d_grads, d_batch_stats))
        d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        def g_objective(g_params):
            fake, updates = generator.apply(
                {"params": g_params, "batch_stats": g_batch_stats},
                latents(g_key, batch), train=True, mutable=["batch_stats"])
            logits, _ = apply_d(d_params, d_batch_stats, fake)  # D's stat updates are discarded
            return losses.g_loss(loss_name, logits), updates.get("batch_stats", {})

        (g_loss, g_batch_stats), g_grads = jax.value_and_grad(
            g_objective, has_aux=True)(state.g_params)
        g_grads, g_batch_stats = sync((g_grads, g_batch_stats))
        g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)

        metrics = sync({
            "d_loss": d_loss, "g_loss": g_loss,
            "d_real": jax.nn.sigmoid(real_logits).mean(),  # D's probability that reals are real
            "d_fake": jax.nn.sigmoid(fake_logits).mean(),
            "d_acc": 0.5 * ((real_logits > 0).mean() + (fake_logits < 0).mean()),
        })
        metrics.update(d_grad_norm=optax.tree.norm(d_grads),
                       g_grad_norm=optax.tree.norm(g_grads))
        new_state = state.replace(
            step=state.step + 1, rng=rng, g_params=g_params, g_batch_stats=g_batch_stats,
            d_params=d_params, d_batch_stats=d_batch_stats, g_opt_state=g_opt_state,
            d_opt_state=d_opt_state)
        return new_state, metrics

    return train_step


def make_train_call(train_step, dtype=jnp.float32, batch_sharding=None):
    """`(state, images_uint8, indices[n, B]) -> (state, mean metrics)`: n steps in one call.

    The dataset stays on device as uint8; each step gathers its batch and scales it to [-1, 1].
    The n steps are a Python loop traced into one program, not a `lax.scan`: on XLA CPU a train
    step inside a scan body (even unrolled, even of length 1) measured ~20x slower.
    `batch_sharding` (under jit with shardings) splits each gathered batch across devices.
    """
    def call(state, images, indices):
        step_metrics = []
        for batch_indices in indices:
            real = to_model_range(jnp.take(images, batch_indices, axis=0), dtype)
            if batch_sharding is not None:
                real = jax.lax.with_sharding_constraint(real, batch_sharding)
            state, metrics = train_step(state, real)
            step_metrics.append(metrics)
        return state, jax.tree.map(lambda *m: jnp.stack(m).astype(jnp.float32).mean(),
                                   *step_metrics)

    return call
