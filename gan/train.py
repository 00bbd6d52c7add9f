"""One training run: data, state, compiled step, loop, checkpoints, logging and sample grids.

Rerunning on the same workdir resumes from the latest checkpoint and replays exactly the
same batches and random numbers, so an interrupted run ends bitwise equal to an uninterrupted one.
"""
import json
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gan import config_checks, data, images, models
from gan.parallel import ParallelTrainer
from gan.checkpointing import Checkpointer
from gan.errors import UserFacingError
from gan.metrics_writer import MetricsWriter
from gan.train_step import create_state
from gan.workdir_lock import WorkdirLock

# Fields a resumed run may not change: they change parameter shapes or what the run measures.
# transpose_impl is exempt (same math, same parameters); step counts and intervals may change.
FROZEN_ON_RESUME = ("seed", "loss", "dataset.name", "dataset.image_size", "train.batch_size")
FROZEN_PREFIXES_ON_RESUME = ("model.",)
RESUMABLE_MODEL_FIELDS = ("model.transpose_impl",)


class DivergenceError(UserFacingError, RuntimeError):
    """Training produced non-finite losses or parameters."""


class PreemptedError(UserFacingError, RuntimeError):
    """SIGTERM/SIGINT: the state was checkpointed; rerunning the command resumes."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


def fixed_latents(config):
    """The sample-grid latents: a function of the seed alone, identical all run long."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5A3)
    return jax.random.normal(key, (config.train.num_samples, config.model.latent_dim))


def load_train_images(config):
    """uint8 (N, S, S, 1) training images at the configured size."""
    d = config.dataset
    train_images, _ = data.load_split(d.name, "train", d.data_dir, d.download)
    return data.resize_images(train_images, config_checks.image_size(config))


def sample_diversity(samples, reference):
    """Mean per-pixel std across samples, relative to the same on real images (1 = as diverse)."""
    def spread(x):
        return float(np.asarray(x, np.float64).reshape(len(x), -1).std(axis=0).mean())
    return spread(samples) / max(spread(reference), 1e-12)


def _format_eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _check_resume_config(config, workdir):
    """Refuses to resume a run whose saved config differs in a frozen field, naming each."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = config_checks.flatten(json.load(f))
    current = config_checks.flatten(config.to_dict())
    differing = [
        f"{name}: saved {saved.get(name)!r}, now {current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if (name in FROZEN_ON_RESUME or name.startswith(FROZEN_PREFIXES_ON_RESUME))
        and name not in RESUMABLE_MODEL_FIELDS and saved.get(name) != current.get(name)]
    if differing:
        raise config_checks.ConfigError(
            f"{workdir} holds a run with another config; resuming would change:\n  "
            + "\n  ".join(differing)
            + "\nUse the saved values (see its config.json) or another --workdir.")


def _save_config(config, workdir):
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


class _StopSignals:
    """Turns SIGTERM/SIGINT into a flag the loop polls, so it can checkpoint before exiting."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.received is not None:  # A second signal: the user insists, stop at once.
            raise KeyboardInterrupt
        logging.warning("Signal %d received: checkpointing, then stopping.", signum)
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _all_finite(tree):
    return bool(jax.device_get(jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))))


def train_and_evaluate(config, workdir):
    """Trains (or resumes) one run in `workdir`; returns the final TrainState."""
    config_checks.validate(config)
    config_checks.check_devices(config, jax.device_count())
    _check_resume_config(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir), _StopSignals() as stop:
        return _train(config, workdir, stop)


