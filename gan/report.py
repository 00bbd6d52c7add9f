"""The ablation report: DIR/report.md, DIR/results.csv (one row per run) and DIR/plots/*.png.

It reads whatever runs exist under DIR (done.json, status.json, eval.json, metrics.jsonl,
samples/) for the arms and seeds of the sweep config, and says what is missing.

Per claim of ../shared/DESIGN.md it pairs arms that differ only in the claim's factor (e.g.
upsample=transpose vs upsample=bilinear at the same activation), compares each metric between
them (effect = alternative - reference, with a 95% interval; Welch t-test, or an exact
permutation test below gan.stats.MIN_SEEDS_FOR_WELCH seeds), Holm-corrects over all tests of the
claim, and decides from the tests marked deciding:
  supported     some deciding test significant in the claimed direction, none against it;
  contradicted  some significant against the claim, none for it;
  inconclusive  none significant (at this budget of steps and seeds), or both directions.
"""
import csv
import dataclasses
import glob
import json
import math
import os
import re
from typing import Callable

from absl import logging

from gan import plots, stats, sweep
from gan.metrics_writer import read_metrics

ALPHA = 0.05
# A finished run counts as collapsed when training flagged its last sample grid (sample
# diversity below train.collapse_diversity), or its samples cover fewer than this many
# classes, or its recall is below this (the generator makes a few modes only).
COLLAPSE_MIN_CLASSES = 5
COLLAPSE_MIN_RECALL = 0.05
# The final metrics eval.json is expected to hold (issue 3); lists and identity fields are not
# averaged.
EXPECTED_EVAL_KEYS = (
    "num_samples", "classifier_sha256", "classifier_test_accuracy", "fid", "kid", "kid_std",
    "precision", "recall", "density", "coverage", "classes_covered", "class_kl",
    "classifier_score", "hf_ratio", "checkerboard", "spectrum_fake", "spectrum_real",
    "d_dead_fraction_mean", "d_input_grad_norm", "d_ece", "d_brier", "d_accuracy")
NOT_AVERAGED = ("num_samples", "classifier_sha256", "classifier_test_accuracy")
CURVE_KEYS = ("fid", "kid", "precision", "recall", "hf_ratio", "checkerboard",
              "d_dead_fraction_mean", "d_ece", "d_loss", "g_loss", "d_acc", "d_grad_norm",
              "g_grad_norm")
