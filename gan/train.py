"""One training run: data, state, compiled step, loop, checkpoints, logging and sample grids.

Rerunning on the same workdir resumes from the latest checkpoint and replays exactly the
same batches and random numbers, so an interrupted run ends bitwise equal to an uninterrupted one.
"""
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gan import config_checks, data, images, models
from gan.checkpointing import Checkpointer
from gan.metrics_writer import MetricsWriter
from gan.errors import UserFacingError
from gan.train_step import create_state, make_train_call, make_train_step


class DivergenceError(UserFacingError, RuntimeError):
    """Training produced non-finite losses."""


def fixed_latents(config):
    """The sample-grid latents: a function of the seed alone, identical all run long."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5A3)
    return jax.random.normal(key, (config.train.num_samples, config.model.latent_dim))


def load_train_images(config):
    """uint8 (N, S, S, 1) training images at the configured size."""
    d = config.dataset
    train_images, _ = data.load_split(d.name, "train", d.data_dir, d.download)
    return data.resize_images(train_images, config_checks.image_size(config))


def _format_eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _save_config(config, workdir):
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


def train_and_evaluate(config, workdir):
    """Trains (or resumes) one run in `workdir`; returns the final TrainState."""
    config_checks.validate(config)
    os.makedirs(workdir, exist_ok=True)
    dtype = jnp.dtype(config.dtype)
    size = config_checks.image_size(config)

    train_images = load_train_images(config)
    num_examples = len(train_images)
    num_steps = config_checks.total_steps(config, num_examples)
    t = config.train
    logging.info("Dataset %s: %d training images of %s.", config.dataset.name, num_examples,
                 train_images.shape[1:])

    generator, discriminator = models.make_models(config, size, train_images.shape[-1], dtype)
    state = create_state(config, generator, discriminator, train_images.shape[1:], config.seed)
    logging.info("Parameters: generator %d, discriminator %d (upsample=%s).",
                 models.param_count(state.g_params), models.param_count(state.d_params),
                 config.model.upsample)

    checkpointer = Checkpointer(workdir, t.keep_checkpoints)
    writer = MetricsWriter(workdir)
    start_step = checkpointer.latest_step()
    if start_step is not None:
        state, position = checkpointer.restore(start_step, state)
        logging.info("Resuming at step %d (epoch %d, batch %d).", start_step, position["epoch"],
                     position["batch_in_epoch"])
        writer.truncate_after(start_step)
    start_step = int(state.step)
    _save_config(config, workdir)

    train_call = jax.jit(make_train_call(make_train_step(config, generator, discriminator), dtype))
    sample = jax.jit(lambda params, stats, z: generator.apply(
        {"params": params, "batch_stats": stats}, z, train=False))
    latents = fixed_latents(config)
    images_on_device = jax.device_put(train_images)
    samples_dir = os.path.join(workdir, "samples")
    os.makedirs(samples_dir, exist_ok=True)

    if start_step >= num_steps:
        logging.info("Nothing to do: the run already reached step %d of %d.", start_step, num_steps)
    n = t.steps_per_call
    last_time, last_step = time.time(), start_step
    step = start_step
    while step < num_steps:
        indices = data.batch_indices(config.seed, step, n, t.batch_size, num_examples)
        state, metrics = train_call(state, images_on_device, indices)
        step += n
        if step % t.log_every == 0 or step == num_steps:
            metrics = jax.device_get(metrics)
            if not all(np.isfinite(v) for v in metrics.values()):
                checkpointer.wait()
                raise DivergenceError(
                    f"Non-finite losses at step {step}: {metrics}. The last good checkpoint "
                    f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory}; "
                    "lower the learning rates or change the loss.")
            now = time.time()
            steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
            last_time, last_step = now, step
            metrics.update(steps_per_s=steps_per_s, images_per_s=steps_per_s * t.batch_size,
                           epoch=step * t.batch_size / num_examples)
            writer.write(step, metrics)
            logging.info(
                "step %d/%d | d_loss %.3f g_loss %.3f | D(x) %.2f D(G(z)) %.2f acc %.2f | "
                "%.2f steps/s (%.0f img/s) | ETA %s", step, num_steps, metrics["d_loss"],
                metrics["g_loss"], metrics["d_real"], metrics["d_fake"], metrics["d_acc"],
                steps_per_s, steps_per_s * t.batch_size,
                _format_eta((num_steps - step) / max(steps_per_s, 1e-9)))
        if step % t.sample_every == 0 or step == num_steps:
            grid = sample(state.g_params, state.g_batch_stats, latents)
            images.save_grid(np.asarray(grid), os.path.join(samples_dir, f"step_{step:07d}.png"))
        if step % t.checkpoint_every == 0 or step == num_steps:
            checkpointer.save(step, state, data.data_position(step, t.batch_size, num_examples))

    checkpointer.wait()
    checkpointer.close()
    writer.close()
    with open(os.path.join(workdir, "done.json"), "w") as f:
        json.dump({"step": int(state.step)}, f)
    logging.info("Finished at step %d; workdir %s", int(state.step), workdir)
    return state
