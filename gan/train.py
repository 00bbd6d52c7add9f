"""One training run: data, state, compiled step, loop, checkpoints, logging and sample grids.

Rerunning on the same workdir resumes from the latest checkpoint and replays exactly the
same batches and random numbers, so an interrupted run ends bitwise equal to an uninterrupted one.

With several processes (gan.distributed) all of them run this loop in step; process 0 alone
writes metrics, sample grids, config.json, eval.json and done.json (and evaluates), and all
of them take part in checkpoints.
"""
import contextlib
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

from gan import config_checks, data, distributed, images, models
from gan.checkpointing import Checkpointer
from gan.errors import UserFacingError
from gan.evaluation.suite import evaluate_generator
from gan.metrics_writer import MetricsWriter
from gan.parallel import ParallelTrainer
from gan.train_step import create_state
from gan.workdir_lock import WorkdirLock

# Fields a resumed run may not change: they change parameter shapes or what the run measures.
# transpose_impl is exempt (same math, same parameters); step counts and intervals may change.
FROZEN_ON_RESUME = ("seed", "loss", "dataset.name", "dataset.image_size", "train.batch_size")
FROZEN_PREFIXES_ON_RESUME = ("model.",)
RESUMABLE_MODEL_FIELDS = ("model.transpose_impl",)


class DivergenceError(UserFacingError, RuntimeError):
    """Training produced non-finite losses or parameters."""


class ReplicaStepsDiffer(RuntimeError):
    """Replicas resumed from checkpoints of different steps cannot run in lockstep."""


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


def _evaluated_step(path):
    """The step an existing eval.json evaluated (None if absent): a longer run re-evaluates."""
    try:
        with open(path) as f:
            return json.load(f).get("step")
    except (OSError, ValueError):
        return None


