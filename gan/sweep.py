"""An ablation sweep: arms (overrides of one base config) x seeds, each run in its own folder.

A config with a `sweep` field (configs/ablation.py) declares the arms as a list of override
dicts, e.g. {"model.upsample": "bilinear", "model.d_activation": "relu"}, and the number of
seeds. Run (arm, seed) trains in DIR/<arm name>/seed_<seed>/ with `train.train_and_evaluate`.

Rerunning skips finished runs (their done.json exists) and resumes unfinished ones from their
checkpoints. A run that raises is recorded in its status.json as "diverged" (non-finite losses)
or "failed" (anything else) with the message, and the other runs go on; a rerun retries it.
A stop signal (Ctrl-C, SIGTERM) checkpoints the current run and stops the sweep.
With several processes (gan.distributed) all of them run every run together; status.json and
the report are written by process 0.
"""
import dataclasses
import json
import os
import re
import time
import traceback

import jax
import ml_collections
from absl import logging

from gan import config_checks, distributed, train
from gan.errors import UserFacingError
from gan.workdir_lock import WorkdirLockedError

SWEEP_FIELD = "sweep"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.=,+-]+$")


class SweepError(UserFacingError, ValueError):
    """The sweep declaration or an arm selection is invalid."""


@dataclasses.dataclass(frozen=True)
class Arm:
    index: int
    name: str
    overrides: dict


def arm_name(overrides):
    """'upsample=bilinear,d_activation=relu': the last part of each field name and its value."""
    if not overrides:
        return "base"
    return ",".join(f"{key.split('.')[-1]}={value}" for key, value in overrides.items())


def has_sweep(config):
    return SWEEP_FIELD in config


def arms(config):
    """The arms declared in config.sweep.arms, in order, with unique folder-safe names."""
    result, seen = [], {}
    for index, overrides in enumerate(config.sweep.arms):
        name = arm_name(overrides)
        if not _SAFE_NAME.match(name):
            raise SweepError(f"Arm {index} {overrides} gives the folder name {name!r}; use values "
                             "made of letters, digits and _ . = , + - only.")
        if name in seen:
            raise SweepError(f"Arms {seen[name]} and {index} are both {name!r}; remove one.")
        seen[name] = index
        result.append(Arm(index, name, dict(overrides)))
    return result


def seeds(config):
    return list(range(config.seed, config.seed + config.sweep.num_seeds))


def select_arm(all_arms, index_or_name):
    """The arm named `index_or_name`, or with that index; the error lists the valid ones."""
    for arm in all_arms:
        if index_or_name in (arm.name, str(arm.index)):
            return arm
    valid = "\n  ".join(f"{arm.index}: {arm.name}" for arm in all_arms)
    raise SweepError(f"No arm {index_or_name!r} in this sweep. Valid arms (index or name):\n  "
                     f"{valid}")


def describe_arms(config):
    """One line per arm: index, name, overrides (what --list_arms prints)."""
    return "\n".join(f"{arm.index}\t{arm.name}\t{json.dumps(arm.overrides)}"
                     for arm in arms(config))


def run_config(config, arm, seed):
    """The plain one-run config of (arm, seed): the sweep field removed, overrides applied."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    del cfg[SWEEP_FIELD]
    for key, value in arm.overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            if part not in node:
                raise SweepError(f"Arm {arm.name!r} overrides {key!r}, but the config has no "
                                 f"{part!r} in it.")
            node = node[part]
        node[leaf] = value
    cfg.seed = seed
    return cfg


def run_dir(workdir, arm_or_name, seed):
    name = arm_or_name.name if isinstance(arm_or_name, Arm) else arm_or_name
    return os.path.join(workdir, name, f"seed_{seed}")


# Fields that define a run's result: a finished run made with other values is not this run.
RESULT_FIELDS = ("seed", "loss", "dtype", "dataset.name", "dataset.image_size",
                 "train.batch_size", "train.num_steps", "train.num_epochs", "eval.num_samples")
RESULT_PREFIXES = ("model.", "optim.")
EXEMPT_FIELDS = ("model.transpose_impl",)  # same math either way


def config_mismatch(path, run_cfg):
    """['field: run X, sweep Y', ...] where the run in `path` was made with another config."""
    return [f"{name}: run {old!r}, sweep {new!r}" for name, old, new in
            config_checks.saved_config_differences(path, run_cfg, RESULT_FIELDS,
                                                   RESULT_PREFIXES, EXEMPT_FIELDS)]


def is_finished(path, run_cfg=None):
    """done.json exists and, given the run's config, the run was made with it."""
    if not os.path.exists(os.path.join(path, "done.json")):
        return False
    return run_cfg is None or not config_mismatch(path, run_cfg)


def write_status(path, status, **fields):
    if not distributed.is_writer():
        return
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, "status.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"status": status, **fields}, f, indent=2)
    os.replace(tmp, os.path.join(path, "status.json"))