def _train(config, workdir, stop):
    dtype = jnp.dtype(config.dtype)
    t = config.train
    train_images = load_train_images(config)
    num_examples = len(train_images)
    num_steps = config_checks.total_steps(config, num_examples)
    logging.info("Dataset %s: %d training images of %s.", config.dataset.name, num_examples,
                 train_images.shape[1:])

    trainer = ParallelTrainer(config, config_checks.image_size(config), train_images.shape[-1],
                              dtype)
    generator, discriminator = trainer.generator, trainer.discriminator
    state = create_state(config, generator, discriminator, train_images.shape[1:], config.seed)
    logging.info("Parameters: generator %d, discriminator %d (upsample=%s).",
                 models.param_count(state.g_params), models.param_count(state.d_params),
                 config.model.upsample)

    checkpointer = Checkpointer(workdir, t.keep_checkpoints)
    writer = MetricsWriter(workdir)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        step, state, position = restored
        logging.info("Resuming at step %d (epoch %d, batch %d).", step, position["epoch"],
                     position["batch_in_epoch"])
        writer.truncate_after(step)
    _save_config(config, workdir)

    step = int(state.step)
    state = trainer.place(state)
    sample = jax.jit(lambda params, stats, z: generator.apply(
        {"params": params, "batch_stats": stats}, z, train=False))
    latents = fixed_latents(config)
    real_reference = data.to_model_range(train_images[:len(latents)])
    images_on_device = trainer.place_images(train_images)
    samples_dir = os.path.join(workdir, "samples")
    os.makedirs(samples_dir, exist_ok=True)

    def save_checkpoint(step):
        host_state = trainer.unplace(state)
        if not _all_finite((host_state.g_params, host_state.d_params)):
            raise DivergenceError(
                f"Non-finite parameters at step {step}; not checkpointed. The last good "
                f"checkpoint (step {checkpointer.latest_step()}) is kept in "
                f"{checkpointer.directory}; lower the learning rates or change the loss.")
        checkpointer.save(step, host_state,
                          data.data_position(step, t.batch_size, num_examples))

    if step >= num_steps:
        logging.info("Nothing to do: the run already reached step %d of %d.", step, num_steps)
    last_time, last_step = time.time(), step
    try:
        while step < num_steps:
            if stop.received is not None:
                if checkpointer.latest_step() != step:
                    save_checkpoint(step)
                checkpointer.wait()
                raise PreemptedError(
                    f"Received signal {stop.received} at step {step}: checkpoint saved in "
                    f"{checkpointer.directory}. Rerun the same command to resume.", stop.received)
            indices = data.batch_indices(config.seed, step, t.steps_per_call, t.batch_size,
                                         num_examples)
            state, metrics = trainer.call(state, images_on_device, indices)
            step += t.steps_per_call
            row = {}
            if step % t.log_every == 0 or step == num_steps:
                row.update(jax.device_get(metrics))
                if not all(np.isfinite(v) for v in row.values()):
                    checkpointer.wait()
                    raise DivergenceError(
                        f"Non-finite losses at step {step}: {row}. The last good checkpoint "
                        f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory};"
                        " lower the learning rates or change the loss.")
                now = time.time()
                steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, step
                row.update(steps_per_s=steps_per_s, images_per_s=steps_per_s * t.batch_size,
                           epoch=step * t.batch_size / num_examples)
                logging.info(
                    "step %d/%d | d_loss %.3f g_loss %.3f | D(x) %.2f D(G(z)) %.2f acc %.2f | "
                    "%.2f steps/s (%.0f img/s) | ETA %s", step, num_steps, row["d_loss"],
                    row["g_loss"], row["d_real"], row["d_fake"], row["d_acc"], steps_per_s,
                    steps_per_s * t.batch_size,
                    _format_eta((num_steps - step) / max(steps_per_s, 1e-9)))
            if step % t.sample_every == 0 or step == num_steps:
                host_state = trainer.unplace(state)
                grid = np.asarray(sample(host_state.g_params, host_state.g_batch_stats, latents))
                images.save_grid(grid, os.path.join(samples_dir, f"step_{step:07d}.png"))
                row["sample_diversity"] = sample_diversity(grid, real_reference)
                row["collapsed"] = row["sample_diversity"] < t.collapse_diversity
                if row["collapsed"]:
                    logging.warning("Step %d: the generator looks collapsed (sample diversity %.3f "
                                    "of the reals' < %.3f).", step, row["sample_diversity"],
                                    t.collapse_diversity)
            if row:
                writer.write(step, row)
            if step % t.checkpoint_every == 0 or step == num_steps:
                save_checkpoint(step)
    finally:
        checkpointer.wait()
        checkpointer.close()
        writer.close()

    state = trainer.unplace(state)
    with open(os.path.join(workdir, "done.json"), "w") as f:
        json.dump({"step": int(state.step)}, f)
    logging.info("Finished at step %d; workdir %s", int(state.step), workdir)
    return state
