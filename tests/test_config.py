"""gan.config_checks.validate, and the CLI's behaviour on a bad config (one clear message, no
traceback, non-zero exit, nothing written)."""
import os
import subprocess
import sys

import ml_collections
import pytest

from gan import config_checks
from gan.errors import UserFacingError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
    """The default config as a plain (not type-safe) ConfigDict, with dotted overrides."""
    tree = config_checks.default_config().to_dict()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node[p]
        node[leaf] = value
    return ml_collections.ConfigDict(tree, type_safe=False)


def _problems(config, **kwargs):
    with pytest.raises(config_checks.ConfigError) as info:
        config_checks.validate(config, **kwargs)
    assert isinstance(info.value, UserFacingError) and isinstance(info.value, ValueError)
    return str(info.value)


def test_default_config_is_valid():
    flat = config_checks.validate(config_checks.default_config())
    assert flat["model.upsample"] == "transpose" and flat["loss"] == "nonsaturating"
    assert flat["model.latent_dim"] == 100 and flat["optim.g_lr"] == 2e-4


def test_configs_in_repo_match_the_spec_defaults():
    """Issue 2's defaults: latent 100, Adam lr 2e-4 / b1 0.5 for both nets, slope 0.2, 28x28,
    non-saturating loss, MNIST."""
    c = config_checks.default_config()
    assert (c.model.latent_dim, c.model.leaky_slope, c.loss, c.dataset.name) == (
        100, 0.2, "nonsaturating", "mnist")
    assert (c.optim.g_lr, c.optim.d_lr, c.optim.g_b1, c.optim.d_b1) == (2e-4, 2e-4, 0.5, 0.5)
    assert config_checks.image_size(c) == 28


@pytest.mark.parametrize("typo, suggestion", [
    ("model.upsampel", "model.upsample"),
    ("train.batchsize", "train.batch_size"),
    ("optim.g_learning_rate", "optim.g_lr"),
])
def test_unknown_field_suggests_the_nearest(typo, suggestion):
    config = _config()
    parent, leaf = typo.split(".")
    config[parent][leaf] = 1
    message = _problems(config)
    assert repr(typo) in message and "unknown field" in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_field_far_from_any_gives_no_bogus_suggestion():
    config = _config()
    config.zzzzzz = 1
    message = _problems(config)
    assert "'zzzzzz'" in message and "did you mean" not in message


def test_extra_fields_are_allowed_when_declared():
    config = _config()
    config.sweep_note = "x"
    _problems(config)
    config_checks.validate(config, extra_fields=("sweep_note",))


@pytest.mark.parametrize("field, value, expected_type", [
    ("model.latent_dim", "100", "int"),
    ("model.latent_dim", 100.0, "int"),
    ("train.batch_size", True, "int"),  # bool is an int subclass, still wrong
    ("model.upsample", 3, "str"),
    ("dataset.download", 0, "bool"),
    ("optim.g_lr", "2e-4", "float"),
])
def test_wrong_type(field, value, expected_type):
    message = _problems(_config(**{field: value}))
    assert field in message and f"expected {expected_type}" in message


def test_int_where_float_expected_is_fine():
    config_checks.validate(_config(**{"optim.g_lr": 1, "model.leaky_slope": 0}))


def test_missing_field():
    config = _config()
    del config.train["num_steps"]
    assert "'train.num_steps'" in _problems(config)


@pytest.mark.parametrize("field, value, valid", [
    ("model.upsample", "foo", ("transpose", "bilinear", "nearest")),
    ("model.d_activation", "elu", ("leaky_relu", "relu")),
    ("model.d_norm", "layer", ("none", "batch")),
    ("model.transpose_impl", "cudnn", ("custom_vjp", "flax")),
    ("loss", "wasserstein", ("minimax", "nonsaturating", "hinge", "least_squares")),
    ("dataset.name", "cifar10", ("mnist", "fashion_mnist")),
])
def test_bad_choice_lists_the_valid_values(field, value, valid):
    message = _problems(_config(**{field: value}))
    assert f"{field}={value!r}" in message
    assert all(repr(v) in message for v in valid), message