def read_status(path):
    """The run's status.json as a dict, or {} if it has none."""
    try:
        with open(os.path.join(path, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_one(config, arm, seed, workdir, train_fn=None):
    """Trains (or resumes) one run; records its outcome in status.json and returns it.

    A stop signal (train.PreemptedError: the run checkpointed and can resume) stops the sweep;
    a run folder that another live process is writing is left alone ("busy").
    """
    train_fn = train_fn or train.train_and_evaluate
    path = run_dir(workdir, arm, seed)
    start = time.time()
    if distributed.is_writer() and os.path.exists(os.path.join(path, "status.json")):
        os.remove(os.path.join(path, "status.json"))  # a failure of an earlier attempt
    try:
        train_fn(run_config(config, arm, seed), path)
    except train.PreemptedError:
        raise
    except WorkdirLockedError as e:
        logging.warning("Run %s seed %d skipped: %s", arm.name, seed, e)
        return "busy"
    except Exception as e:  # One run's failure must not stop the sweep. pylint: disable=broad-except
        status = "diverged" if isinstance(e, train.DivergenceError) else "failed"
        logging.error("Run %s seed %d %s: %s", arm.name, seed, status, e)
        write_status(path, status, message=f"{type(e).__name__}: {e}",
                     traceback=traceback.format_exc(), wall_s=time.time() - start)
        return status
    write_status(path, "finished", wall_s=time.time() - start)
    return "finished"


def run_arm_seeds(config, arm, pending_seeds, workdir, train_fn=None):
    """Runs the given seeds of one arm; returns {seed: status}.

    With config.replicas_per_program = R > 1, seeds go R at a time through
    `train.train_replicas` (one program). A group that fails (one seed diverged, say) or
    whose checkpoints stand at different steps is rerun seed by seed, each resuming from its own
    checkpoint, so every seed still gets its own status.json and done.json.
    """
    group_size = config.replicas_per_program
    if group_size == 1 or train_fn is not None:
        return {seed: run_one(config, arm, seed, workdir, train_fn) for seed in pending_seeds}
    outcomes = {}
    for i in range(0, len(pending_seeds), group_size):
        group = pending_seeds[i:i + group_size]
        paths = [run_dir(workdir, arm, seed) for seed in group]
        start = time.time()
        try:
            train.train_replicas(run_config(config, arm, group[0]), paths, group)
        except train.PreemptedError:
            raise
        except Exception as e:  # pylint: disable=broad-except
            logging.warning("Arm %s seeds %s as replicas: %s: %s; running them one by one.",
                            arm.name, group, type(e).__name__, e)
            outcomes.update({seed: run_one(config, arm, seed, workdir) for seed in group})
            continue
        for seed, path in zip(group, paths):
            write_status(path, "finished", wall_s=(time.time() - start) / len(group),
                         replicas=len(group))
            outcomes[seed] = "finished"
    return outcomes


def check(config):
    """Validates every run config of the sweep before any training starts."""
    all_arms = arms(config)
    if config.sweep.num_seeds < 1:
        raise SweepError(f"sweep.num_seeds={config.sweep.num_seeds} must be >= 1.")
    for arm in all_arms:
        try:
            run_cfg = run_config(config, arm, config.seed)
            config_checks.validate(run_cfg)
            config_checks.check_processes(run_cfg, jax.process_count())
        except config_checks.ConfigError as e:
            raise SweepError(f"Arm {arm.index} ({arm.name}): {e}") from e
    return all_arms


def _use_compilation_cache(path):
    """Seeds of one arm compile the same program: reuse it (measured: ~3 s of CPU per run)."""
    if not jax.config.jax_compilation_cache_dir:  # a cache the user set up wins
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_sweep(config, workdir, arm=None, train_fn=None):
    """Runs every unfinished (arm, seed), or only those of `arm` (an index or name).

    Returns {(arm name, seed): status}, status "skipped" for runs that had already finished.
    """
    selected = check(config)
    if arm is not None:
        selected = [select_arm(selected, str(arm))]
    if config.sweep.compilation_cache:
        _use_compilation_cache(os.path.join(workdir, "jax_cache"))
    outcomes = {}
    for a in selected:
        pending = []
        for seed in seeds(config):
            if is_finished(run_dir(workdir, a, seed), run_config(config, a, seed)):
                outcomes[(a.name, seed)] = "skipped"
            else:
                pending.append(seed)
        logging.info("Arm %d/%d %s: %d seeds to run, %d finished before.", a.index + 1,
                     len(config.sweep.arms), a.name, len(pending),
                     config.sweep.num_seeds - len(pending))
        for seed, status in run_arm_seeds(config, a, pending, workdir, train_fn).items():
            outcomes[(a.name, seed)] = status
    counts = {s: list(outcomes.values()).count(s) for s in sorted(set(outcomes.values()))}
    logging.info("Sweep in %s: %s", workdir, counts)
    return outcomes
