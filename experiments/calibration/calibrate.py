"""Calibration table: every metric x known degradation x strength, on real images.

    python experiments/calibration/calibrate.py --dataset=mnist --num_samples=10000

Writes table.md (the table and the expected directions, each marked held or not), results.json
(every row with every value, spectra included) and spectra.png into --output_dir.
"""
import json
import os
import platform
import time

import jax
import matplotlib
from absl import app, flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gan.evaluation import calibration  # noqa: E402

flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist"], "Dataset.")
flags.DEFINE_integer("num_samples", 10000, "Images per evaluated set (and test reals as reference).")
flags.DEFINE_string("data_dir", "", "IDX folder; '' -> $GAN_DATA_DIR.")
flags.DEFINE_string("cache_dir", "", "Classifier cache; '' -> $GAN_CACHE_DIR, then ~/.cache/gan.")
flags.DEFINE_string("output_dir", os.path.dirname(os.path.abspath(__file__)), "Where to write.")
FLAGS = flags.FLAGS


def plot_spectra(rows, path):
    """Radial power spectra (DC left out) of the reals and one strength of each degradation."""
    shown = {"none (floor)": 0, "blur": 1.0, "noise": 0.2, "checkerboard": 0.4, "collapse": 1}
    fig, ax = plt.subplots(figsize=(6, 4))
    radius = [i / 28 for i in range(len(rows[0]["spectrum_real"]))][1:]
    ax.semilogy(radius, rows[0]["spectrum_real"][1:], "k-", lw=3, alpha=0.4, label="test reals")
    for r in rows:
        if shown.get(r["degradation"]) == r["strength"]:
            ax.semilogy(radius, r["spectrum_fake"][1:], label=f"{r['degradation']} {r['strength']}")
    ax.axvline(rows[0]["hf_cutoff"], color="gray", ls=":", label="hf cutoff")
    ax.set_xlabel("radius (cycles per pixel)")
    ax.set_ylabel("mean power")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv):
    del argv
    start = time.time()
    rows = calibration.run(FLAGS.dataset, FLAGS.num_samples, FLAGS.data_dir, FLAGS.cache_dir)
    checks = calibration.checks(rows)
    floor = rows[0]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    prefix = os.path.join(FLAGS.output_dir, FLAGS.dataset + "_")
    with open(prefix + "results.json", "w") as f:
        json.dump(rows, f, indent=1)
    lines = [
        f"# Calibration: {FLAGS.dataset}, N = {FLAGS.num_samples} per set",
        "",
        f"Reference: {floor['num_reference']} test images. Sets: a fixed random subset of the "
        "train split (the real-vs-real floor) and degraded copies of it; drop_classes draws N "
        "train images from the classes k..9; collapse repeats one image N times.",
        f"Classifier `{floor['classifier_recipe']}`, sha256 `{floor['classifier_sha256']}`, test "
        f"accuracy {floor['classifier_test_accuracy']:.4f}. KID: {floor['kid_subsets']} subsets "
        f"of {min(1000, FLAGS.num_samples)}. hf_ratio above {floor['hf_cutoff']} cycles/pixel.",
        f"Produced by `python experiments/calibration/calibrate.py --dataset={FLAGS.dataset} "
        f"--num_samples={FLAGS.num_samples}` in {time.time() - start:.0f} s "
        f"(jax {jax.__version__}, {platform.machine()}, {os.cpu_count()} CPUs).",
        "",
        calibration.markdown_table(rows),
        "",
        "## Expected directions",
        "",
        "| expectation | held | values |",
        "|---|---|---|",
        *[f"| {what} | {'yes' if held else '**NO**'} | {values} |" for what, held, values in checks],
        "",
    ]
    with open(prefix + "table.md", "w") as f:
        f.write("\n".join(lines))
    plot_spectra(rows, prefix + "spectra.png")
    print("\n".join(lines))
    failed = [what for what, held, _ in checks if not held]
    if failed:
        raise SystemExit(f"{len(failed)} expectations failed: {failed}")


if __name__ == "__main__":
    app.run(main)
