"""Calibration of the metrics on real data: known degradations must move each metric the right way.

`run` evaluates a train subset of real images (the real-vs-real floor) and degraded copies of
it against the test reference; `checks` lists every expected direction with whether it held.
The tests run both at a small N; experiments/calibration/ writes the full table.
"""
import math

import numpy as np

from gan import data
from gan.evaluation import degrade
from gan.evaluation.suite import evaluate_images, real_floor, train_subset

STRENGTHS = {
    "blur": (0.5, 1.0, 1.5, 2.0),  # Gaussian sigma in pixels
    "noise": (0.05, 0.1, 0.2, 0.3),  # Gaussian sigma on the [0, 1] scale
    "checkerboard": (0.1, 0.2, 0.4),  # period-2 modulation amplitude
    "drop_classes": (2, 5, 8),  # classes 0..k-1 missing
}
TABLE_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "classes_covered",
                 "class_kl", "classifier_score", "hf_ratio", "checkerboard")
NEAR_ONE = 0.8  # the floor's precision and recall must be at least this


def run(dataset="mnist", num_samples=2000, data_dir="", cache_dir="", seed=0, strengths=None,
        kid_subsets=100):
    """Rows {degradation, strength, **metrics} for the floor, each degradation and the collapse."""
    strengths = strengths or STRENGTHS
    images, labels = data.load_split(dataset, "train", data_dir)
    base = images[train_subset(len(images), num_samples, seed)]
    common = dict(data_dir=data_dir, num_samples=num_samples, cache_dir=cache_dir,
                  kid_subsets=kid_subsets)
    evaluate = lambda x: evaluate_images(x, dataset, rng_seed=seed, **common)
    make = {"blur": lambda s: degrade.blur(base, s),
            "noise": lambda s: degrade.noise(base, s, seed),
            "checkerboard": lambda s: degrade.checkerboard(base, s),
            "drop_classes": lambda k: degrade.drop_classes(images, labels, k, num_samples, seed)}
    rows = [{"degradation": "none (floor)", "strength": 0,
             **real_floor(dataset, seed=seed, **common)}]
    for name, values in strengths.items():
        rows += [{"degradation": name, "strength": v, **evaluate(make[name](v))} for v in values]
    rows.append({"degradation": "collapse", "strength": 1,
                 **evaluate(degrade.collapse(base, num_samples))})
    return rows


def _increasing(values):
    return all(b > a for a, b in zip(values, values[1:]))


def checks(rows):
    """[(expectation, held, the values it was judged on)] for every expected direction."""
    floor = rows[0]
    of = lambda name: [r for r in rows if r["degradation"] == name]
    col = lambda name, metric: [r[metric] for r in of(name)]
    collapse = of("collapse")[0]
    degraded_fids = [r["fid"] for r in rows[1:]]
    out = [
        ("floor: FID below every degraded set", floor["fid"] < min(degraded_fids),
         f"{floor['fid']:.3g} vs min {min(degraded_fids):.3g}"),
        (f"floor: precision and recall near 1 (>= {NEAR_ONE})",
         min(floor["precision"], floor["recall"]) >= NEAR_ONE,
         f"{floor['precision']:.3f}, {floor['recall']:.3f}"),
    ]
    for name in ("blur", "noise", "drop_classes"):
        fids = [floor["fid"]] + col(name, "fid")
        out.append((f"{name}: FID rises monotonically with strength", _increasing(fids),
                    ", ".join(f"{v:.3g}" for v in fids)))
    hf = col("blur", "hf_ratio")
    out.append(("blur: high-frequency ratio below 1, falling with strength",
                max(hf) < 1 and _increasing(hf[::-1]), ", ".join(f"{v:.3g}" for v in hf)))
    hf = col("noise", "hf_ratio")
    out.append(("noise: high-frequency ratio above 1, rising with strength",
                min(hf) > 1 and _increasing(hf), ", ".join(f"{v:.3g}" for v in hf)))
    cb = [floor["checkerboard"]] + col("checkerboard", "checkerboard")
    out.append(("checkerboard: score rises above the floor with amplitude", _increasing(cb),
                ", ".join(f"{v:.3g}" for v in cb)))
    for metric in ("recall", "coverage"):
        v = [floor[metric]] + col("drop_classes", metric)
        out.append((f"drop_classes: {metric} falls with classes dropped", _increasing(v[::-1]),
                    ", ".join(f"{x:.3f}" for x in v)))
    p = col("drop_classes", "precision")
    out.append(("drop_classes: precision not lowered (within 0.05 of the floor)",
                min(p) >= floor["precision"] - 0.05,
                f"floor {floor['precision']:.3f}, " + ", ".join(f"{x:.3f}" for x in p)))
    out.append(("collapse: FID finite and above every other row's",
                math.isfinite(collapse["fid"]) and collapse["fid"] > max(degraded_fids[:-1]),
                f"{collapse['fid']:.3g} vs max other {max(degraded_fids[:-1]):.3g}"))
    out.append(("collapse: recall near 0 (< 0.05), one class covered",
                collapse["recall"] < 0.05 and collapse["classes_covered"] == 1,
                f"recall {collapse['recall']:.4f}, classes {collapse['classes_covered']}"))
    return out


def markdown_table(rows, metrics=TABLE_METRICS):
    head = "| degradation | strength | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for r in rows:
        cells = [f"{r[m]:.4g}" if isinstance(r[m], float) else str(r[m]) for m in metrics]
        lines.append(f"| {r['degradation']} | {r['strength']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
