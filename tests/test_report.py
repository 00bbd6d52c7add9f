"""The report's statistics (against scipy and known values) and its mechanics on synthetic run
folders laid out as train.train_and_evaluate writes them. The numbers here are made up."""
import csv
import importlib.util
import itertools
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps

from gan import report, stats, sweep

ABLATION = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "ablation.py")


def ablation_config(arm_set=None):
    spec = importlib.util.spec_from_file_location("ablation_config", ABLATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arm_set)

# ----------------------------------------------------------------------------- statistics

X = [3.1, 2.7, 3.5, 2.9, 3.3, 3.0]
Y = [3.9, 4.4, 3.2, 4.8, 4.1]


def test_mean_interval_is_scipys_t_interval():
    m, lo, hi = stats.mean_interval(X + [math.nan])  # non-finite values are dropped
    assert m == pytest.approx(np.mean(X))
    assert (lo, hi) == pytest.approx(sps.t.interval(0.95, len(X) - 1, np.mean(X), sps.sem(X)))
    assert math.isnan(stats.mean_interval([1.0])[1])


def test_welch_matches_scipy():
    result = stats.welch(X, Y)
    scipy_result = sps.ttest_ind(Y, X, equal_var=False)
    ci = scipy_result.confidence_interval(0.95)
    assert result["effect"] == pytest.approx(np.mean(Y) - np.mean(X))
    assert (result["low"], result["high"]) == pytest.approx((ci.low, ci.high))
    assert result["p"] == pytest.approx(scipy_result.pvalue)


def test_permutation_p_is_the_exact_enumeration():
    x, y = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 8.0]
    pooled, observed = x + y, abs(np.mean(y) - np.mean(x))
    diffs = [abs(np.mean([pooled[i] for i in range(7) if i not in idx])
                 - np.mean([pooled[i] for i in idx])) for idx in itertools.combinations(range(7), 3)]
    expected = np.mean([d >= observed - 1e-12 for d in diffs])
    assert stats.permutation_p(x, y) == pytest.approx(expected)


def test_compare_means_uses_permutation_below_five_seeds():
    assert stats.compare_means(X[:4], Y[:4])["test"] == "permutation"
    assert stats.compare_means(X[:4], Y[:4])["p"] == pytest.approx(stats.permutation_p(X[:4], Y[:4]))
    assert stats.compare_means(X, Y)["test"] == "Welch t"


def test_holm_adjusts_in_input_order_and_skips_nan():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> kept monotone: 0.06
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.9, 0.8])[0] == 1.0  # capped at 1


def test_rate_difference_matches_newcombes_worked_example():
    # Newcombe (1998), Stat. Med. 17:873, method 10: 56/70 - 48/80 = 0.2, CI 0.0524 to 0.3339.
    result = stats.compare_rates(48, 80, 56, 70)
    assert (result["effect"], result["low"], result["high"]) == pytest.approx(
        (0.2, 0.0524, 0.3339), abs=1e-4)
    assert result["p"] == pytest.approx(sps.fisher_exact([[56, 14], [48, 32]]).pvalue)


def test_spread_ratio_interval_and_brown_forsythe():
    result = stats.compare_spread(X, Y)
    ratio = np.var(Y, ddof=1) / np.var(X, ddof=1)
    assert result["effect"] == pytest.approx(math.sqrt(ratio))
    assert result["low"] == pytest.approx(math.sqrt(ratio / sps.f.ppf(0.975, 4, 5)))
    assert result["p"] == pytest.approx(sps.levene(X, Y, center="median").pvalue)


# ----------------------------------------------------------------------------- synthetic runs

def fake_eval(rng, fid, hf_ratio=1.0, checkerboard=1.0, precision=0.8, recall=0.7, dead=0.1,
              ece=0.05, classes=10, layers=3):
    noise = lambda scale: float(rng.normal(0, scale))  # noqa: E731
    out = {"num_samples": 2000, "classifier_sha256": "abc123", "classifier_test_accuracy": 0.991,
           "fid": fid + noise(0.3), "kid": 0.01, "kid_std": 0.001,
           "precision": precision + noise(0.01), "recall": recall + noise(0.01),
           "density": 1.0, "coverage": 0.8, "classes_covered": classes, "class_kl": 0.01,
           "classifier_score": 9.0, "hf_ratio": hf_ratio * math.exp(noise(0.02)),
           "checkerboard": checkerboard + noise(0.02),
           "spectrum_fake": list(np.geomspace(1, 1e-3 * hf_ratio, 14)),
           "spectrum_real": list(np.geomspace(1, 1e-3, 14)),
           "d_dead_fraction_mean": dead + noise(0.01), "d_input_grad_norm": 1.0,
           "d_ece": ece + noise(0.005), "d_brier": 0.2 + noise(0.005), "d_accuracy": 0.8}
    for i in range(layers):
        out[f"d_dead_fraction_{i}"] = dead
        out[f"d_param_grad_norm_{i}"] = 0.5
    return out


