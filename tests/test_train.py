"""A short real-MNIST training run through gan.train.train_and_evaluate: what it writes
(checkpoints, metrics.jsonl, TensorBoard events, sample grids), exact resume equality, and
steps_per_call > 1 computing the same training as one step per call.

One small config (latent 32, 16 features, batch 32) keeps each run to seconds on 2 CPU cores;
run A (40 steps straight) is shared by the tests that read its outputs.
"""
import json
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from gan import config_checks, data, train

NUM_STEPS, BATCH, NUM_SAMPLES = 40, 32, 16
LOG_EVERY, CHECKPOINT_EVERY, SAMPLE_EVERY = 10, 20, 20


def small_config(num_steps=NUM_STEPS, steps_per_call=1):
    config = config_checks.default_config()
    config.model.latent_dim = 32
    config.model.g_features = 16
    config.model.d_features = 16
    t = config.train
    t.batch_size, t.num_steps, t.steps_per_call = BATCH, num_steps, steps_per_call
    t.log_every, t.checkpoint_every, t.sample_every = LOG_EVERY, CHECKPOINT_EVERY, SAMPLE_EVERY
    t.num_samples = NUM_SAMPLES
    config.eval.final = False  # evaluation inside training has its own test below
    return config


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, data_dir):
    """40 steps straight, one step per call: (workdir, final state)."""
    workdir = str(tmp_path_factory.mktemp("run_a"))
    state = train.train_and_evaluate(small_config(), workdir)
    return workdir, state


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _leaves_with_paths(state):
    return [(jax.tree_util.keystr(p), np.asarray(x))
            for p, x in jax.tree_util.tree_leaves_with_path(state)]


# ---------------------------------------------------------------- what a run writes

def test_returns_the_final_state(run_a):
    _, state = run_a
    assert int(state.step) == NUM_STEPS
    for name, leaf in _leaves_with_paths((state.g_params, state.d_params)):
        assert np.all(np.isfinite(leaf)), name


def test_checkpoints_hold_the_whole_state_and_data_position(run_a):
    workdir, state = run_a
    directory = os.path.join(workdir, "checkpoints")
    manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
    try:
        assert manager.all_steps() == [20, 40]  # every checkpoint_every steps
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = manager.restore(40, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    finally:
        manager.close()
    # 40 steps of 32 from 60000 images: still epoch 0, 40th batch, 1280 images seen.
    assert restored.data["epoch"] == 0
    assert restored.data["batch_in_epoch"] == 40
    assert restored.data["examples_seen"] == 40 * BATCH
    saved, final = _leaves_with_paths(restored.state), _leaves_with_paths(state)
    assert [n for n, _ in saved] == [n for n, _ in final]
    for (name, a), (_, b) in zip(saved, final):
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_metrics_jsonl_rows_with_moving_finite_losses(run_a):
    workdir, _ = run_a
    rows = _metrics(workdir)
    assert [r["step"] for r in rows] == list(range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY))
    for r in rows:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc", "steps_per_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (r["step"], key)
        for key in ("d_real", "d_fake", "d_acc"):  # probabilities and an accuracy
            assert 0.0 <= r[key] <= 1.0, (r["step"], key)
    for key in ("d_loss", "g_loss"):  # the losses move: training is happening
        values = [r[key] for r in rows]
        assert all(a != b for a, b in zip(values, values[1:])), (key, values)


def test_sample_grids_are_pngs_that_change(run_a):
    workdir, _ = run_a
    paths = sorted(os.listdir(os.path.join(workdir, "samples")))
    assert len(paths) == NUM_STEPS // SAMPLE_EVERY
    grids = []
    for name in paths:
        with Image.open(os.path.join(workdir, "samples", name)) as image:
            assert image.format == "PNG"
            image.load()
            grids.append(np.asarray(image))
    for grid in grids:
        # 16 samples of 28x28: the grid holds at least 4 x 4 digits, and is not blank.
        assert grid.shape[0] >= 4 * 28 and grid.shape[1] >= 4 * 28
        assert grid.std() > 0
    # Same fixed latents, different generator: the grids differ.
    assert grids[0].shape == grids[1].shape and not np.array_equal(grids[0], grids[1])


def test_tensorboard_events_and_run_files(run_a):
    workdir, _ = run_a
    events = [f for f in os.listdir(os.path.join(workdir, "tensorboard"))
              if f.startswith("events.out.tfevents")]
    assert events and os.path.getsize(os.path.join(workdir, "tensorboard", events[0])) > 0
    with open(os.path.join(workdir, "done.json")) as f:
        assert json.load(f)["step"] == NUM_STEPS
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["num_steps"] == NUM_STEPS


