"""Data parallelism and replicas on 8 virtual CPU devices (conftest sets XLA_FLAGS).

pmap and sharded training equal single-device training on the same global batches (with
synchronised batch norm); seed replicas in one program (looped or vmapped) equal the same seeds
run alone; bfloat16 compute trains with finite losses while parameters stay float32.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan import config_checks, data, train, train_step
from gan.metrics_writer import read_metrics
from gan.parallel import ParallelTrainer
from gan.train_step import create_state

BATCH, NUM_IMAGES = 32, 512


def small_config(**overrides):
    config = config_checks.default_config()
    config.model.latent_dim, config.model.g_features, config.model.d_features = 16, 8, 8
    config.model.d_norm = "batch"  # exercises batch-norm synchronisation in G and D
    for name, value in overrides.items():
        section, _, field = name.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


def train_steps(config, num_steps=3):
    """Params after a few steps. Plain SGD instead of Adam: Adam's g / sqrt(v) turns float noise
    in near-zero gradients into whole steps of size lr, which would hide real differences."""
    images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_step, "make_optimizers", lambda c: (optax.sgd(0.1), optax.sgd(0.1)))
        trainer = ParallelTrainer(config, 28, 1, jnp.float32)
        state = trainer.place(create_state(config, trainer.generator, trainer.discriminator,
                                           (28, 28, 1), 0))
        on_device = trainer.place_images(images)
        for step in range(num_steps):
            state, metrics = trainer.call(state, on_device,
                                          data.batch_indices(0, step, 1, BATCH, NUM_IMAGES))
    return jax.device_get(trainer.unplace(state)), jax.device_get(metrics)


@pytest.fixture(scope="module")
def single():
    return train_steps(small_config())


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_data_parallel_equals_single_device(single, mode):
    assert jax.device_count() == 8
    state, metrics = train_steps(small_config(parallelism=mode))
    for a, b in zip(jax.tree.leaves(single[0]), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=1e-3, atol=1e-5)
    for key in single[1]:
        np.testing.assert_allclose(single[1][key], metrics[key], rtol=1e-4, atol=1e-5)


def compiled_flops(config):
    """XLA's FLOP count of one compiled train step (per device where the program is sharded)."""
    trainer = ParallelTrainer(config, 28, 1, jnp.float32)
    state = trainer.place(create_state(config, trainer.generator, trainer.discriminator,
                                       (28, 28, 1), 0))
    images = trainer.place_images(np.zeros((NUM_IMAGES, 28, 28, 1), np.uint8))
    indices = data.batch_indices(0, 0, 1, BATCH, NUM_IMAGES)
    cost = trainer.compiled(state, images, indices).cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def test_sharded_step_splits_the_work_over_devices():
    """Each device does about 1/8 of the single-device step's FLOPs: the partitioner must not
    run parts of it (e.g. the generator on unsharded latents) whole on every device."""
    single_flops = compiled_flops(small_config())
    per_device = compiled_flops(small_config(parallelism="sharded"))
    assert per_device < 1.5 * single_flops / jax.device_count(), (per_device, single_flops)


def test_unsynchronised_batch_norm_differs_but_stays_replicated(single):
    state, _ = train_steps(small_config(parallelism="pmap", sync_batch_norm=False))
    diffs = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
             for a, b in zip(jax.tree.leaves(single[0].g_params), jax.tree.leaves(state.g_params))]
    assert max(diffs) > 1e-3  # per-device statistics are a different computation


def test_batch_must_divide_over_devices(tmp_path):
    config = small_config(parallelism="pmap")
    config.train.batch_size = 12
    with pytest.raises(config_checks.ConfigError, match="multiple of 8"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_replicas_need_single_parallelism():
    with pytest.raises(config_checks.ConfigError, match="replicas_per_program"):
        config_checks.validate(small_config(parallelism="pmap", replicas_per_program=2))


def run_config(**overrides):
    config = small_config(**overrides)
    t = config.train
    t.batch_size, t.num_steps, t.log_every, t.sample_every, t.checkpoint_every = 16, 10, 5, 10, 5
    t.num_samples = 4
    config.eval.final = False
    return config


@pytest.mark.parametrize("replicas_impl", ["loop", "vmap"])
def test_replicas_equal_seeds_run_alone(replicas_impl, tmp_path, data_dir, monkeypatch):
    # Two steps of SGD: GAN training is chaotic (float noise from vmap's other summation order
    # grows ~100x per step here, with either transpose_impl), and Adam would turn that noise
    # into whole lr-sized steps on near-zero gradients.
    monkeypatch.setattr(train_step, "make_optimizers", lambda c: (optax.sgd(0.1), optax.sgd(0.1)))

    def config(**overrides):
        c = run_config(replicas_impl=replicas_impl, **overrides)
        c.train.num_steps = 2
        return c

    workdirs = [str(tmp_path / "r3"), str(tmp_path / "r4")]
    replicas = train.train_replicas(config(), workdirs, [3, 4])
    for seed, replica in zip((3, 4), replicas):
        alone = train.train_and_evaluate(config(seed=seed), str(tmp_path / f"alone{seed}"))
        for a, b in zip(jax.tree.leaves(replica), jax.tree.leaves(alone), strict=True):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=1e-4, atol=1e-5)
    # Distinct seeds really are distinct runs, each with its own outputs.
    assert not np.allclose(replicas[0].g_params["Dense_0"]["kernel"],
                           replicas[1].g_params["Dense_0"]["kernel"])
    for name in ("r3", "r4"):
        for output in ("done.json", "metrics.jsonl", "checkpoints/2", "samples/step_0000002.png"):
            assert (tmp_path / name / output).exists(), (name, output)
    # Rerunning the group resumes each replica from its own checkpoint (its own seed's config).
    again = train.train_replicas(config(), workdirs, [3, 4])
    for before, after in zip(replicas, again):
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_trains_with_float32_parameters(tmp_path, data_dir):
    state = train.train_and_evaluate(run_config(dtype="bfloat16"), str(tmp_path))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.g_params))
    rows = [r for r in read_metrics(str(tmp_path))
            if "d_loss" in r]
    assert rows and all(np.isfinite([r["d_loss"], r["g_loss"]]).all() for r in rows)
    assert rows[0]["d_loss"] != rows[-1]["d_loss"]
