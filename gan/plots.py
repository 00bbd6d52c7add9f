"""The ablation report's figures. Each function draws prepared numbers into one PNG file.

A curve is (steps, mean, low, high) arrays over seeds; low/high may be NaN (one seed) and then
no band is drawn.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def arm_colors(arm_names):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(arm_names)}


def _draw_curve(ax, curve, label, color, linestyle="-"):
    steps, mean, low, high = (np.asarray(a, dtype=float) for a in curve)
    ax.plot(steps, mean, color=color, linestyle=linestyle, marker="." if len(steps) < 8 else None,
            label=label)
    if np.isfinite(low).any():
        ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)


def _grid(n, width=4.2, height=3.2, columns=3):
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _legend_and_save(fig, axes, path):
    """One legend for all panels below them, and room for the title above (sizes in inches)."""
    handles, labels = axes[0].get_legend_handles_labels()
    columns = min(3, max(1, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize="small",
               frameon=False)
    height = fig.get_figheight()
    bottom = (0.15 + 0.22 * -(-len(labels) // columns)) / height
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(curves_by_metric, colors, path, title="mean over seeds, band: 95% t-interval"):
    """curves_by_metric: {metric: {arm: curve}}; one panel per metric, one line per arm."""
    fig, axes = _grid(len(curves_by_metric))
    for ax, (metric, by_arm) in zip(axes, curves_by_metric.items()):
        for arm, curve in by_arm.items():
            _draw_curve(ax, curve, arm, colors[arm])
        ax.set_title(metric)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize="medium")
    _legend_and_save(fig, axes, path)


def spectra(fake_by_arm, real, colors, path):
    """Mean radial power spectra: one line per arm, the reals in black; and fake / real."""
    fig, (ax, ratio_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    for arm, spectrum in fake_by_arm.items():
        spectrum = np.asarray(spectrum, dtype=float)
        ax.semilogy(spectrum, color=colors[arm], label=arm)
        if real is not None and len(real) == len(spectrum):
            ratio_ax.semilogy(spectrum / np.asarray(real, dtype=float), color=colors[arm])
    if real is not None:
        ax.semilogy(np.asarray(real, dtype=float), color="black", linewidth=2, label="real")
    ratio_ax.axhline(1.0, color="black", linewidth=1)
    ax.set_title("Azimuthally averaged power spectrum, mean over seeds")
    ax.set_ylabel("mean power")
    ratio_ax.set_title("fake / real (> 1: excess high-frequency energy, < 1: blur)")
    for a in (ax, ratio_ax):
        a.set_xlabel("radial frequency bin (low to high)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dead_units(curves_by_layer, relu_arms, colors, path):
    """{layer: {arm: curve}}; ReLU arms dashed, LeakyReLU arms solid."""
    fig, axes = _grid(len(curves_by_layer))
    for ax, (layer, by_arm) in zip(axes, curves_by_layer.items()):
        for arm, curve in by_arm.items():
            _draw_curve(ax, curve, arm, colors[arm], "--" if arm in relu_arms else "-")
        ax.set_title(f"D layer {layer}: dead-unit fraction")
        ax.set_xlabel("step")
        ax.set_ylim(bottom=0)
    fig.suptitle("dashed: ReLU (or slope 0), solid: LeakyReLU; band: 95% t-interval over seeds",
                 fontsize="medium")
    _legend_and_save(fig, axes, path)


def sample_grids(grids, path):
    """grids: [(title, png path)], drawn side by side."""
    fig, axes = _grid(len(grids), width=4, height=4.4)
    for ax, (title, png) in zip(axes, grids):
        ax.imshow(np.asarray(Image.open(png).convert("L")), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