def write_run(path, eval_json=None, steps=(100, 200), done=True, status=None, flag=None):
    os.makedirs(os.path.join(path, "samples"))
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for step in steps:
            row = {"step": step, "d_loss": 1.2, "g_loss": 0.8, "d_real": 0.6, "d_fake": 0.4,
                   "d_acc": 0.7, "d_grad_norm": 1.0, "g_grad_norm": 1.0}
            if flag is not None:  # training's collapse flag, logged at each sample grid
                row.update(sample_diversity=0.05 if flag else 0.9, collapsed=float(flag))
            f.write(json.dumps(row) + "\n")
            if eval_json:
                f.write(json.dumps({"step": step, **{k: v for k, v in eval_json.items()
                                                     if not isinstance(v, (list, str))}}) + "\n")
    for step in steps:
        Image.fromarray(np.full((20, 20), step % 256, np.uint8)).save(
            os.path.join(path, "samples", f"step_{step:07d}.png"))
    if eval_json is not None:
        with open(os.path.join(path, "eval.json"), "w") as f:
            json.dump(eval_json, f)
    if done:
        with open(os.path.join(path, "done.json"), "w") as f:
            json.dump({"step": steps[-1]}, f)
    if status:
        sweep.write_status(path, **status)


def make_sweep(workdir, config, arm_eval, seeds=None):
    """arm_eval(settings, rng) -> kwargs of fake_eval for each run of each arm."""
    rng = np.random.default_rng(0)
    for arm in sweep.arms(config):
        settings = sweep.run_config(config, arm, 0)
        for seed in seeds if seeds is not None else sweep.seeds(config):
            write_run(sweep.run_dir(workdir, arm, seed), fake_eval(rng, **arm_eval(settings)))


def verdicts(markdown):
    rows = [line.split("|") for line in markdown.splitlines() if line.startswith("| C")]
    return {cells[1].strip(): cells[2].strip().strip("*") for cells in rows}


def c1_c2_world(c):
    """transpose best on every C1 metric; ReLU: more dead units and more FID spread."""
    worse = c.model.upsample != "transpose"
    relu = c.model.d_activation == "relu"
    return dict(fid=(30 if worse else 10) + (5 if relu else 0), hf_ratio=1.6 if worse else 1.0,
                checkerboard=2.0 if worse else 1.0, precision=0.6 if worse else 0.8,
                dead=0.6 if relu else 0.05)


def test_report_decides_each_claim_and_writes_every_artifact(tmp_path):
    config = ablation_config()
    make_sweep(tmp_path, config, c1_c2_world)
    path = report.write_report(config, str(tmp_path))
    markdown = open(path).read()
    assert verdicts(markdown) == {"C1": "supported", "C2": "supported",
                                  "C3": "not tested by this sweep"}
    assert "Welch t" in markdown and "Nothing: every run finished with eval.json." in markdown
    for name in ("curves", "spectra", "dead_units", "samples"):
        assert os.path.getsize(tmp_path / "plots" / f"{name}.png") > 0
        assert f"plots/{name}.png" in markdown
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {r["status"] for r in rows} == {"finished"}
    assert {"model.upsample", "model.d_activation", "fid", "abs_log_hf_ratio"} <= set(rows[0])


def test_claims_pair_only_arms_that_differ_in_the_claims_factor():
    settings = report.arm_settings(ablation_config())
    c1, c2, _ = report.CLAIMS
    assert sorted(report.pairs(c1, settings)) == sorted([
        ("upsample=transpose,d_activation=leaky_relu", "upsample=bilinear,d_activation=leaky_relu"),
        ("upsample=transpose,d_activation=leaky_relu", "upsample=nearest,d_activation=leaky_relu"),
        ("upsample=transpose,d_activation=relu", "upsample=bilinear,d_activation=relu"),
        ("upsample=transpose,d_activation=relu", "upsample=nearest,d_activation=relu")])
    assert len(report.pairs(c2, settings)) == 3
    slope = report.arm_settings(ablation_config("slope"))  # slope 0.0 is the ReLU arm
    assert sorted(a for _, a in report.pairs(c2, slope)) == ["leaky_slope=0.0"] * 4


def test_claim_is_contradicted_when_the_alternatives_win(tmp_path):
    config = ablation_config("loss")
    make_sweep(tmp_path, config,  # hinge / least squares better calibrated than the sigmoid
               lambda c: dict(fid=10, ece=0.02 if c.loss in ("hinge", "least_squares") else 0.2))
    markdown = open(report.write_report(config, str(tmp_path))).read()
    assert verdicts(markdown) == {"C1": "not tested by this sweep",
                                  "C2": "not tested by this sweep", "C3": "contradicted"}
    assert "significant against the claim: d_ece in 4/4 pairs; none significant for it" in markdown


def test_same_distributions_are_inconclusive(tmp_path):
    config = ablation_config()
    make_sweep(tmp_path, config, lambda c: dict(fid=10))
    markdown = open(report.write_report(config, str(tmp_path))).read()
    assert verdicts(markdown)["C1"] == "inconclusive"
    assert "at this budget no deciding difference is significant after Holm correction" in markdown


