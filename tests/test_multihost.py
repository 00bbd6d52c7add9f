"""Several processes training one run (issue 5): two local CPU processes of 4 devices each,
joined by jax.distributed on a local port, against one process with 8 devices.

Each launch is `python -m gan.main` as a user runs it; the parameters are read back from the
checkpoints.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gan import config_checks, distributed, train
from gan.evaluation import classifier

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"model.latent_dim": 16, "model.g_features": 8, "model.d_features": 8,
         "train.batch_size": 16, "train.log_every": 4, "train.sample_every": 4,
         "train.checkpoint_every": 4, "train.num_samples": 4, "eval.final": False}
STEPS = 12
PROCESS_TIMEOUT = 120


def small_config(parallelism, num_steps=STEPS):
    config = config_checks.default_config()
    for name, value in {**SMALL, "parallelism": parallelism,
                        "train.num_steps": num_steps}.items():
        section, _, field = name.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(workdir, parallelism, num_steps, num_processes=2, extra=(), extra_by_process=None,
           devices_by_process=None):
    """Starts `num_processes` processes of one run, 4 CPU devices each; returns the Popens.
    `extra_by_process` {process id: [flags]} adds flags to some processes only (last wins);
    `devices_by_process` {process id: count} gives some another number of CPU devices."""
    port = free_port()
    devices_by_process = devices_by_process or {}

    def env(i):
        count = devices_by_process.get(i, 4)
        return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
    args = [sys.executable, "-m", "gan.main", "--config=configs/default.py",
            f"--workdir={workdir}", f"--config.parallelism={parallelism}",
            f"--config.train.num_steps={num_steps}"]
    args += [f"--config.{k}={v}" for k, v in SMALL.items()] + list(extra)
    extra_by_process = extra_by_process or {}
    return [subprocess.Popen(args + list(extra_by_process.get(i, ())) + [
                                 f"--coordinator_address=localhost:{port}",
                                 f"--num_processes={num_processes}", f"--process_id={i}"],
                             cwd=REPO_ROOT, env=env(i), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for i in range(num_processes)]


def finish(procs):
    """Waits for every process; returns [(returncode, stderr)]."""
    results = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            results.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def run_processes(workdir, parallelism, num_steps, extra=()):
    results = finish(launch(workdir, parallelism, num_steps, extra=extra))
    for i, (code, err) in enumerate(results):
        assert code == 0, f"process {i} exited {code}:\n{err[-3000:]}"
    return results


def read_state(workdir, parallelism, num_steps=STEPS):
    """The run's final state, restored in this (single, 8-device) process."""
    return train.train_and_evaluate(small_config(parallelism, num_steps), workdir)


def metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory, data_dir):
    """The references: one process with 8 devices, per parallelism."""
    runs = {}
    for parallelism in ("pmap", "sharded"):
        workdir = str(tmp_path_factory.mktemp(f"one_{parallelism}"))
        runs[parallelism] = workdir, train.train_and_evaluate(small_config(parallelism), workdir)
    return runs


@pytest.mark.parametrize("parallelism", ["pmap", "sharded"])
def test_two_processes_train_like_one_and_resume(one_process_runs, tmp_path, parallelism):
    """8 steps, then a rerun to 12 that resumes: same parameters and logged losses as one
    process with the same 8 devices in all; metrics and samples written once (process 0)."""
    workdir = str(tmp_path / "run")
    run_processes(workdir, parallelism, 8)
    results = run_processes(workdir, parallelism, STEPS)
    assert "resuming at step 8" in results[0][1]
    assert "resuming at step 8" not in results[1][1]  # process 1 logs warnings only
    reference_dir, reference = one_process_runs[parallelism]
    assert_close(read_state(workdir, parallelism), reference)
    rows, expected = metric_rows(workdir), metric_rows(reference_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for row, ref in zip(rows, expected):
        np.testing.assert_allclose(row["d_loss"], ref["d_loss"], rtol=1e-4)
        np.testing.assert_allclose(row["g_loss"], ref["g_loss"], rtol=1e-4)
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == sorted(
        os.listdir(os.path.join(reference_dir, "samples")))
    assert json.load(open(os.path.join(workdir, "done.json"))) == {"step": STEPS}


def test_evaluation_during_and_after_training_runs_on_process_zero(tmp_path, data_dir):
    """Process 0 evaluates alone (in-training curve at step 4, eval.json at the end) while the
    other waits; nothing in evaluation may wait for the other processes (the classifier cache
    once did, through orbax, and hung the run)."""
    classifier.get_classifier("mnist", data_dir)  # cached for the subprocesses (shared cache)
    workdir = str(tmp_path / "run")
    run_processes(workdir, "pmap", 8, extra=["--config.eval.final=True", "--config.eval.every=4",
                                             "--config.eval.num_samples=100"])
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["step"] == 8
    assert [r["step"] for r in metric_rows(workdir) if "fid" in r] == [4, 8]


def test_a_signal_to_one_process_stops_both_with_a_checkpoint(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    procs = launch(workdir, "pmap", 100000)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + PROCESS_TIMEOUT
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        assert all(p.poll() is None for p in procs), finish(procs)
        assert time.time() < deadline, "the run did not log a step in time"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # as if only one host were told it is preempted
    results = finish(procs)
    assert [code for code, _ in results] == [128 + signal.SIGTERM] * 2, results
    stopped = [int(err.split("at step ")[-1].split(":")[0])
               for _, err in results if "Received signal" in err]
    assert len(stopped) == 2 and stopped[0] == stopped[1]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped[0])))