DEAD_KEY = re.compile(r"^d_dead_fraction_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Test:
    """One compared quantity. kind: 'mean' of a final metric, 'spread' (SD ratio of a final
    metric across seeds) or 'failures' (share of diverged or collapsed seeds)."""
    key: str
    better: str  # 'lower' | 'higher': which way the claim expects the reference arm to be
    decides: bool = True
    kind: str = "mean"

    @property
    def label(self):
        return {"mean": self.key, "spread": f"{self.key} spread (SD ratio alt/ref)",
                "failures": "diverged+collapsed share"}[self.kind]


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    text: str
    factor: tuple  # config fields the claim varies; all other fields must match within a pair
    is_reference: Callable  # flat config -> bool: an arm the claim says is better
    is_alternative: Callable
    tests: tuple


def _relu(c):
    return c["model.d_activation"] == "relu" or c["model.leaky_slope"] == 0


CLAIMS = (
    Claim("C1", "A transposed convolution in G gives sharper, more realistic images than "
          "interpolation (bilinear, nearest) + conv.", ("model.upsample",),
          lambda c: c["model.upsample"] == "transpose",
          lambda c: c["model.upsample"] in ("bilinear", "nearest"),
          (Test("fid", "lower"), Test("abs_log_hf_ratio", "lower"),
           Test("checkerboard", "lower"),
           # Blur raises precision (experiments/calibration): it never decides alone.
           Test("precision", "higher", decides=False), Test("recall", "higher", decides=False))),
    Claim("C2", "LeakyReLU in D keeps units alive and training more stable than ReLU.",
          ("model.d_activation", "model.leaky_slope"),
          lambda c: not _relu(c), _relu,
          (Test("d_dead_fraction_mean", "lower"), Test("fid", "lower", kind="spread"),
           Test("failures", "lower", kind="failures"), Test("fid", "lower", decides=False))),
    Claim("C3", "A sigmoid at D's output (minimax, non-saturating) gives a usable real/fake "
          "probability; losses without it (hinge, least squares) do not.", ("loss",),
          lambda c: c["loss"] in ("minimax", "nonsaturating"),
          lambda c: c["loss"] in ("hinge", "least_squares"),
          (Test("d_ece", "lower"), Test("d_brier", "lower"), Test("fid", "lower", decides=False))),
)


# ----------------------------------------------------------------------------- runs on disk

@dataclasses.dataclass
class Run:
    arm: str
    seed: int
    path: str
    status: str  # finished | diverged | failed | incomplete | missing
    message: str = ""
    eval: dict = dataclasses.field(default_factory=dict)  # {} when eval.json is absent
    rows: list = dataclasses.field(default_factory=list)  # metrics.jsonl

    @property
    def final(self):
        """Scalar final metrics from eval.json, plus |log hf_ratio|."""
        out = {k: float(v) for k, v in self.eval.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_AVERAGED}
        if out.get("hf_ratio", 0) > 0:
            out["abs_log_hf_ratio"] = abs(math.log(out["hf_ratio"]))
        return out

    @property
    def collapsed(self):
        """True/False for a finished run; None when neither training nor eval.json tells."""
        if self.status != "finished":
            return None
        signs = [bool(row["collapsed"]) for row in self.rows if "collapsed" in row][-1:]
        if self.eval.get("classes_covered") is not None:
            signs.append(self.eval["classes_covered"] < COLLAPSE_MIN_CLASSES)
        if self.eval.get("recall") is not None:
            signs.append(self.eval["recall"] < COLLAPSE_MIN_RECALL)
        return any(signs) if signs else None


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_run(workdir, arm_name, seed):
    path = sweep.run_dir(workdir, arm_name, seed)
    if not os.path.isdir(path):
        return Run(arm_name, seed, path, "missing")
    status = sweep.read_status(path)
    if sweep.is_finished(path):
        state = "finished"
    elif status.get("status") in ("diverged", "failed"):
        state = status["status"]
    else:
        state = "incomplete"
    rows = read_metrics(path) if os.path.exists(os.path.join(path, "metrics.jsonl")) else []
    return Run(arm_name, seed, path, state, status.get("message", ""),
               _read_json(os.path.join(path, "eval.json")) or {}, rows)


def collect(config, workdir):
    """{arm name: [Run per seed]} for every arm and seed of the sweep."""
    return {arm.name: [read_run(workdir, arm.name, s) for s in sweep.seeds(config)]
            for arm in sweep.arms(config)}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def arm_settings(config):
    """{arm name: flat run config} (seed excluded), to pair arms by what they vary."""
    out = {}
    for arm in sweep.arms(config):
        flat = _flat(sweep.run_config(config, arm, config.seed).to_dict())
        flat.pop("seed")
        out[arm.name] = flat
    return out


# ----------------------------------------------------------------------------- claims

def pairs(claim, settings):
    """(reference arm, alternative arm) pairs that differ only in the claim's factor."""
    def rest(flat):
        return {k: v for k, v in flat.items() if k not in claim.factor}
    return [(r, a) for r, rs in settings.items() if claim.is_reference(rs)
            for a, as_ in settings.items() if claim.is_alternative(as_) and rest(rs) == rest(as_)]


def _values(runs, key):
    return [r.final[key] for r in runs if r.status == "finished" and key in r.final]


def _failures(runs):
    """(diverged + collapsed, seeds whose outcome is known)."""
    ended = [r for r in runs if r.status == "diverged" or r.collapsed is not None]
    return sum(r.status == "diverged" or bool(r.collapsed) for r in ended), len(ended)


def run_test(test, ref_runs, alt_runs):
    if test.kind == "failures":
        (ke, kn), (ae, an) = _failures(ref_runs), _failures(alt_runs)
        result = stats.compare_rates(ke, kn, ae, an)
        result.update(ref=f"{ke}/{kn}", alt=f"{ae}/{an}", null=0.0)
        return result
    ref, alt = _values(ref_runs, test.key), _values(alt_runs, test.key)
    if test.kind == "spread":
        result = stats.compare_spread(ref, alt)
        result.update(null=1.0, ref=_fmt_sd(ref), alt=_fmt_sd(alt))
    else:
        result = stats.compare_means(ref, alt)
        result.update(null=0.0, ref=_fmt_interval(ref), alt=_fmt_interval(alt))
    return result


def evaluate_claim(claim, settings, runs_by_arm):
    """{'pairs', 'rows', 'verdict', 'reason'}; rows hold every test with its Holm p-value."""
    claim_pairs = pairs(claim, settings)
    if not claim_pairs:
        return dict(pairs=[], rows=[], verdict="not tested by this sweep",
                    reason="no two arms of this sweep differ only in "
                           + " / ".join(claim.factor) + " as the claim needs.")
    rows = []
    for ref, alt in claim_pairs:
        for test in claim.tests:
            row = run_test(test, runs_by_arm[ref], runs_by_arm[alt])
            row.update(ref_arm=ref, alt_arm=alt, test_def=test)
            rows.append(row)
    for row, p in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_holm"] = p
        expected_up = row["test_def"].better == "lower"  # alt worse = larger value
        row["supports"] = (row["effect"] > row["null"]) == expected_up
        row["significant"] = bool(p < ALPHA)
    verdict, reason = _verdict(rows)
    return dict(pairs=claim_pairs, rows=rows, verdict=verdict, reason=reason)


def _describe(row):
    return (f"{row['test_def'].label}, {row['ref_arm']} → {row['alt_arm']}: effect "
            f"{_fmt(row['effect'])}, Holm p={_fmt(row['p_holm'])}")


def _tally(rows, tested):
    """'fid in 3/4 pairs, checkerboard in 4/4 pairs': how many of each test's pairs are in rows."""
    labels = dict.fromkeys(r["test_def"].label for r in rows)
    return ", ".join(f"{label} in {sum(r['test_def'].label == label for r in rows)}/"
                     f"{sum(r['test_def'].label == label for r in tested)} pairs"
                     for label in labels)


def _verdict(rows):
    deciding = [r for r in rows if r["test_def"].decides]
    tested = [r for r in deciding if math.isfinite(r["p"])]
    if not tested:
        missing = sorted({r["test_def"].label for r in deciding})
        return "inconclusive", ("no deciding test could be computed (need at least two seeds "
                                "with values per arm); missing data for: " + ", ".join(missing))
    pro = [r for r in tested if r["significant"] and r["supports"]]
    con = [r for r in tested if r["significant"] and not r["supports"]]
    untested = len(deciding) - len(tested)
    note = f"; {untested} deciding tests could not be computed for lack of data" if untested else ""
    if pro and not con:
        return "supported", ("significant in the claimed direction: " + _tally(pro, tested)
                             + "; none significant against it" + note)
    if con and not pro:
        return "contradicted", ("significant against the claim: " + _tally(con, tested)
                                + "; none significant for it" + note)
    if pro and con:
        return "inconclusive", ("significant in both directions: for the claim " +
                                _tally(pro, tested) + "; against it " + _tally(con, tested) + note)
    best = min(tested, key=lambda r: r["p_holm"])
    return "inconclusive", (
        f"at this budget no deciding difference is significant after Holm correction over "
        f"{sum(math.isfinite(r['p']) for r in rows)} tests (alpha {ALPHA}); the closest: "
        f"{_describe(best)}" + note)


# ----------------------------------------------------------------------------- formatting

def _fmt(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4g}"


def _fmt_interval(values):
    m, lo, hi = stats.mean_interval(values)
    n = len(stats.finite(values))
    if n == 0:
        return "—"
    if not math.isfinite(lo):
        return f"{_fmt(m)} (n={n})"
    return f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}] (n={n})"


