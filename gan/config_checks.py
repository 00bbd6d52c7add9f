"""Config validation: every field checked before any data load or compile.

The schema is configs/default.py itself: a field it does not have is a typo (we suggest the
nearest valid name), a value of another type is an error, and the enumerated and numeric fields
are checked against the values the code supports.
"""
import difflib
import importlib.util
import json
import os

import ml_collections

from gan import data, losses, models, parallel
from gan.errors import UserFacingError

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "default.py")

CHOICES = {
    "dataset.name": tuple(data.DATASETS),
    "model.upsample": models.UPSAMPLERS,
    "model.transpose_impl": models.TRANSPOSE_IMPLS,
    "model.d_activation": models.D_ACTIVATIONS,
    "model.d_norm": models.D_NORMS,
    "loss": losses.LOSSES,
    "dtype": ("float32", "bfloat16", "float16"),
    "parallelism": parallel.PARALLELISMS,
    "replicas_impl": parallel.REPLICA_IMPLS,
}
POSITIVE = ("model.latent_dim", "model.kernel_size", "model.g_features", "model.d_features",
            "optim.g_lr", "optim.d_lr", "train.batch_size", "train.steps_per_call",
            "train.log_every", "train.sample_every", "train.checkpoint_every",
            "train.keep_checkpoints", "train.num_samples", "replicas_per_program",
            "eval.num_samples", "eval.hf_cutoff")
NON_NEGATIVE = ("train.num_steps", "train.num_epochs", "model.leaky_slope", "dataset.image_size",
                "train.collapse_diversity", "eval.every")
UNIT_INTERVAL = ("optim.g_b1", "optim.d_b1", "optim.b2")  # [0, 1)


MIN_EVAL_SAMPLES = 10  # gan.evaluation.inputs.MIN_IMAGES; the k-NN metrics need a few


class ConfigError(UserFacingError, ValueError):
    """A config field has an unknown name, a wrong type or an unsupported value."""


def default_config():
    spec = importlib.util.spec_from_file_location("gan_default_config", _DEFAULT_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _type_ok(value, reference):
    if isinstance(reference, bool):
        return isinstance(value, bool)
    if isinstance(reference, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(reference, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(reference))


def validate(config, extra_fields=()):
    """Raises ConfigError listing every problem; returns the flat {name: value} dict otherwise."""
    schema = flatten(default_config())
    flat = flatten(config)
    problems = []
    for name, value in flat.items():
        if name in extra_fields:
            continue
        if name not in schema:
            close = difflib.get_close_matches(name, list(schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown field {name!r}{hint}")
        elif not _type_ok(value, schema[name]):
            problems.append(f"{name}={value!r} has type {type(value).__name__}, "
                            f"expected {type(schema[name]).__name__}")
    for name in schema:
        if name not in flat:
            problems.append(f"missing field {name!r} (configs/default.py has it)")
    if problems:  # types first: value checks below assume them
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))

    for name, valid in CHOICES.items():
        if flat[name] not in valid:
            problems.append(f"{name}={flat[name]!r} is not one of {list(valid)}")
    problems += [f"{n}={flat[n]!r} must be > 0" for n in POSITIVE if not flat[n] > 0]
    problems += [f"{n}={flat[n]!r} must be >= 0" for n in NON_NEGATIVE if not flat[n] >= 0]
    problems += [f"{n}={flat[n]!r} must be in [0, 1)" for n in UNIT_INTERVAL
                 if not 0 <= flat[n] < 1]
    if flat["dataset.image_size"] and flat["dataset.image_size"] not in models.SIZE_PATTERNS:
        problems.append(f"dataset.image_size={flat['dataset.image_size']} fits no stride-2 "
                        f"pattern; use 0 (native) or one of {sorted(models.SIZE_PATTERNS)}")
    if flat["eval.num_samples"] < MIN_EVAL_SAMPLES:
        problems.append(f"eval.num_samples={flat['eval.num_samples']} must be >= "
                        f"{MIN_EVAL_SAMPLES} (metrics are noisy below ~1000)")
    if flat["replicas_per_program"] > 1 and flat["parallelism"] != "single":
        problems.append("replicas_per_program > 1 needs parallelism='single'")
    if flat["train.num_steps"] == 0 and flat["train.num_epochs"] == 0:
        problems.append("train.num_steps and train.num_epochs are both 0: nothing to train")
    spc = flat["train.steps_per_call"]
    for n in ("train.log_every", "train.sample_every", "train.checkpoint_every"):
        if spc > 0 and flat[n] > 0 and flat[n] % spc:  # spc <= 0 is reported above
            problems.append(f"{n}={flat[n]} must be a multiple of train.steps_per_call={spc}")
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))
    return flat


def saved_config_differences(workdir, config, names, prefixes=(), exempt=()):
    """[(field, saved value, current value)] where `workdir`'s config.json differs from `config`
    in a field listed in `names` or under one of `prefixes` (except `exempt`); [] if no file."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            saved = flatten(json.load(f))
    except (OSError, ValueError):
        return []
    current = flatten(config.to_dict())
    return [(name, saved.get(name), current.get(name))
            for name in sorted(set(saved) | set(current))
            if (name in names or name.startswith(tuple(prefixes))) and name not in exempt
            and saved.get(name) != current.get(name)]


def check_devices(config, device_count):
    """The global batch must split evenly over the devices of a pmap/sharded run."""
    if config.parallelism != "single" and config.train.batch_size % device_count:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} does not divide over {device_count} "
            f"devices (parallelism={config.parallelism!r}); use a multiple of {device_count}.")


def check_processes(config, process_count):
    """Several processes must train one run together: with parallelism='single' each would
    train its own copy, and vmapped seed replicas do not span processes."""
    if process_count == 1:
        return
    if config.replicas_per_program > 1:
        raise ConfigError(
            f"replicas_per_program={config.replicas_per_program} (seeds as replicas of one program) "
            f"runs in one process only, not {process_count}; set replicas_per_program=1.")
    if config.parallelism == "single":
        raise ConfigError(
            f"parallelism='single' with {process_count} processes would train {process_count} "
            "independent copies of one run; use --config.parallelism=pmap or sharded.")


def image_size(config):
    """The training image size: the configured one, else the dataset's native size."""
    return config.dataset.image_size or data.DATASETS[config.dataset.name]


def total_steps(config, num_train_examples):
    """Steps of the run, from num_epochs if set, else num_steps; a multiple of steps_per_call."""
    t = config.train
    if t.batch_size > num_train_examples:
        raise ConfigError(f"train.batch_size={t.batch_size} exceeds the {num_train_examples} "
                          f"training images of {config.dataset.name}; lower it.")
    steps = t.num_epochs * (num_train_examples // t.batch_size) if t.num_epochs else t.num_steps
    if steps % t.steps_per_call:
        raise ConfigError(f"The run has {steps} steps, not a multiple of train.steps_per_call="
                          f"{t.steps_per_call}; change one of them.")
    return steps