def test_single_parallelism_on_two_processes_is_refused(tmp_path, data_dir):
    workdir = tmp_path / "run"
    results = finish(launch(str(workdir), "single", 4))
    for code, err in results:
        assert code == 2, err[-2000:]
        assert "parallelism='single' with 2 processes" in err
        assert "--config.parallelism=pmap or sharded" in err
    assert not workdir.exists()


@pytest.mark.parametrize("flags, message", [
    (dict(coordinator_address="localhost:1234"), "also needs --num_processes, --process_id"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "must be HOST:PORT"),
    (dict(coordinator_address="h:99999", num_processes=2, process_id=0), "must be HOST:PORT"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "must be in 0..1"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), "must be >= 1"),
    (dict(auto=True, num_processes=2), "--distributed finds the processes itself"),
])
def test_inconsistent_launch_flags_are_refused(flags, message):
    with pytest.raises(distributed.LaunchError, match=message):
        distributed.check_flags(**flags)


def test_a_join_timeout_below_one_second_is_refused():
    with pytest.raises(distributed.LaunchError, match="--distributed_timeout=0 must be >= 1"):
        distributed.initialize("localhost:1234", 2, 1, timeout_s=0)


def test_launch_flag_error_exits_before_training(tmp_path, data_dir):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "gan.main", "--config=configs/default.py",
         f"--workdir={workdir}", "--process_id=1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--process_id also needs --coordinator_address, --num_processes" in proc.stderr
    assert not workdir.exists()


@pytest.mark.parametrize("address, message", [
    ("localhost:{port}", "nothing accepted a connection there within --distributed_timeout=2 s"),
    ("nosuchhost.invalid:1234", "cannot resolve host 'nosuchhost.invalid'"),
])
def test_unreachable_coordinator_is_named_within_the_timeout(tmp_path, data_dir, address,
                                                              message):
    """Process 1 started without a reachable process 0 (wrong address, process 0 not up):
    JAX's own wait would end in a fatal abort; ours names the address and exits 2."""
    workdir = tmp_path / "run"
    address = address.format(port=free_port())
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gan.main", "--config=configs/default.py",
         f"--workdir={workdir}", "--config.parallelism=pmap", f"--coordinator_address={address}",
         "--num_processes=2", "--process_id=1", "--distributed_timeout=2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"--coordinator_address={address}: {message}" in proc.stderr
    assert time.monotonic() - start < 60
    assert not workdir.exists()


@pytest.mark.parametrize("flag_on_process_1", ["--config.seed=1", "--workdir={other}"])
def test_processes_given_different_configs_or_workdirs_stop_before_training(
        tmp_path, data_dir, flag_on_process_1):
    workdir, other = tmp_path / "run", tmp_path / "other"
    procs = launch(str(workdir), "pmap", STEPS,
                   extra_by_process={1: [flag_on_process_1.format(other=other)]})
    for code, err in finish(procs):
        assert code == 2, err[-2000:]
        assert "Processes [1] were given another config or --workdir than process 0" in err
    assert not os.path.exists(workdir / "checkpoints")
    assert not os.path.exists(other / "checkpoints")


def test_processes_with_different_local_device_counts_stop_before_training(tmp_path, data_dir):
    workdir = tmp_path / "run"
    for code, err in finish(launch(str(workdir), "pmap", STEPS, devices_by_process={1: 2})):
        assert code == 2, err[-2000:]
        assert ("Processes have different numbers of local devices (process: devices "
                "{0: 4, 1: 2})") in err
        assert "Traceback" not in err
    assert not os.path.exists(workdir / "checkpoints")


@pytest.mark.parametrize("parallelism", ["pmap", "sharded"])
def test_many_calls_between_host_syncs_do_not_deadlock(tmp_path, data_dir, parallelism):
    """60 steps with no log, sample or checkpoint in between, so nothing but the per-call wait
    on CPU (ParallelTrainer._wait_for_each_call) keeps the processes from queueing calls far
    ahead, where XLA's CPU collectives once hung."""
    steps = 60
    run_processes(str(tmp_path / "run"), parallelism, steps,
                  extra=[f"--config.train.{name}={steps}"
                         for name in ("log_every", "sample_every", "checkpoint_every")])
    assert json.load(open(tmp_path / "run" / "done.json")) == {"step": steps}
