"""Benchmark figures (matplotlib, PNG): accuracy vs MACs, a progressive plan, and
progressive-vs-fixed accuracy over time. No pyplot: no global state, no GUI backend."""

from __future__ import annotations

import os
from typing import Any, Sequence

__all__ = ["FAMILY_LABELS", "accuracy_vs_macs_points", "plot_accuracy_vs_macs",
           "plot_progressive_plan", "plot_progressive_vs_fixed"]

FAMILY_LABELS = {"v1": "EfficientNet (V1)", "lite": "EfficientNet-lite", "v2": "EfficientNetV2"}
_STYLES = {"v1": ("tab:blue", "o"), "lite": ("tab:green", "s"), "v2": ("tab:red", "^")}


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _short(name: str) -> str:
    return name.replace("efficientnetv2-", "v2-").replace("efficientnet-", "")


def accuracy_vs_macs_points() -> dict[str, list[dict[str, Any]]]:
    """Per family, the variants with a published top-1: MACs counted by
    :func:`keras_effnet.profile` at the evaluation size, top-1 as published."""
    from keras_effnet.profile import profile
    from keras_effnet.variants import VARIANTS

    points: dict[str, list[dict[str, Any]]] = {}
    for variant in VARIANTS.values():
        if variant.paper_top1 is None:
            continue
        macs = profile(variant).macs
        points.setdefault(variant.family, []).append({
            "model": variant.name, "macs_b": macs / 1e9, "top1": variant.paper_top1,
            "image_size": variant.eval_size})
    for rows in points.values():
        rows.sort(key=lambda r: r["macs_b"])
    return points


def plot_accuracy_vs_macs(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The EfficientNet paper's figure 1 layout: one line per family, log MACs on x."""
    points = accuracy_vs_macs_points()
    fig, axes = _figure(8, 5.5)
    ax = axes[0][0]
    for family in ("v1", "lite", "v2"):
        rows = points.get(family, [])
        if not rows:
            continue
        color, marker = _STYLES[family]
        ax.plot([r["macs_b"] for r in rows], [r["top1"] for r in rows], marker=marker,
                color=color, label=FAMILY_LABELS[family])
        for r in rows:
            ax.annotate(_short(r["model"]), (r["macs_b"], r["top1"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -9))
    ax.set_xscale("log")
    ax.set_xlabel("MACs (billions, keras_effnet.profile, at each model's evaluation size)")
    ax.set_ylabel("ImageNet top-1 (%), as published")
    ax.set_title("Accuracy vs MACs (top-1 as published in the papers)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    return points


def plot_progressive_plan(path: str | os.PathLike, model: str = "efficientnetv2-s",
                          epochs: int = 350, stages: int = 4) -> dict[str, list[dict]]:
    """Image size, RandAugment magnitude, mixup and dropout per epoch, for both plan
    modes (automl's code and the paper's Table 6)."""
    from keras_effnet.train.progressive import MODES, progressive_plan

    plans = {mode: progressive_plan(model, epochs, stages, mode) for mode in MODES}
    quantities = (("image_size", "image size (px)"),
                  ("randaug_magnitude", "RandAugment magnitude"),
                  ("mixup_alpha", "mixup alpha"), ("dropout", "dropout"))
    fig, axes = _figure(10, 6.5, 2, 2)
    for ax, (key, label) in zip([a for row in axes for a in row], quantities):
        for mode, style in zip(MODES, ("-", "--")):
            xs, ys = [], []
            for stage in plans[mode]:
                value = getattr(stage, key)
                value = 0.0 if value is None else value
                xs += [stage.start_epoch, stage.end_epoch]
                ys += [value, value]
            ax.plot(xs, ys, style, label=f"{mode}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Progressive plan of {model}: {epochs} epochs, {stages} stages")
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    return {mode: [s.to_dict() for s in plan] for mode, plan in plans.items()}


def plot_progressive_vs_fixed(path: str | os.PathLike, curves: Sequence[dict[str, Any]],
                              target: float | None = None,
                              target_label: str = "fixed-size final accuracy",
                              title: str = "Progressive vs fixed image size (digits)",
                              bottom: float | None = None) -> None:
    """Validation accuracy against cumulative training time, one line per run.

    ``curves``: dicts with ``label``, ``seconds`` (cumulative, per evaluation) and
    ``accuracy`` (0..1). ``target`` draws the accuracy the runs race to, labelled
    ``target_label``. ``bottom`` (in %) crops the y axis there, to show the race near the
    top (points below it fall off the chart).
    """
    fig, axes = _figure(8, 5)
    ax = axes[0][0]
    for curve in curves:
        ax.plot(curve["seconds"], [100 * a for a in curve["accuracy"]], marker="o",
                label=curve["label"], alpha=0.85)
    if target is not None:
        ax.axhline(100 * target, color="gray", linestyle=":",
                   label=f"{target_label} ({100 * target:.1f} %)")
    ax.set_xlabel("training time (s, cumulative, evaluation excluded)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title)
    if bottom is not None:
        ax.set_ylim(bottom, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.fspath(path))