def _fmt_sd(values):
    a = stats.finite(values)
    return f"SD {_fmt(float(a.std(ddof=1)))} (n={len(a)})" if len(a) > 1 else "—"


def _reading(row):
    if not math.isfinite(row["p"]):
        return "no data"
    if not row["significant"]:
        return "not significant"
    return "for the claim" if row["supports"] else "against the claim"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _wrap(arm):
    return arm.replace(",", ", ")


# ----------------------------------------------------------------------------- curves, plots

def curve(runs, key):
    """(steps, mean, low, high) over the seeds that logged `key` at each step, or None."""
    by_step = {}
    for run in runs:
        for row in run.rows:  # a later row of the same step wins (a resumed run)
            if key in row and row[key] is not None:
                by_step.setdefault(row["step"], {})[run.seed] = row[key]
    if not by_step:
        return None
    steps = sorted(by_step)
    summary = [stats.mean_interval(list(by_step[s].values())) for s in steps]
    return (steps, *zip(*summary))


def _last_sample_grid(run):
    grids = sorted(glob.glob(os.path.join(run.path, "samples", "step_*.png")))
    return grids[-1] if grids else None


def make_plots(runs_by_arm, settings, plot_dir):
    """Writes the figures that the data allows; returns ({name: file}, [what is missing])."""
    os.makedirs(plot_dir, exist_ok=True)
    colors = plots.arm_colors(list(runs_by_arm))
    made, missing = {}, []

    def target(name):
        made[name] = os.path.join(plot_dir, f"{name}.png")
        return made[name]

    by_metric = {}
    for key in CURVE_KEYS:
        by_arm = {arm: c for arm, runs in runs_by_arm.items() if (c := curve(runs, key))}
        if by_arm:
            by_metric[key] = by_arm
    if by_metric:
        plots.curves(by_metric, colors, target("curves"))
    else:
        missing.append("curves: no run has metrics.jsonl rows yet")
    absent = [k for k in ("fid", "precision", "recall", "hf_ratio") if k not in by_metric]
    if by_metric and absent:
        missing.append("curves of " + ", ".join(absent) + ": no evaluation rows in metrics.jsonl")

    fake, real = {}, None
    for arm, runs in runs_by_arm.items():
        spectra = [r.eval["spectrum_fake"] for r in runs
                   if r.status == "finished" and r.eval.get("spectrum_fake")]
        if spectra and len({len(s) for s in spectra}) == 1:
            fake[arm] = [sum(col) / len(col) for col in zip(*spectra)]
        real = real or next((r.eval["spectrum_real"] for r in runs
                             if r.eval.get("spectrum_real")), None)
    if fake:
        plots.spectra(fake, real, colors, target("spectra"))
    else:
        missing.append("spectra: no eval.json with spectrum_fake")

    layers = sorted({int(m.group(1)) for runs in runs_by_arm.values() for r in runs
                     for row in r.rows for k in row if (m := DEAD_KEY.match(k))})
    if layers:
        by_layer = {i: {arm: c for arm, runs in runs_by_arm.items()
                        if (c := curve(runs, f"d_dead_fraction_{i}"))} for i in layers}
        relu_arms = {arm for arm, s in settings.items() if _relu(s)}
        plots.dead_units(by_layer, relu_arms, colors, target("dead_units"))
    else:
        missing.append("dead_units: no d_dead_fraction_<i> rows in metrics.jsonl")

    grids = []
    for arm, runs in runs_by_arm.items():
        png = _last_sample_grid(runs[0])
        if png:
            step = int(re.findall(r"\d+", os.path.basename(png))[0])
            grids.append((f"{_wrap(arm)}\nseed {runs[0].seed}, step {step}", png))
        else:
            missing.append(f"samples of {arm} seed {runs[0].seed}: no samples/*.png")
    if grids:
        plots.sample_grids(grids, target("samples"))
    return made, missing


