"""Runs that survive (issue 6): each failure is provoked on purpose and its outcome asserted.

SIGTERM and SIGKILL mid-run, NaN parameters, unreadable checkpoints, a changed config on
resume, two writers on one workdir, and bitwise determinism of reruns.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gan import checkpointing, config_checks, train
from gan.workdir_lock import WorkdirLock, WorkdirLockedError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"model.latent_dim": 16, "model.g_features": 8, "model.d_features": 8,
         "train.batch_size": 16, "train.log_every": 5, "train.sample_every": 10,
         "train.checkpoint_every": 10, "train.num_samples": 4, "eval.final": False}


def small_config(num_steps=20, **overrides):
    config = config_checks.default_config()
    for name, value in {**SMALL, "train.num_steps": num_steps, **overrides}.items():
        section, _, field = name.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


def cli(workdir, num_steps, extra=()):
    args = [sys.executable, "-m", "gan.main", "--config=configs/default.py", f"--workdir={workdir}",
            f"--config.train.num_steps={num_steps}"]
    args += [f"--config.{k}={v}" for k, v in SMALL.items()] + list(extra)
    return args


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_bitwise_equal(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out waiting for the run to progress"
        time.sleep(0.2)


def steps_in(workdir):
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(path) if s.isdigit()) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
    """The reference: 20 steps never interrupted."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    return workdir, train.train_and_evaluate(small_config(), workdir)


def test_rerun_is_bitwise_deterministic(straight_run, tmp_path):
    workdir, state = straight_run
    again = train.train_and_evaluate(small_config(), str(tmp_path))
    assert_bitwise_equal(state, again)
    drop = {"steps_per_s", "images_per_s"}  # wall-clock numbers are the only difference
    rows = [[{k: v for k, v in json.loads(line).items() if k not in drop}
             for line in open(os.path.join(d, "metrics.jsonl"))] for d in (workdir, tmp_path)]
    assert rows[0] == rows[1]


def test_sigterm_checkpoints_and_resume_matches(straight_run, tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(cli(workdir, 100000), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Received signal 15 at step" in err and "Rerun the same command" in err
    stopped_at = int(err.split("Received signal 15 at step ")[1].split(":")[0])
    assert stopped_at in steps_in(workdir)  # saved at the very step it stopped
    if stopped_at < 20:  # resume to 20 steps: identical to never stopping
        state = train.train_and_evaluate(small_config(), workdir)
        assert_bitwise_equal(straight_run[1], state)


def test_sigkill_resumes_bitwise_equal(straight_run, tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(cli(workdir, 20, ["--config.train.checkpoint_every=5"]),
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: steps_in(workdir), proc)
    proc.kill()
    proc.communicate()
    killed_at = steps_in(workdir)
    state = train.train_and_evaluate(small_config(), workdir)
    assert int(state.step) == 20
    assert_bitwise_equal(straight_run[1], state)
    assert killed_at[-1] <= 20


def test_nan_parameters_stop_the_run_and_keep_the_good_checkpoint(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    train.train_and_evaluate(small_config(num_steps=10), workdir)
    restore = checkpointing.Checkpointer.restore_latest

    def restore_with_nan(self, abstract_state):
        step, state, position = restore(self, abstract_state)
        poisoned = jax.tree.map(lambda x: x * np.nan, state.d_params)
        return step, state.replace(d_params=poisoned), position

    monkeypatch.setattr(checkpointing.Checkpointer, "restore_latest", restore_with_nan)
    with pytest.raises(train.DivergenceError, match=r"(?i)non-finite losses at step 15.*step 10"):
        train.train_and_evaluate(small_config(num_steps=30), workdir)
    assert steps_in(workdir) == [10]  # nothing non-finite was saved, the good one is kept
    monkeypatch.undo()
    state = train.train_and_evaluate(small_config(num_steps=10), workdir)
    assert all(np.all(np.isfinite(x)) for x in leaves(state.d_params))


def _truncate_checkpoint(workdir, step):
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "state")):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "r+b") as f:
                f.truncate(min(os.path.getsize(path), 10))


def test_truncated_checkpoint_falls_back_to_previous(straight_run, tmp_path, caplog):
    workdir = str(tmp_path)
    train.train_and_evaluate(small_config(num_steps=20), workdir)
    assert steps_in(workdir) == [10, 20]
    _truncate_checkpoint(workdir, 20)
    state = train.train_and_evaluate(small_config(num_steps=20), workdir)
    assert "Checkpoint of step 20 is unreadable" in caplog.text
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "20"))  # kept, not deleted
    assert_bitwise_equal(straight_run[1], state)  # redone from step 10, same result


def test_no_readable_checkpoint_refuses_with_folder_to_remove(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(small_config(num_steps=10), workdir)
    _truncate_checkpoint(workdir, 10)
    with pytest.raises(checkpointing.CheckpointError, match="Remove .*checkpoints"):
        train.train_and_evaluate(small_config(num_steps=20), workdir)


def test_missing_metadata_is_detected(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(small_config(num_steps=20), workdir)
    os.remove(os.path.join(workdir, "checkpoints", "20", "state", "_METADATA"))
    state = train.train_and_evaluate(small_config(num_steps=20), workdir)
    assert int(state.step) == 20 and os.path.isdir(os.path.join(workdir, "corrupt_checkpoints",
                                                                 "20"))


def test_resume_with_changed_model_names_the_fields(tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(small_config(num_steps=10), workdir)
    changed = small_config(num_steps=20, **{"model.g_features": 12, "loss": "hinge"})
    with pytest.raises(config_checks.ConfigError) as e:
        train.train_and_evaluate(changed, workdir)
    assert "model.g_features: saved 8, now 12" in str(e.value)
    assert "loss: saved 'nonsaturating', now 'hinge'" in str(e.value)
    # Longer training and the other transposed-conv implementation are allowed.
    state = train.train_and_evaluate(small_config(num_steps=20, **{
        "model.transpose_impl": "flax"}), workdir)
    assert int(state.step) == 20


def test_second_writer_is_refused(tmp_path):
    with WorkdirLock(str(tmp_path)):
        with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
            train.train_and_evaluate(small_config(), str(tmp_path))
    with WorkdirLock(str(tmp_path)):  # released on exit
        pass


def test_bad_config_fails_before_touching_the_workdir(tmp_path):
    workdir = tmp_path / "never"
    with pytest.raises(config_checks.ConfigError, match="did you mean 'train.batch_size'"):
        config = small_config()
        config.train.unlock()
        config.train.batchsize = 3
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
