"""Several processes training one run: joining them, who writes, and agreeing when to stop.

One process per host (TPU VM pod slice) or per GPU runs the same command. After
`jax.distributed.initialize`, `jax.devices()` lists every process's devices and each compiled
step spans all of them, so every process must run the same compiled calls in the same order.
Files meant for people (logs, metrics, samples, reports) are written by process 0 only;
checkpoints are written by all processes together (orbax coordinates them).
"""
import collections
import hashlib
import json
import os
import socket
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from gan.errors import UserFacingError


class LaunchError(UserFacingError, ValueError):
    """The multi-process flags do not describe one consistent launch."""


EXPLICIT_FLAGS = ("coordinator_address", "num_processes", "process_id")


def check_flags(coordinator_address=None, num_processes=None, process_id=None, auto=False):
    """Raises LaunchError unless the flags are none, --distributed alone, or all three explicit."""
    values = dict(zip(EXPLICIT_FLAGS, (coordinator_address, num_processes, process_id)))
    given = [f"--{name}" for name, value in values.items() if value is not None]
    if auto and given:
        raise LaunchError(f"--distributed finds the processes itself; drop {', '.join(given)} "
                          "(or drop --distributed and give all three of --coordinator_address, "
                          "--num_processes, --process_id).")
    if not given:
        return
    missing = [f"--{name}" for name, value in values.items() if value is None]
    if missing:
        raise LaunchError(f"{', '.join(given)} also needs {', '.join(missing)}: an explicit "
                          "launch gives every process --coordinator_address=HOST:PORT (of "
                          "process 0), --num_processes=N and its own --process_id in 0..N-1.")
    if num_processes < 1:
        raise LaunchError(f"--num_processes={num_processes} must be >= 1.")
    if not 0 <= process_id < num_processes:
        raise LaunchError(f"--process_id={process_id} must be in 0..{num_processes - 1} "
                          f"(--num_processes={num_processes}).")
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT, "
                          "e.g. localhost:1234 or host0:1234.")


def initialize(coordinator_address=None, num_processes=None, process_id=None, auto=False,
               timeout_s=300):
    """Joins the processes of a multi-process launch; does nothing without such flags.

    Must run before anything asks JAX for its devices. `auto` lets JAX find the processes
    itself (TPU pod slice, SLURM, Open MPI). Gives up after `timeout_s` seconds if not all
    processes join (a wrong address, a process that never started).
    """
    check_flags(coordinator_address, num_processes, process_id, auto)
    if timeout_s < 1:
        raise LaunchError(f"--distributed_timeout={timeout_s} must be >= 1 second.")
    if not auto and coordinator_address is None:
        return
    where = "the processes JAX detects" if auto else (
        f"{num_processes} processes at {coordinator_address}")
    logging.info("Joining %s (as process %s); giving up after %d s (--distributed_timeout).",
                 where, "auto" if auto else process_id, timeout_s)
    if not auto and process_id != 0:
        _wait_for_coordinator(coordinator_address, timeout_s)
    explicit = {} if auto else dict(coordinator_address=coordinator_address,
                                     num_processes=num_processes, process_id=process_id)
    try:
        jax.distributed.initialize(**explicit, initialization_timeout=timeout_s)
    except (RuntimeError, ValueError) as e:
        message = " ".join(str(e).split())
        if auto:
            raise LaunchError(
                f"--distributed: jax.distributed.initialize failed ({message[:300]}). It "
                "finds the processes of TPU VM pod slices, SLURM and Open MPI; elsewhere drop "
                "--distributed and give every process --coordinator_address, --num_processes "
                "and its own --process_id.") from e
        raise LaunchError(
            f"jax.distributed.initialize failed: {message[:500]} -- check that every process "
            f"was started with the same --coordinator_address (process 0's HOST:PORT, reachable "
            f"from every host) and --num_processes, each with its own --process_id, and that "
            f"all start within --distributed_timeout={timeout_s} s.") from e


def _wait_for_coordinator(address, timeout_s):
    """Raises LaunchError unless process 0's HOST:PORT accepts a connection within timeout_s.

    JAX's own wait ends in a fatal abort with a gRPC message; this names the address instead.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            return
        except socket.gaierror as e:
            raise LaunchError(f"--coordinator_address={address}: cannot resolve host {host!r} "
                              f"({e.strerror}); give process 0's host name or IP.") from e
        except OSError as e:
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"--coordinator_address={address}: nothing accepted a connection there "
                    f"within --distributed_timeout={timeout_s} s (last: {e.strerror or e}). "
                    "Start process 0 (--process_id=0) with the same address, check the port "
                    "and that this host can reach it.") from e
            time.sleep(1)


def check_same_launch(config, workdir):
    """Raises LaunchError on every process unless all were given the same config and workdir,
    and have as many local devices each.

    Processes that differ would silently train a mix of two runs or wait for each other forever.
    """
    if jax.process_count() == 1:
        return
    # Every process sees every device and its owner, so this needs no collective (and JAX's
    # collectives between processes assume equal counts: process_allgather fails to reshape).
    counts = collections.Counter(d.process_index for d in jax.devices())
    if len(set(counts.values())) > 1:
        raise LaunchError(
            f"Processes have different numbers of local devices (process: devices "
            f"{dict(sorted(counts.items()))}): give every process the same number (the same "
            "XLA_FLAGS device count on CPU, as many entries in CUDA_VISIBLE_DEVICES on GPU).")
    text = json.dumps({"config": json.loads(config.to_json()), "workdir": os.path.abspath(
        workdir or "")}, sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    digests = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
    if differ:
        raise LaunchError(
            f"Processes {differ} were given another config or --workdir than process 0: every "
            "process must run the same command (same config file and --config.* overrides, "
            "same --workdir on a shared file system), differing only in --process_id.")


def describe():
    return (f"process {jax.process_index()} of {jax.process_count()}, "
            f"{jax.local_device_count()} local devices, {jax.device_count()} global devices "
            f"({jax.devices()[0].platform})")


def is_writer():
    """Process 0 writes the files meant for people; the others only compute."""
    return jax.process_index() == 0


def any_process(flag):
    """True on every process if `flag` is true on any: a decision all processes must share
    (to stop, to give up on a checkpoint) so that none is left waiting in a collective."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def barrier(name):
    """Waits until every process gets here (e.g. after process 0 changed shared files)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