# ----------------------------------------------------------------------------- the report

def _status_counts(runs):
    counts = {s: sum(r.status == s for r in runs)
              for s in ("finished", "diverged", "failed", "incomplete", "missing")}
    counts["with eval.json"] = sum(bool(r.eval) for r in runs if r.status == "finished")
    counts["collapsed"] = sum(bool(r.collapsed) for r in runs)
    return counts


def _metric_order(keys):
    first = ["fid", "kid", "kid_std", "precision", "recall", "density", "coverage",
             "classes_covered", "class_kl", "classifier_score", "hf_ratio", "abs_log_hf_ratio",
             "checkerboard", "d_dead_fraction_mean", "d_ece", "d_brier", "d_accuracy",
             "d_input_grad_norm"]
    return [k for k in first if k in keys] + sorted(set(keys) - set(first))


def _missing_section(runs_by_arm):
    lines = []
    all_runs = [r for runs in runs_by_arm.values() for r in runs]
    for state, what in (("missing", "no folder"), ("incomplete", "started, not finished "
                                                   "(interrupted or still running)")):
        names = [f"{r.arm}/seed_{r.seed}" for r in all_runs if r.status == state]
        if names:
            lines.append(f"- {len(names)} runs {state} ({what}): " + ", ".join(names))
    for r in all_runs:
        if r.status in ("diverged", "failed"):
            lines.append(f"- {r.arm}/seed_{r.seed} {r.status}: {r.message.splitlines()[0] if r.message else ''}")
    no_eval = [f"{r.arm}/seed_{r.seed}" for r in all_runs if r.status == "finished" and not r.eval]
    if no_eval:
        lines.append(f"- {len(no_eval)} finished runs have no eval.json (no final metrics): "
                     + ", ".join(no_eval))
    with_eval = [r for r in all_runs if r.eval]
    for key in EXPECTED_EVAL_KEYS:
        lacking = sum(key not in r.eval for r in with_eval)
        if lacking:
            lines.append(f"- eval.json lacks `{key}` in {lacking} of {len(with_eval)} runs")
    return lines


