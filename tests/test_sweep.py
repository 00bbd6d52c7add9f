"""The ablation sweep: arms, run configs, skip/resume, failure records, and the CLI flags."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from gan import config_checks, sweep, train

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
ABLATION = os.path.join(ROOT, "configs", "ablation.py")


def ablation_config(arm_set=None):
    spec = importlib.util.spec_from_file_location("ablation_config", ABLATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arm_set)


def tiny_config(arms=2, seeds=2):
    config = ablation_config()
    config.sweep.arms = config.sweep.arms[:arms]
    config.sweep.num_seeds = seeds
    config.sweep.compilation_cache = False
    return config


@pytest.mark.parametrize("arm_set, names", [
    (None, ["upsample=transpose,d_activation=leaky_relu", "upsample=transpose,d_activation=relu",
            "upsample=bilinear,d_activation=leaky_relu", "upsample=bilinear,d_activation=relu",
            "upsample=nearest,d_activation=leaky_relu", "upsample=nearest,d_activation=relu"]),
    ("loss", ["loss=minimax", "loss=nonsaturating", "loss=hinge", "loss=least_squares"]),
    ("slope", ["leaky_slope=0.0", "leaky_slope=0.01", "leaky_slope=0.1", "leaky_slope=0.2",
               "leaky_slope=0.3"]),
])
def test_arm_sets_declare_the_issue_arms_and_every_run_config_is_valid(arm_set, names):
    config = ablation_config(arm_set)
    assert config.sweep.num_seeds == 5
    assert [arm.name for arm in sweep.check(config)] == names
    for arm in sweep.arms(config):  # the plain run config passes the default.py schema
        config_checks.validate(sweep.run_config(config, arm, 3))


def test_unknown_arm_set_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"\['default', 'loss', 'slope'\]"):
        ablation_config("losses")


def test_run_config_drops_the_sweep_applies_the_overrides_and_the_seed():
    config = ablation_config()
    arm = sweep.arms(config)[3]
    cfg = sweep.run_config(config, arm, 7)
    assert "sweep" not in cfg and "sweep" in config
    assert (cfg.model.upsample, cfg.model.d_activation, cfg.seed) == ("bilinear", "relu", 7)
    assert config.model.upsample == "transpose"  # the base config is untouched


def test_arm_overrides_with_a_typo_fail_before_training():
    config = tiny_config()
    config.sweep.arms = [{"model.upsampel": "nearest"}]
    with pytest.raises(sweep.SweepError, match="did you mean 'model.upsample'"):
        sweep.run_sweep(config, "/nonexistent", train_fn=pytest.fail)


def test_select_arm_by_index_or_name_and_unknown_lists_the_valid_ones():
    arms = sweep.arms(ablation_config("loss"))
    assert sweep.select_arm(arms, "2").name == "loss=hinge"
    assert sweep.select_arm(arms, "loss=least_squares").index == 3
    with pytest.raises(sweep.SweepError) as error:
        sweep.select_arm(arms, "loss=wasserstein")
    assert "0: loss=minimax" in str(error.value) and "3: loss=least_squares" in str(error.value)


class FakeTrainer:
    """Stands in for train.train_and_evaluate: records calls, fails where told, else finishes."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}  # (upsample, d_activation, seed) -> exception

    def __call__(self, config, workdir):
        assert "sweep" not in config
        key = (config.model.upsample, config.model.d_activation, config.seed)
        self.calls.append(key)
        os.makedirs(workdir, exist_ok=True)
        if key in self.fail:
            raise self.fail[key]
        with open(os.path.join(workdir, "done.json"), "w") as f:
            json.dump({"step": config.train.num_steps}, f)


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path):
    trainer = FakeTrainer(fail={("transpose", "leaky_relu", 0): train.DivergenceError("NaN at 5"),
                                ("transpose", "relu", 1): RuntimeError("out of memory")})
    outcomes = sweep.run_sweep(tiny_config(), str(tmp_path), train_fn=trainer)
    assert len(trainer.calls) == 4
    leaky, relu = (a.name for a in sweep.arms(tiny_config()))
    assert outcomes == {(leaky, 0): "diverged", (leaky, 1): "finished",
                        (relu, 0): "finished", (relu, 1): "failed"}
    diverged = sweep.read_status(sweep.run_dir(tmp_path, leaky, 0))
    failed = sweep.read_status(sweep.run_dir(tmp_path, relu, 1))
    assert diverged["status"] == "diverged" and "NaN at 5" in diverged["message"]
    assert failed["status"] == "failed" and "RuntimeError: out of memory" in failed["message"]
    assert sweep.read_status(sweep.run_dir(tmp_path, relu, 0))["status"] == "finished"