# ---------------------------------------------------------------- exact resume

def test_resumed_run_equals_uninterrupted_run_bitwise(run_a, tmp_path, monkeypatch):
    workdir_a, state_a = run_a
    workdir_b = str(tmp_path / "run_b")
    first = train.train_and_evaluate(small_config(num_steps=20), workdir_b)
    assert int(first.step) == 20

    starts = []
    original = data.batch_indices

    def recording_batch_indices(seed, start_step, *args, **kwargs):
        starts.append(start_step)
        return original(seed, start_step, *args, **kwargs)

    monkeypatch.setattr(data, "batch_indices", recording_batch_indices)
    state_b = train.train_and_evaluate(small_config(num_steps=NUM_STEPS), workdir_b)
    # It resumed at step 20 (a fresh 40-step run from step 0 would also match run A).
    assert starts == list(range(20, NUM_STEPS))

    leaves_a, leaves_b = _leaves_with_paths(state_a), _leaves_with_paths(state_b)
    assert [n for n, _ in leaves_a] == [n for n, _ in leaves_b]
    assert any(".g_opt_state" in n for n, _ in leaves_a)  # optimizer states are compared too
    for (name, a), (_, b) in zip(leaves_a, leaves_b):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), f"{name} differs after resume"

    # The resumed run's log continues the first one's, with the same numbers as run A.
    rows_a, rows_b = _metrics(workdir_a), _metrics(workdir_b)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    for ra, rb in zip(rows_a, rows_b):
        assert (ra["d_loss"], ra["g_loss"]) == (rb["d_loss"], rb["g_loss"]), ra["step"]


# ---------------------------------------------------------------- several steps per call

def test_two_steps_per_call_trains_the_same(tmp_path):
    """steps_per_call=2 traces two steps into one program: the same training up to float
    reassociation. Compared after 4 steps, before GAN training's chaos amplifies that noise
    (measured here: ~2e-5 lr after 4 steps, ~0.3 lr after 10, ~5 lr after 40, with either
    transpose_impl). Adam moves a parameter by about lr (2e-4) per step, so a real difference
    (another batch order or random stream) moves parameters by whole steps' worth."""
    states = [train.train_and_evaluate(small_config(num_steps=4, steps_per_call=n),
                                       str(tmp_path / f"spc{n}")) for n in (1, 2)]
    assert [int(s.step) for s in states] == [4, 4]
    lr = small_config().optim.g_lr
    leaves_a, leaves_c = (_leaves_with_paths((s.g_params, s.d_params)) for s in states)
    assert [n for n, _ in leaves_a] == [n for n, _ in leaves_c]
    for (name, a), (_, c) in zip(leaves_a, leaves_c):
        np.testing.assert_allclose(c, a, rtol=0, atol=0.01 * lr, err_msg=name)


# ---------------------------------------------------------------- evaluation inside training

def test_evaluation_curves_and_final_eval_json(tmp_path, data_dir):
    """eval.every writes evaluation rows into metrics.jsonl; the end writes eval.json (the
    contract the ablation report reads) once: a rerun of the finished run does not redo it."""
    config = small_config()
    config.eval.every, config.eval.num_samples, config.eval.final = 20, 200, True
    workdir = str(tmp_path)
    train.train_and_evaluate(config, workdir)
    curve = [r for r in _metrics(workdir) if "fid" in r]
    assert [r["step"] for r in curve] == [20, 40]  # step 40 is the final evaluation's row
    result = json.load(open(os.path.join(workdir, "eval.json")))
    assert result["step"] == NUM_STEPS and result["num_samples"] == 200
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "classes_covered",
                "hf_ratio", "checkerboard", "d_dead_fraction_mean", "d_ece", "d_brier",
                "classifier_sha256", "classifier_test_accuracy", "spectrum_fake"):
        assert key in result, key
    assert math.isfinite(result["fid"]) and result["fid"] > 0
    assert result["fid"] == curve[-1]["fid"]
    mtime = os.path.getmtime(os.path.join(workdir, "eval.json"))
    train.train_and_evaluate(config, workdir)
    assert os.path.getmtime(os.path.join(workdir, "eval.json")) == mtime
    config.train.num_steps = NUM_STEPS + 20  # training on re-evaluates the longer run
    train.train_and_evaluate(config, workdir)
    assert json.load(open(os.path.join(workdir, "eval.json")))["step"] == NUM_STEPS + 20