def write_results_csv(runs_by_arm, settings, path):
    runs = [r for rs in runs_by_arm.values() for r in rs]
    varied = sorted({k for k in next(iter(settings.values()), {})
                     if len({str(s.get(k)) for s in settings.values()}) > 1})
    metrics = _metric_order({k for r in runs for k in r.final})
    header = ["arm", "seed", "status", "collapsed", *varied, *metrics, "message"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in runs:
            writer.writerow([r.arm, r.seed, r.status, "" if r.collapsed is None else r.collapsed,
                             *(settings[r.arm][k] for k in varied),
                             *(r.final.get(k, "") for k in metrics),
                             r.message.splitlines()[0] if r.message else ""])


def build_markdown(config, runs_by_arm, settings, claims, plot_files, plot_missing):
    out = [f"# Ablation report: `{config.sweep.arm_set}` arms on {config.dataset.name}", ""]
    all_runs = [r for rs in runs_by_arm.values() for r in rs]
    samples = sorted({r.eval.get("num_samples") for r in all_runs if "num_samples" in r.eval})
    classifiers = sorted({(r.eval.get("classifier_sha256"), r.eval.get("classifier_test_accuracy"))
                          for r in all_runs if "classifier_sha256" in r.eval})
    out += [
        f"CPU-sized budget: {config.train.num_steps} steps of batch {config.train.batch_size} per "
        f"run, {config.sweep.num_seeds} seeds per arm (seeds {sweep.seeds(config)[0]}.."
        f"{sweep.seeds(config)[-1]}). Verdicts hold for this budget only.", "",
        f"- evaluation samples per run: {', '.join(map(str, samples)) or 'unknown (no eval.json)'}",
        "- domain classifier (sha256, test accuracy): " + (", ".join(
            f"`{h}` ({_fmt(a)})" for h, a in classifiers) or "unknown (no eval.json)"),
    ]
    if len(classifiers) > 1:
        out.append("- **WARNING: runs were evaluated with different classifiers; their numbers "
                   "are not comparable.**")
    out += ["", "## Verdicts", ""]
    out.append(_table(["claim", "verdict", "reason"],
                      [[c.id, f"**{res['verdict']}**", res["reason"]]
                       for c, res in zip(CLAIMS, claims)]))
    out += ["", f"Tests: effect = alternative - reference arm (for spread: SD ratio alt/ref); "
            f"95% interval; Welch t-test with >= {stats.MIN_SEEDS_FOR_WELCH} seeds per arm, "
            f"else exact permutation test; Holm correction over all tests of a claim, alpha "
            f"{ALPHA}; only tests marked deciding enter the verdict. A run is collapsed when "
            f"training flagged its last sample grid (sample diversity below "
            f"train.collapse_diversity), or its samples cover < {COLLAPSE_MIN_CLASSES} classes, "
            f"or its recall is < {COLLAPSE_MIN_RECALL}.", ""]

    for claim, res in zip(CLAIMS, claims):
        out += [f"## {claim.id}: {claim.text}", "", f"Verdict: **{res['verdict']}**. "
                f"{res['reason']}", ""]
        if res["rows"]:
            out.append(_table(
                ["reference → alternative", "quantity", "reference expected", "reference",
                 "alternative", "effect [95% CI]", "test", "p", "Holm p", "deciding", "reading"],
                [[f"{_wrap(r['ref_arm'])} → {_wrap(r['alt_arm'])}", r["test_def"].label,
                  r["test_def"].better, r["ref"], r["alt"],
                  f"{_fmt(r['effect'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]", r["test"],
                  _fmt(r["p"]), _fmt(r["p_holm"]), "yes" if r["test_def"].decides else "no",
                  _reading(r)]
                 for r in res["rows"]]))
            out.append("")

    out += ["## Runs per arm", ""]
    counts = {arm: _status_counts(runs) for arm, runs in runs_by_arm.items()}
    columns = ["finished", "with eval.json", "diverged", "collapsed", "failed", "incomplete",
               "missing"]
    out.append(_table(["#", "arm", "seeds", *columns],
                      [[i, _wrap(arm), len(runs_by_arm[arm]), *(c[k] for k in columns)]
                       for i, (arm, c) in enumerate(counts.items())]))
    missing = _missing_section(runs_by_arm)
    out += ["", "### Missing", ""] + (missing or ["Nothing: every run finished with eval.json."])

    out += ["", "## Final metrics per arm", "",
            "Mean [95% t-interval] (n seeds with the value) over finished runs.", ""]
    keys = _metric_order({k for r in all_runs if r.status == "finished" for k in r.final})
    if keys:
        out.append(_table(["metric", *map(_wrap, runs_by_arm)],
                          [[k, *(_fmt_interval(_values(runs, k)) for runs in runs_by_arm.values())]
                           for k in keys]))
    else:
        out.append("No final metrics: no finished run has an eval.json.")

    out += ["", "## Plots", ""]
    titles = {"curves": "Metrics over training (mean over seeds, 95% band)",
              "spectra": "Mean radial power spectra per arm vs reals",
              "dead_units": "Dead-unit fraction per D layer over training, ReLU vs LeakyReLU",
              "samples": "Samples per arm (seed 0's last grid; same latents in every arm)"}
    for name, path in plot_files.items():
        out += [f"### {titles[name]}", "", f"![{name}](plots/{os.path.basename(path)})", ""]
    if plot_missing:
        out += ["Not plotted:", ""] + [f"- {m}" for m in plot_missing]
    return "\n".join(out) + "\n"


def write_report(config, workdir):
    """Writes report.md, results.csv and plots/ under workdir; returns the report's path."""
    stale = [f"{sweep.run_dir(workdir, arm, seed)}: {'; '.join(diff)}"
             for arm in sweep.arms(config) for seed in sweep.seeds(config)
             if (diff := sweep.config_mismatch(sweep.run_dir(workdir, arm, seed),
                                               sweep.run_config(config, arm, seed)))]
    if stale:
        raise sweep.SweepError(
            "Runs in this workdir were made with another config than the one given now, so a "
            "report would mislabel them:\n  " + "\n  ".join(stale[:10]) + "\nGive the sweep's "
            "original config/overrides, or run the sweep (without --report_only) to bring the "
            "runs to this config.")
    if not any(os.path.isdir(os.path.join(workdir, arm.name)) for arm in sweep.arms(config)):
        raise sweep.SweepError(f"No run of this sweep exists in {workdir}: check --workdir, or "
                               "run the sweep first (without --report_only).")
    runs_by_arm = collect(config, workdir)
    settings = arm_settings(config)
    claims = [evaluate_claim(c, settings, runs_by_arm) for c in CLAIMS]
    plot_files, plot_missing = make_plots(runs_by_arm, settings, os.path.join(workdir, "plots"))
    write_results_csv(runs_by_arm, settings, os.path.join(workdir, "results.csv"))
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write(build_markdown(config, runs_by_arm, settings, claims, plot_files, plot_missing))
    for line in _missing_section(runs_by_arm):
        logging.warning("report: %s", line[2:])
    for claim, res in zip(CLAIMS, claims):
        logging.info("%s: %s", claim.id, res["verdict"])
    logging.info("Report: %s", path)
    return path