def _scalars(result):
    """The numeric entries of an evaluation (curves go to metrics.jsonl; spectra do not)."""
    return {k: v for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def _format_eta(seconds):
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _check_resume_config(config, workdir):
    """Refuses to resume a run whose saved config differs in a frozen field, naming each."""
    differing = config_checks.saved_config_differences(
        workdir, config, FROZEN_ON_RESUME, FROZEN_PREFIXES_ON_RESUME, RESUMABLE_MODEL_FIELDS)
    if differing:
        raise config_checks.ConfigError(
            f"{workdir} holds a run with another config; resuming would change:\n  "
            + "\n  ".join(f"{name}: saved {old!r}, now {new!r}" for name, old, new in differing)
            + "\nUse the saved values (see its config.json) or another --workdir.")


def _save_config(config, workdir):
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


class _Progress:
    """Sums metrics on device between log lines (rows are interval means) and measures speed
    from the end of the first, compiling, call."""

    def __init__(self, step, num_steps, batch_size):
        self.num_steps, self.batch_size = num_steps, batch_size
        self.last_time, self.last_step = None, step
        self.sum, self.calls = None, 0

    def add(self, step, metrics):
        if self.last_time is None:
            jax.block_until_ready(metrics)
            self.last_time, self.last_step = time.time(), step
        self.sum = metrics if self.sum is None else jax.tree.map(jnp.add, self.sum, metrics)
        self.calls += 1

    def rows(self, step, replicas):
        """One row per replica: interval-mean metrics and the speed of the whole program."""
        sums = {k: np.reshape(v, (replicas,)) / self.calls
                for k, v in jax.device_get(self.sum).items()}
        rows = [{k: float(v[r]) for k, v in sums.items()} for r in range(replicas)]
        self.sum, self.calls = None, 0
        now = time.time()
        if step > self.last_step:
            steps_per_s = (step - self.last_step) / max(now - self.last_time, 1e-9)
            for row in rows:
                row.update(steps_per_s=steps_per_s, images_per_s=steps_per_s * self.batch_size)
        self.last_time, self.last_step = now, step
        return rows

    def line(self, step, row):
        speed = row.get("steps_per_s", float("nan"))
        return (f"step {step}/{self.num_steps} | d_loss {row['d_loss']:.3f} g_loss "
                f"{row['g_loss']:.3f} | D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f} "
                f"acc {row['d_acc']:.2f} | {speed:.2f} steps/s ({speed * self.batch_size:.0f} "
                f"img/s) | ETA {_format_eta((self.num_steps - step) / speed)}")


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
    return train_replicas(config, [workdir], [config.seed])[0]


def train_replicas(config, workdirs, seeds):
    """Trains independent runs of one config, one per (workdir, seed), in lockstep.

    With several seeds, one compiled program steps them all (config.replicas_impl: a traced
    loop over replicas, or `vmap`); each replica keeps its own data order (that of its seed), checkpoints,
    metrics and samples, and computes what it would alone (to float tolerance).
    Returns the final TrainState of each run.
    """
    config_checks.validate(config)
    config_checks.check_devices(config, jax.device_count())
    config_checks.check_processes(config, jax.process_count())
    if len(workdirs) != len(seeds) or len(set(map(os.path.abspath, workdirs))) != len(workdirs):
        raise ValueError(f"Need one distinct workdir per seed, got {workdirs} for {seeds}.")
    for workdir, seed in zip(workdirs, seeds):
        _check_resume_config(_with_seed(config, seed), workdir)
    for workdir in workdirs:
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:
            raise config_checks.ConfigError(f"Cannot use --workdir {workdir}: {e}.") from e
    with contextlib.ExitStack() as stack:
        for workdir in workdirs:
            stack.enter_context(WorkdirLock(workdir))
        stop = stack.enter_context(_StopSignals())
        return _train(config, workdirs, seeds, stop)


class _Run:
    """What one replica owns: its folder, seed, checkpoints, metrics and sample latents."""

    def __init__(self, config, workdir, seed):
        self.workdir, self.seed = workdir, seed
        self.checkpointer = Checkpointer(workdir, config.train.keep_checkpoints)
        self.writer = MetricsWriter(workdir, enabled=distributed.is_writer())
        self.latents = fixed_latents(_with_seed(config, seed))
        self.samples_dir = os.path.join(workdir, "samples")
        if distributed.is_writer():
            os.makedirs(self.samples_dir, exist_ok=True)

    def close(self):
        self.checkpointer.wait()
        self.checkpointer.close()
        self.writer.close()


def _with_seed(config, seed):
    config = config.copy_and_resolve_references()
    config.seed = seed
    return config


def _train(config, workdirs, seeds, stop):
    dtype = jnp.dtype(config.dtype)
    train_images = load_train_images(config)
    num_examples = len(train_images)
    num_steps = config_checks.total_steps(config, num_examples)
    logging.info("Dataset %s: %d training images of %s.", config.dataset.name, num_examples,
                 train_images.shape[1:])
    if config.eval.final or config.eval.every:  # read the test split now, not after training
        d = config.dataset
        data.load_split(d.name, "test", d.data_dir, d.download)

    trainer = ParallelTrainer(config, config_checks.image_size(config), train_images.shape[-1],
                              dtype, replicas=len(seeds))
    runs = [_Run(config, workdir, seed) for workdir, seed in zip(workdirs, seeds)]
    try:
        return _train_runs(config, runs, trainer, train_images, num_steps, stop)
    finally:
        for run in runs:
            run.close()


def _train_runs(config, runs, trainer, train_images, num_steps, stop):
    t = config.train
    num_examples = len(train_images)
    generator = trainer.generator
    states = []
    for run in runs:
        state = create_state(config, generator, trainer.discriminator, train_images.shape[1:],
                             run.seed)
        restored = run.checkpointer.restore_latest(state)
        if restored is not None:
            step, state, position = restored
            logging.info("%s: resuming at step %d (epoch %d, batch %d).", run.workdir, step,
                         position["epoch"], position["batch_in_epoch"])
            run.writer.truncate_after(step)
        if distributed.is_writer():
            _save_config(_with_seed(config, run.seed), run.workdir)
        states.append(state)
    logging.info("Parameters: generator %d, discriminator %d (upsample=%s).",
                 models.param_count(states[0].g_params), models.param_count(states[0].d_params),
                 config.model.upsample)
    steps = sorted({int(s.step) for s in states})
    if len(steps) > 1:
        raise ReplicaStepsDiffer(f"Replicas are at different steps {steps}; train them apart.")
    step = steps[0]
    state = trainer.place(trainer.stack(states))
    sample = jax.jit(lambda params, stats, z: generator.apply(
        {"params": params, "batch_stats": stats}, z, train=False))
    real_reference = data.to_model_range(train_images[:t.num_samples])
    images_on_device = trainer.place_images(train_images)

    def evaluate(run, host_state, num_samples):
        result = evaluate_generator(
            config, generator, {"params": host_state.g_params,
                                "batch_stats": host_state.g_batch_stats},
            trainer.discriminator, {"params": host_state.d_params,
                                    "batch_stats": host_state.d_batch_stats},
            num_samples, run.seed)
        logging.info("%s, step %d: FID %.2f KID %.4f precision %.3f recall %.3f hf_ratio %.3f "
                     "D dead %.3f ECE %.3f (%d samples, %.1f s)", run.workdir,
                     int(host_state.step), result["fid"], result["kid"], result["precision"],
                     result["recall"], result["hf_ratio"], result["d_dead_fraction_mean"],
                     result["d_ece"], num_samples, result["eval_seconds"])
        return result

    def save_checkpoints(step):
        for run, host_state in zip(runs, trainer.unstack(trainer.unplace(state))):
            if not _all_finite((host_state.g_params, host_state.d_params)):
                raise DivergenceError(
                    f"{run.workdir}: non-finite parameters at step {step}; not checkpointed. "
                    f"The last good checkpoint (step {run.checkpointer.latest_step()}) is kept "
                    f"in {run.checkpointer.directory}; lower the learning rates or change the "
                    "loss.")
            run.checkpointer.save(step, host_state,
                                  data.data_position(step, t.batch_size, num_examples))

    if step >= num_steps:
        logging.info("Nothing to do: the run already reached step %d of %d.", step, num_steps)
    def stop_requested(step):
        if jax.process_count() == 1:
            return stop.received is not None
        # A signal reaches the processes of a pod at different steps: they stop together, or
        # the collective checkpoint would wait forever. Agreeing is a collective (a host sync),
        # so it happens at the log steps only, where the loop waits for the devices anyway.
        return step % t.log_every == 0 and distributed.any_process(stop.received is not None)

    progress = _Progress(step, num_steps, t.batch_size)
    while step < num_steps:
        if stop_requested(step):
            if runs[0].checkpointer.latest_step() != step:
                save_checkpoints(step)
            for run in runs:
                run.checkpointer.wait()
            signum = stop.received or signal.SIGTERM
            raise PreemptedError(
                f"Received signal {signum} at step {step}: checkpoint saved in "
                f"{', '.join(r.checkpointer.directory for r in runs)}. Rerun the same command "
                "to resume.", signum)
        indices = trainer.stack([data.batch_indices(run.seed, step, t.steps_per_call,
                                                    t.batch_size, num_examples) for run in runs])
        state, metrics = trainer.call(state, images_on_device, indices)
        step += t.steps_per_call
        progress.add(step, metrics)
        rows = [{} for _ in runs]
        if step % t.log_every == 0 or step == num_steps:
            # Metrics are averaged over all devices: every process sees the same rows, so a
            # divergence stops all of them at the same step.
            rows = progress.rows(step, len(runs))
            for run, row in zip(runs, rows):
                if not all(math.isfinite(v) for v in row.values()):
                    run.checkpointer.wait()
                    raise DivergenceError(
                        f"{run.workdir}: non-finite losses at step {step}: {row}. The last good "
                        f"checkpoint (step {run.checkpointer.latest_step()}) is kept in "
                        f"{run.checkpointer.directory}; lower the learning rates or change the "
                        "loss.")
                row["epoch"] = step * t.batch_size / num_examples
                prefix = f"[seed {run.seed}] " if len(runs) > 1 else ""
                logging.info("%s%s", prefix, progress.line(step, row))
        if distributed.is_writer() and (step % t.sample_every == 0 or step == num_steps):
            host_states = trainer.unstack(trainer.unplace(state))
            for run, row, host_state in zip(runs, rows, host_states):
                grid = np.asarray(sample(host_state.g_params, host_state.g_batch_stats,
                                         run.latents))
                images.save_grid(grid, os.path.join(run.samples_dir, f"step_{step:07d}.png"))
                row["sample_diversity"] = sample_diversity(grid, real_reference)
                row["collapsed"] = row["sample_diversity"] < t.collapse_diversity
                if row["collapsed"]:
                    logging.warning("%s, step %d: the generator looks collapsed (sample "
                                    "diversity %.3f of the reals' < %.3f).", run.workdir, step,
                                    row["sample_diversity"], t.collapse_diversity)
        e = config.eval
        if (distributed.is_writer() and e.every and step % e.every == 0
                and not (e.final and step == num_steps)):
            for run, row, host_state in zip(runs, rows, trainer.unstack(trainer.unplace(state))):
                row.update(_scalars(evaluate(run, host_state, e.num_samples)))
        for run, row in zip(runs, rows):
            if row:
                run.writer.write(step, row)
        if step % t.checkpoint_every == 0 or step == num_steps:
            save_checkpoints(step)

    final_states = trainer.unstack(trainer.unplace(state))
    for run, final in zip(runs, final_states):
        run.checkpointer.wait()
        if not distributed.is_writer():
            continue
        eval_path = os.path.join(run.workdir, "eval.json")
        if config.eval.final and _evaluated_step(eval_path) != int(final.step):
            result = {"step": int(final.step), **evaluate(run, final, config.eval.num_samples)}
            run.writer.write(int(final.step), _scalars(result))
            with open(eval_path + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(eval_path + ".tmp", eval_path)
        with open(os.path.join(run.workdir, "done.json"), "w") as f:
            json.dump({"step": int(final.step)}, f)
        logging.info("Finished at step %d; workdir %s", int(final.step), run.workdir)
    return final_states