def test_a_stop_signal_stops_the_sweep_and_leaves_the_run_resumable(tmp_path):
    trainer = FakeTrainer(fail={("transpose", "leaky_relu", 1): train.PreemptedError("SIGTERM", 15)})
    with pytest.raises(train.PreemptedError):
        sweep.run_sweep(tiny_config(), str(tmp_path), train_fn=trainer)
    assert trainer.calls == [("transpose", "leaky_relu", 0), ("transpose", "leaky_relu", 1)]
    leaky = sweep.arms(tiny_config())[0]
    assert sweep.read_status(sweep.run_dir(tmp_path, leaky, 1)) == {}  # not a failure


def test_rerun_skips_finished_runs_and_resumes_the_others(tmp_path):
    first = FakeTrainer(fail={("transpose", "relu", 1): RuntimeError("killed")})
    sweep.run_sweep(tiny_config(), str(tmp_path), train_fn=first)
    second = FakeTrainer()
    outcomes = sweep.run_sweep(tiny_config(), str(tmp_path), train_fn=second)
    assert second.calls == [("transpose", "relu", 1)]  # only the unfinished run
    relu = sweep.arms(tiny_config())[1]
    assert sweep.read_status(sweep.run_dir(tmp_path, relu, 1))["status"] == "finished"
    assert list(outcomes.values()).count("skipped") == 3
    third = FakeTrainer()
    sweep.run_sweep(tiny_config(), str(tmp_path), train_fn=third)
    assert third.calls == []


def test_arm_runs_only_that_arm(tmp_path):
    trainer = FakeTrainer()
    sweep.run_sweep(tiny_config(arms=6), str(tmp_path), arm="upsample=nearest,d_activation=relu",
                    train_fn=trainer)
    assert trainer.calls == [("nearest", "relu", 0), ("nearest", "relu", 1)]
    assert os.listdir(tmp_path) == ["upsample=nearest,d_activation=relu"]


# ----------------------------------------------------------------- the command line, for real

TINY_CONFIG = """
import importlib.util
spec = importlib.util.spec_from_file_location("ablation", {ablation!r})
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)

def get_config():
    config = ablation.get_config()
    config.sweep.arms = config.sweep.arms[:2]   # transpose x (leaky_relu, relu)
    config.sweep.num_seeds = 2
    config.train.num_steps = 2
    config.train.log_every = 1
    config.train.sample_every = 2
    config.train.checkpoint_every = 2
    config.eval.every = 0
    config.eval.num_samples = 100  # a real (small) evaluation per run, so the report has numbers
    return config
"""


def gan_main(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "gan.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "tiny_ablation.py"
    path.write_text(TINY_CONFIG.format(ablation=os.path.abspath(ABLATION)))
    return str(path)


def _require_data():
    if not os.environ.get("GAN_DATA_DIR"):
        pytest.skip("set GAN_DATA_DIR to the IDX folder to run real training")


def test_main_runs_every_arm_and_seed_then_writes_the_report(tmp_path, tiny_config_file):
    _require_data()
    result = gan_main(f"--config={tiny_config_file}", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    for arm in ("upsample=transpose,d_activation=leaky_relu",
                "upsample=transpose,d_activation=relu"):
        for seed in (0, 1):
            path = tmp_path / arm / f"seed_{seed}"
            assert json.loads((path / "done.json").read_text())["step"] == 2
            assert json.loads((path / "status.json").read_text())["status"] == "finished"
    assert (tmp_path / "report.md").exists()
    assert len((tmp_path / "results.csv").read_text().strip().splitlines()) == 1 + 4


def test_main_arm_then_report_only_lists_the_missing_runs(tmp_path, tiny_config_file):
    _require_data()
    result = gan_main(f"--config={tiny_config_file}", f"--workdir={tmp_path}", "--arm=1",
                      "--config.sweep.num_seeds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["jax_cache", "upsample=transpose,d_activation=relu"]
    assert not (tmp_path / "report.md").exists()  # one job of many: no report

    result = gan_main(f"--config={tiny_config_file}", f"--workdir={tmp_path}", "--report_only")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert ("3 runs missing (no folder): upsample=transpose,d_activation=leaky_relu/seed_0, "
            "upsample=transpose,d_activation=leaky_relu/seed_1, "
            "upsample=transpose,d_activation=relu/seed_1") in report
    assert "missing" in result.stderr
    assert os.listdir(tmp_path / "upsample=transpose,d_activation=relu") == ["seed_0"]


def test_main_list_arms_and_unknown_arm(tmp_path):
    result = gan_main("--config=configs/ablation.py:slope", "--list_arms")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[1].split("\t")[:2] == ["1", "leaky_slope=0.01"]

    result = gan_main("--config=configs/ablation.py", f"--workdir={tmp_path}", "--arm=nope")
    assert result.returncode == 2
    assert "No arm 'nope'" in result.stderr and "5: upsample=nearest,d_activation=relu" in \
        result.stderr
    assert os.listdir(tmp_path) == []