@pytest.mark.parametrize("field, value", [
    ("model.latent_dim", 0), ("model.latent_dim", -5), ("model.kernel_size", 0),
    ("model.g_features", 0), ("model.d_features", -1), ("train.batch_size", 0),
    ("train.steps_per_call", 0), ("train.steps_per_call", -2), ("train.log_every", 0),
    ("train.sample_every", 0), ("train.checkpoint_every", 0), ("train.num_samples", 0),
    ("optim.g_lr", 0.0), ("optim.d_lr", -1e-3),
])
def test_non_positive_sizes_are_rejected(field, value):
    message = _problems(_config(**{field: value}))
    assert f"{field}={value!r} must be > 0" in message


@pytest.mark.parametrize("field, value", [
    ("train.num_steps", -1), ("model.leaky_slope", -0.1), ("dataset.image_size", -32)])
def test_negative_values_are_rejected(field, value):
    assert f"{field}={value!r} must be >= 0" in _problems(_config(**{field: value}))


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_adam_betas_must_be_in_unit_interval(value):
    assert "optim.g_b1" in _problems(_config(**{"optim.g_b1": value}))


def test_every_problem_is_reported_at_once():
    message = _problems(_config(**{"model.upsample": "foo", "train.batch_size": 0,
                                   "loss": "bar"}))
    assert "model.upsample" in message and "train.batch_size" in message and "loss" in message


@pytest.mark.parametrize("size", [30, 48, 128])
def test_image_size_without_a_stride_pattern(size):
    message = _problems(_config(**{"dataset.image_size": size}))
    assert f"dataset.image_size={size}" in message
    assert all(str(s) in message for s in (28, 32, 64))


@pytest.mark.parametrize("size", [0, 28, 32, 64])
def test_supported_image_sizes(size):
    config = _config(**{"dataset.image_size": size})
    config_checks.validate(config)
    assert config_checks.image_size(config) == (size or 28)


def test_nothing_to_train():
    message = _problems(_config(**{"train.num_steps": 0, "train.num_epochs": 0}))
    assert "nothing to train" in message


def test_intervals_must_be_multiples_of_steps_per_call():
    message = _problems(_config(**{"train.steps_per_call": 3, "train.log_every": 10,
                                   "train.sample_every": 30, "train.checkpoint_every": 300}))
    assert "train.log_every=10" in message
    assert "sample_every" not in message and "checkpoint_every" not in message


def test_total_steps():
    config = _config(**{"train.batch_size": 64, "train.num_steps": 500})
    assert config_checks.total_steps(config, 60000) == 500
    config.train.num_epochs = 2  # epochs win; the incomplete last batch of an epoch is dropped
    assert config_checks.total_steps(config, 60000) == 2 * 937
    config.train.batch_size = 70000
    with pytest.raises(config_checks.ConfigError, match="batch_size=70000"):
        config_checks.total_steps(config, 60000)
    config = _config(**{"train.num_steps": 10, "train.steps_per_call": 4,
                        "train.log_every": 4, "train.sample_every": 4,
                        "train.checkpoint_every": 4})
    with pytest.raises(config_checks.ConfigError, match="steps_per_call"):
        config_checks.total_steps(config, 60000)


# ---------------------------------------------------------------- the command line

def _run_main(tmp_path, *overrides):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "gan.main", "--config=configs/default.py",
         f"--workdir={workdir}", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=300)  # a hang guard only: a bad config should exit in seconds
    return proc, proc.stdout + proc.stderr, workdir


def test_cli_bad_upsampler_exits_with_the_valid_values(tmp_path):
    proc, output, workdir = _run_main(tmp_path, "--config.model.upsample=foo")
    assert proc.returncode != 0
    assert "Traceback" not in output, output
    assert "foo" in output and all(v in output for v in ("transpose", "bilinear", "nearest"))
    assert not workdir.exists()  # failed before reading data or writing anything


def test_cli_non_positive_size_exits_cleanly(tmp_path):
    proc, output, workdir = _run_main(tmp_path, "--config.train.batch_size=0",
                                      "--config.model.latent_dim=-3")
    assert proc.returncode != 0
    assert "Traceback" not in output, output
    assert "train.batch_size=0" in output and "model.latent_dim=-3" in output
    assert not workdir.exists()


def test_cli_misspelt_field_exits_without_traceback(tmp_path):
    proc, output, workdir = _run_main(tmp_path, "--config.model.upsampel=nearest")
    assert proc.returncode != 0
    assert "upsample" in output  # the suggestion
    assert "Traceback" not in output, output
