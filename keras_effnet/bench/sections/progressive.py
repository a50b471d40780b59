"""3. Progressive vs fixed image size: keras_effnet.train.train on digits, timed to an
accuracy target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "curve", "time_to_reach", "reach_target"]


def curve(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """``(cumulative training seconds, val top-1)`` at each evaluated epoch."""
    seconds, accuracy, total = [], [], 0.0
    for record in history:
        total += float(record.get("seconds") or 0.0)
        if record.get("val_top1") is not None:
            seconds.append(total)
            accuracy.append(float(record["val_top1"]))
    return seconds, accuracy


def time_to_reach(seconds: list[float], accuracy: list[float], target: float
                  ) -> float | None:
    """The first cumulative time at which ``accuracy >= target`` (None if never)."""
    for s, a in zip(seconds, accuracy):
        if a >= target - 1e-9:
            return s
    return None


def reach_target(fixed: tuple[list[float], list[float]],
                 progressive: tuple[list[float], list[float]], tolerance: float
                 ) -> dict[str, Any]:
    """Scores one progressive/fixed pair of ``(seconds, accuracy)`` curves.

    The target is the fixed run's final accuracy less ``tolerance`` (a fraction: 0.005 is
    half a point), the issue's "equal final accuracy (± 0.5 point)"; each run's time is
    when it first reached the target. Returns the target, both times, the speedup (None
    when the progressive run never reached it) and whether the progressive run's final
    accuracy is equal within the tolerance, or better.
    """
    if not fixed[1]:
        return {"target": None, "fixed_s": None, "progressive_s": None, "speedup": None,
                "final_gap": None, "final_not_worse": None}
    target = fixed[1][-1] - tolerance
    fixed_s = time_to_reach(*fixed, target)
    progressive_s = time_to_reach(*progressive, target)
    gap = progressive[1][-1] - fixed[1][-1] if progressive[1] else None
    return {"target": target, "fixed_s": fixed_s, "progressive_s": progressive_s,
            "speedup": timing.ratio(fixed_s, progressive_s),
            "final_gap": gap,
            "final_not_worse": None if gap is None else gap >= -tolerance - 1e-9}


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Progressive and fixed-size training runs on digits, in alternating pairs: the time
    each takes to reach the fixed run's final accuracy."""
    from keras_effnet.bench import plots
    from keras_effnet.train.trainer import DEFAULT_MODEL, TrainConfig, train

    def config(stages: int, model_dir: str, **extra) -> TrainConfig:
        # automl's schedule, as this section has always measured (the digits' own
        # default is the paper's since the main job moved to it: section 0 measures that)
        fields = dict(model=cfg.progressive_model, dataset="digits",
                      progressive_mode="automl", epochs=cfg.progressive_epochs, stages=stages,
                      image_size=cfg.progressive_image_size,
                      min_image_size=cfg.progressive_min_image_size,
                      batch_size=cfg.progressive_batch, eval_every_epochs=1, seed=cfg.seed,
                      model_dir=model_dir, verbose=0)
        fields.update(extra)
        return TrainConfig(**fields)

    arms = (("progressive", cfg.progressive_stages), ("fixed", 1))
    tolerance = cfg.progressive_tolerance / 100.0
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        if cfg.progressive_warmup:  # traces the pipelines of every stage size once
            for label, stages in arms:
                clear_session()
                train(config(stages, os.path.join(work, f"warmup-{label}"),
                             max_train_steps=1, eval_every_epochs=0))
        for r in range(cfg.progressive_repeats):
            order = arms if r % 2 == 0 else arms[::-1]
            pair = {}
            for label, stages in order:
                clear_session()
                result = train(config(stages, os.path.join(work, f"{label}-{r}")))
                seconds, accuracy = curve(result.history)
                pair[label] = {"repeat": r, "run": label, "stages": stages,
                               "seconds": seconds, "accuracy": accuracy,
                               "final_top1": accuracy[-1] if accuracy else None,
                               "train_s": seconds[-1] if seconds else None,
                               "wall_s": result.wall_time_s,
                               "sizes": sorted({s.image_size for s in result.plan})}
            score = reach_target((pair["fixed"]["seconds"], pair["fixed"]["accuracy"]),
                                 (pair["progressive"]["seconds"],
                                  pair["progressive"]["accuracy"]), tolerance)
            for label in ("progressive", "fixed"):
                pair[label].update(target_top1=score["target"],
                                   time_to_target_s=score[f"{label}_s"])
                runs.append(pair[label])
            pair["progressive"].update(speedup=score["speedup"],
                                       final_gap_points=None if score["final_gap"] is None
                                       else 100 * score["final_gap"],
                                       final_not_worse=score["final_not_worse"])
    fixed = [r for r in runs if r["run"] == "fixed"]
    prog = [r for r in runs if r["run"] == "progressive"]
    t_fixed = timing.median([r["time_to_target_s"] for r in fixed])
    reached = [r["time_to_target_s"] for r in prog if r["time_to_target_s"] is not None]
    rows = []
    for label, group in (("progressive", prog), ("fixed", fixed)):
        row = {"run": f"{label} (median of {len(group)})",
               "stages": group[0]["stages"], "sizes": group[0]["sizes"],
               "final_top1": timing.median([r["final_top1"] for r in group]),
               "train_s": timing.median([r["train_s"] for r in group])}
        if label == "progressive":
            not_worse = sum(bool(r["final_not_worse"]) for r in group)
            row.update(time_to_target_s=timing.median(reached),
                       reached=f"{len(reached)}/{len(group)}",
                       # median over pairs; a pair whose progressive run never reached
                       # the target counts as no speedup at all (0)
                       speedup=timing.median([r["speedup"] or 0.0 for r in group]),
                       final_not_worse=f"{not_worse}/{len(group)}")
        else:
            row.update(time_to_target_s=t_fixed, speedup=1.0,
                       reached=f"{sum(r['time_to_target_s'] is not None for r in group)}"
                               f"/{len(group)}")
        rows.append(row)
    figure = "progressive_vs_fixed.png"
    curves = [{"label": f"{r['run']} ({r['stages']} stage{'s' if r['stages'] > 1 else ''}, "
                        f"run {r['repeat'] + 1})", "seconds": r["seconds"],
               "accuracy": r["accuracy"]} for r in runs]
    plots.plot_progressive_vs_fixed(
        out / figure, curves, target=fixed[0]["target_top1"] if fixed else None,
        target_label=f"target: run 1's fixed final - {cfg.progressive_tolerance:g} pt")
    return {
        "columns": [("run", "run"), ("stages", "stages"), ("sizes", "image sizes"),
                    ("final_top1", "final val top-1"), ("train_s", "train time (s)"),
                    ("time_to_target_s", f"time to fixed's final top-1 - "
                                         f"{cfg.progressive_tolerance:g} pt (s)"),
                    ("reached", "reached"), ("speedup", "speedup vs fixed"),
                    ("final_not_worse", f"final >= fixed's - {cfg.progressive_tolerance:g} pt")],
        "rows": rows, "runs": runs, "figures": [figure],
        "notes": [f"keras_effnet.train.train on digits: {cfg.progressive_model}"
                  + (" (shrunk to width 0.5, depth 0.5 by the digits defaults)"
                     if cfg.progressive_model == DEFAULT_MODEL else "")
                  + f", {cfg.progressive_epochs} "
                  f"epochs, batch {cfg.progressive_batch}, final size "
                  f"{cfg.progressive_image_size} px, eval every epoch at that size; "
                  f"progressive = {cfg.progressive_stages} automl stages from "
                  f"{cfg.progressive_min_image_size} px, fixed = stages=1. Time = cumulative "
                  "training seconds per epoch (evaluation excluded, first-epoch trace "
                  "included). Target = each pair's fixed run's final accuracy less "
                  f"{cfg.progressive_tolerance:g} point (the goal's \"equal final accuracy, "
                  f"± {cfg.progressive_tolerance:g} point\"); each run's time is when it first "
                  "reached it. Speedup = median over pairs of fixed time / progressive time "
                  "(0 for a pair whose progressive run never reached the target). "
                  f"{cfg.progressive_repeats} pair(s) of runs, order alternated."]}


SECTION = Section("progressive", "3. Progressive vs fixed image size (digits)",
                  cpu_only=True, run=run, display=4)