def test_few_seeds_use_the_permutation_test(tmp_path):
    config = ablation_config()
    config.sweep.num_seeds = 3
    make_sweep(tmp_path, config, c1_c2_world)
    markdown = open(report.write_report(config, str(tmp_path))).read()
    assert "| permutation |" in markdown and "| Welch t |" not in markdown
    # Exact permutation p >= 2/20 with 3 + 3 seeds: nothing can be significant.
    assert verdicts(markdown)["C1"] == "inconclusive"


def test_report_says_what_is_missing(tmp_path):
    config = ablation_config()
    make_sweep(tmp_path, config, c1_c2_world, seeds=[0, 1, 2])  # seeds 3 and 4 never ran
    leaky, relu = "upsample=transpose,d_activation=leaky_relu", "upsample=transpose,d_activation=relu"
    write_run(sweep.run_dir(tmp_path, leaky, 3), None)  # finished, no eval.json
    write_run(sweep.run_dir(tmp_path, relu, 3), None, done=False,
              status=dict(status="diverged", message="DivergenceError: Non-finite losses"))
    write_run(sweep.run_dir(tmp_path, relu, 4), None, done=False)  # interrupted
    lean = fake_eval(np.random.default_rng(1), fid=10)
    del lean["checkerboard"], lean["spectrum_fake"]
    write_run(sweep.run_dir(tmp_path, leaky, 4), lean)
    shutil.rmtree(sweep.run_dir(tmp_path, relu, 0))  # collapsed, as training saw it
    write_run(sweep.run_dir(tmp_path, relu, 0), fake_eval(np.random.default_rng(2), fid=10),
              flag=True)
    shutil.rmtree(sweep.run_dir(tmp_path, leaky, 0))  # collapsed, as eval.json sees it
    write_run(sweep.run_dir(tmp_path, leaky, 0), fake_eval(np.random.default_rng(3), fid=10,
                                                           classes=3), flag=False)

    markdown = open(report.write_report(config, str(tmp_path))).read()
    assert "runs missing (no folder): upsample=transpose,d_activation=relu/seed_4" not in markdown
    assert "1 runs incomplete" in markdown and f"{relu}/seed_4" in markdown
    assert f"{relu}/seed_3 diverged: DivergenceError: Non-finite losses" in markdown
    assert f"1 finished runs have no eval.json (no final metrics): {leaky}/seed_3" in markdown
    assert "eval.json lacks `checkerboard` in 1 of" in markdown
    assert "8 runs missing (no folder)" in markdown  # 4 other arms x seeds 3, 4
    with open(tmp_path / "results.csv") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert statuses.count("diverged") == 1 and statuses.count("missing") == 8
    runs_table = [line for line in markdown.splitlines() if line.startswith(f"| 1 | ")][0]
    # seeds, finished, with eval.json, diverged, collapsed, failed, incomplete, missing
    assert [c.strip() for c in runs_table.split("|")[3:-1]] == ["5", "3", "3", "1", "1", "0",
                                                                "1", "0"]
    runs_table = [line for line in markdown.splitlines() if line.startswith(f"| 0 | ")][0]
    assert [c.strip() for c in runs_table.split("|")[3:-1]] == ["5", "5", "4", "0", "1", "0",
                                                                "0", "0"]
    c2_failures = [line for line in markdown.splitlines()
                   if line.startswith(f"| {leaky.replace(',', ', ')} → ")
                   and "diverged+collapsed share" in line][0]
    # outcomes known: leaky 4 (seed 3 has neither eval.json nor a flag), 1 collapsed;
    # relu 4 (seed 4 unfinished), 1 collapsed + 1 diverged
    assert "| 1/4 | 2/4 |" in c2_failures


def test_report_of_an_empty_workdir_is_refused(tmp_path):
    """A mistyped --workdir must not yield a report of nothing that looks like a result."""
    with pytest.raises(sweep.SweepError, match="No run of this sweep exists"):
        report.write_report(ablation_config("slope"), str(tmp_path))
    assert not (tmp_path / "report.md").exists()


def test_report_refuses_runs_made_with_another_config(tmp_path):
    """--report_only with other overrides (more steps, another dataset) would mislabel the runs."""
    config = ablation_config("slope")
    arm = sweep.arms(config)[0]
    path = sweep.run_dir(str(tmp_path), arm, config.seed)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(sweep.run_config(config, arm, config.seed).to_json())
    with open(os.path.join(path, "done.json"), "w") as f:
        json.dump({"step": config.train.num_steps}, f)
    assert sweep.is_finished(path, sweep.run_config(config, arm, config.seed))
    config.train.num_steps *= 10
    assert not sweep.is_finished(path, sweep.run_config(config, arm, config.seed))
    with pytest.raises(sweep.SweepError, match="train.num_steps: run 400, sweep 4000"):
        report.write_report(config, str(tmp_path))
