"""Figures: accuracy vs MACs of every published variant, and a progressive plan."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet.bench.sections.base import Context, Section

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run"]


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """The accuracy-vs-MACs and progressive-plan figures, and their numbers."""
    from keras_effnet.bench import plots

    points = plots.plot_accuracy_vs_macs(out / "accuracy_vs_macs.png")
    plan = plots.plot_progressive_plan(out / "progressive_plan_efficientnetv2-s.png")
    rows = [dict(r, family=family) for family, rs in points.items() for r in rs]
    return {
        "columns": [("family", "family"), ("model", "model"), ("image_size", "eval size"),
                    ("macs_b", "MACs (B, keras_effnet.profile)"),
                    ("top1", "top-1 (as published)")],
        "rows": rows, "plan": plan,
        "figures": ["accuracy_vs_macs.png", "progressive_plan_efficientnetv2-s.png"],
        "notes": ["Top-1 is the papers' ImageNet figure, as published (not measured here); "
                  "MACs are counted by keras_effnet.profile at each evaluation size. The plan "
                  "figure is keras_effnet.progressive_plan('efficientnetv2-s', 350, 4) in "
                  "both modes (automl's code; the paper's Table 6, which also schedules "
                  "dropout)."]}


SECTION = Section("plots", "Figures: accuracy vs MACs, progressive plan", cpu_only=True,
                  run=run, display=0)
