"""0. The main job, side by side in one run: what a user gets from ``scripts/train.py``
against what they could do instead, on its dataset's own train / held-out split (the
embedded mnist5k unless ``main_job_flags`` name a ``--dataset``).

Arms:

* (a) the main job as the README runs it: ``scripts/train.py`` (progressive learning),
  one process per seed, evaluated every epoch for a point per epoch on its curve;
* the main job exactly (unless ``main_job_export`` is off): the first seed's (a) once
  more, as the README runs it (its evaluations every 2 epochs on the embedded sets, then
  its export). That process' wall time is the "train + export" figure. It is kept out of
  (a)'s medians: its coarser curve would delay its time to target by up to an epoch,
  measuring the evaluation schedule rather than the training.
* (b) the same with ``--stages=1``: fixed size, same epochs;
* (c) ``keras.applications`` (``EfficientNetV2B0``, ``weights=None``), Adam, plain
  ``model.fit`` at the main job's last size on the same scans resized;
* (d) scikit-learn on the raw pixels (scaled to [0, 1]): an RBF ``SVC`` with ``C`` and
  ``gamma`` chosen by 3-fold cross-validation on the training split only, and logistic
  regression.

Time is cumulative training seconds per epoch (evaluation excluded, the first epoch's
trace included). The target is (b)'s median final top-1 less ``main_job_tolerance``
points; each run's time to target is when it first reached it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.progressive import curve, time_to_reach

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "classical_baselines", "main_job_dataset", "summarise"]

# keras-effnet-train, as installed with the package (or in this checkout).
_TRAIN_COMMAND = (sys.executable, "-m", "keras_effnet.commands.train")
# On pixels in [0, 1]: the 8x8 digits' best gamma is near 0.3, the 28x28 scans' near 0.03.
_SVC_GRID = {"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.03, 0.1, 0.3]}
_CV_FOLDS = 3
_BOTTOM = 90.0  # the figure's y axis starts here: the race is near the top
_EXACT = "main job"  # the arm label of the run that is the main job exactly


def _main_job(cfg: BenchConfig, work: Path, arm: str, seed: int, export: bool
              ) -> dict[str, Any]:
    """One ``keras-effnet-train`` process; its curve from the run's metrics.json."""
    run_dir = work / f"{arm.replace(' ', '_')}-{seed}"
    args = [*_TRAIN_COMMAND, f"--seed={seed}",
            f"--epochs={cfg.main_job_epochs}", f"--model_dir={run_dir}",
            f"--saved_models={work / 'saved_models'}", f"--tflite_dir={work / 'tflite'}",
            *cfg.main_job_flags]
    if arm == "fixed":
        args.append("--stages=1")
    if not export:
        # A point per epoch for the curve (the main job evaluates every 2 epochs on the
        # embedded sets). Evaluating never changes what trains (tested) and is not
        # training time. The exported run is the main job exactly, for its wall time.
        args += ["--noexport", "--eval_every_epochs=1"]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:])} exited {done.returncode}: "
                           f"{done.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds, accuracy = curve(metrics["history"])
    return {"arm": arm, "seed": seed, "final_top1": metrics["final"]["top1"],
            "seconds": seconds, "accuracy": accuracy,
            "train_s": seconds[-1] if seconds else None, "wall_s": round(wall, 1),
            "exported": export,
            "evaluated_epochs": [i + 1 for i, record in enumerate(metrics["history"])
                                 if record.get("val_top1") is not None],
            "sizes": sorted({stage["image_size"] for stage in metrics["plan"]})}


def _keras_applications(cfg: BenchConfig, split, seed: int) -> dict[str, Any]:
    """What a user writes instead: keras.applications, Adam, model.fit."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_effnet.bench.sections.steps import clear_session

    size = cfg.main_job_image_size

    def images(pixels):
        resized = tf.image.resize(pixels[..., None], [size, size]).numpy()
        return np.repeat(resized, 3, axis=-1)

    x_train, y_train, x_val, y_val = split
    clear_session()
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, cfg.main_job_apps_model)(
        weights=None, input_shape=(size, size, 3), classes=10)
    model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    seconds, accuracy, total = [], [], [0.0, 0.0]

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            total[1] = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation starts: training time ends
            total[0] += time.perf_counter() - total[1]

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(total[0])
            accuracy.append(float(logs["val_accuracy"]))

    model.fit(images(x_train), y_train, batch_size=cfg.main_job_batch,
              epochs=cfg.main_job_epochs, validation_data=(images(x_val), y_val),
              callbacks=[Clock()], verbose=0)
    return {"arm": "keras.applications", "seed": seed, "final_top1": accuracy[-1],
            "seconds": seconds, "accuracy": accuracy, "train_s": seconds[-1],
            "sizes": [size]}


def exact_run_note(exact: dict[str, Any], runs: list[dict[str, Any]],
                   target: float | None) -> str:
    """How the main job run exactly compares with the same seed's (a) run: the same
    training, evaluated less often."""
    twin = next((r for r in runs if r["arm"] == "progressive"
                 and r["seed"] == exact["seed"]), None)
    reached = (time_to_reach(exact["seconds"], exact["accuracy"], target)
               if target is not None else None)
    exact["time_to_target_s"] = reached
    text = (f"the main job exactly (seed {exact['seed']}, evaluated every "
            f"{_every(exact)} epoch(s), then exported): final top-1 "
            f"{_fmt(exact['final_top1'])}, train {_fmt(exact['train_s'])} s, wall "
            f"{_fmt(exact['wall_s'])} s, time to target "
            f"{'never' if reached is None else f'{reached:.1f} s'}")
    if twin is not None:
        text += (f"; the same seed in (a), evaluated every epoch: final top-1 "
                 f"{_fmt(twin['final_top1'])}, time to target "
                 f"{_fmt(twin.get('time_to_target_s') or 'never')}")
    return text


def _every(run: dict[str, Any]) -> str:
    epochs = run.get("evaluated_epochs") or []
    if len(epochs) >= 2:
        return str(epochs[1] - epochs[0])
    return str(epochs[0]) if epochs else "?"


def main_job_dataset(cfg: BenchConfig) -> str:
    """The dataset the main job's runs train on: the last ``--dataset=`` of
    ``main_job_flags``, else the trainer's default."""
    from keras_effnet.train.config import DEFAULT_DATASET

    named = [f.split("=", 1)[1] for f in cfg.main_job_flags if f.startswith("--dataset=")]
    return named[-1] if named else DEFAULT_DATASET


def classical_baselines(split) -> list[dict[str, Any]]:
    """SVC (RBF; C, gamma by 3-fold CV on the training split) and logistic regression
    on the raw pixels scaled to [0, 1]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x_train, y_train, x_val, y_val = split
    x_train = x_train.reshape(len(x_train), -1) / 255.0
    x_val = x_val.reshape(len(x_val), -1) / 255.0
    rows = []
    started = time.perf_counter()
    search = GridSearchCV(SVC(kernel="rbf"), _SVC_GRID,
                          cv=StratifiedKFold(_CV_FOLDS, shuffle=True, random_state=0))
    search.fit(x_train, y_train)
    rows.append({"arm": "SVC (RBF)", "params": search.best_params_,
                 "final_top1": float(search.score(x_val, y_val)),
                 "train_s": round(time.perf_counter() - started, 2)})
    started = time.perf_counter()
    logistic = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    rows.append({"arm": "logistic regression", "params": {},
                 "final_top1": float(logistic.score(x_val, y_val)),
                 "train_s": round(time.perf_counter() - started, 2)})
    return rows


def summarise(runs: list[dict[str, Any]], classical: list[dict[str, Any]],
              tolerance: float, pixels: str = "raw pixels") -> dict[str, Any]:
    """Per-arm rows (median and min final top-1, median train time and time to target)
    and the goals, from every run's curve. ``tolerance`` is a fraction (0.005: half a
    point)."""
    arms = [a for a in ("progressive", "fixed", "keras.applications")
            if any(r["arm"] == a for r in runs)]
    fixed = [r["final_top1"] for r in runs if r["arm"] == "fixed"]
    target = timing.median(fixed) - tolerance if fixed else None
    rows, reach = [], {}
    for arm in arms:
        group = [r for r in runs if r["arm"] == arm]
        times = [time_to_reach(r["seconds"], r["accuracy"], target) if target is not None
                 else None for r in group]
        for r, t in zip(group, times):
            r["time_to_target_s"] = t
        reached = [t for t in times if t is not None]
        # a run that never reached the target counts as never (the median is None when
        # half or more never did)
        reach[arm] = (timing.median(reached) if len(reached) * 2 > len(group) else None)
        finals = [r["final_top1"] for r in group]
        rows.append({"arm": arm, "runs": len(group), "sizes": group[0]["sizes"],
                     "median_top1": timing.median(finals), "min_top1": min(finals),
                     "train_s": timing.median([r["train_s"] for r in group]),
                     "time_to_target_s": reach[arm], "reached": f"{len(reached)}/{len(group)}"})
    for row in classical:
        rows.append({"arm": row["arm"], "runs": 1, "sizes": pixels,
                     "median_top1": row["final_top1"], "min_top1": row["final_top1"],
                     "train_s": row["train_s"], "time_to_target_s": None,
                     "reached": "-", "params": row["params"]})
    for row in rows:
        t = reach.get(row["arm"])
        row["speedup"] = timing.ratio(t, reach.get("progressive")) if t else None
    by_arm = {row["arm"]: row for row in rows}
    prog = by_arm.get("progressive")
    best_classical = max((r["final_top1"] for r in classical), default=None)
    goals = []
    if prog is not None:
        goals += [
            ("(a) median top-1 >= the best classical baseline", prog["median_top1"],
             best_classical),
            ("(a) median top-1 >= 98.5 %", prog["median_top1"], 0.985),
            ("(a) min top-1 >= 97.5 %", prog["min_top1"], 0.975)]
        if "fixed" in by_arm:
            goals.append(("(a) median top-1 >= (b)'s", prog["median_top1"],
                          by_arm["fixed"]["median_top1"]))
        for arm in ("fixed", "keras.applications"):
            if arm in by_arm:
                t_arm, t_prog = reach.get(arm), reach.get("progressive")
                speed = (float("inf") if t_arm is None and t_prog is not None
                         else timing.ratio(t_arm, t_prog))
                goals.append((f"(a) reaches the target >= 1.5x sooner than {arm}", speed,
                              1.5))
    return {"target": target, "rows": rows, "goals": [
        {"goal": goal, "value": value, "threshold": threshold,
         "met": None if value is None or threshold is None else value >= threshold - 1e-12}
        for goal, value, threshold in goals]}


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Every arm over ``main_job_seeds``, the classical baselines, the goals."""
    from keras_effnet.bench import plots
    from keras_effnet.data.sources import get_source

    dataset = main_job_dataset(cfg)
    split = get_source(dataset).split_pixels()
    side = "x".join(str(n) for n in split[0].shape[1:])
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        for i, seed in enumerate(cfg.main_job_seeds):
            order = ("progressive", "fixed") if i % 2 == 0 else ("fixed", "progressive")
            for arm in order:
                runs.append(_main_job(cfg, Path(work), arm, seed, export=False))
            if seed in (cfg.main_job_apps_seeds or cfg.main_job_seeds):
                runs.append(_keras_applications(cfg, split, seed))
        if cfg.main_job_export:
            runs.append(_main_job(cfg, Path(work), _EXACT, cfg.main_job_seeds[0],
                                  export=True))
    classical = classical_baselines(split)
    summary = summarise(runs, classical, cfg.main_job_tolerance / 100.0,
                        pixels=f"{side} pixels")
    exported = next((r for r in runs if r.get("exported")), None)
    exact_notes = []
    if exported is not None:
        summary["goals"].append({"goal": f"train + export of the main job <= 360 s (seed "
                                         f"{exported['seed']}, whole process)",
                                 "value": exported["wall_s"],
                                 "threshold": 360.0, "met": exported["wall_s"] <= 360.0})
        exact_notes.append(exact_run_note(exported, runs, summary["target"]))
    figure = "main_job.png"
    plots.plot_progressive_vs_fixed(
        out / figure, [{"label": f"{r['arm']} (seed {r['seed']})", "seconds": r["seconds"],
                        "accuracy": r["accuracy"]} for r in runs],
        target=summary["target"],
        target_label=f"target: fixed's median final - {cfg.main_job_tolerance:g} pt",
        title=f"The main job and its peers on {dataset} (top-1 from {_BOTTOM:g} %)",
        bottom=_BOTTOM)
    goal_lines = [f"goal: {g['goal']}: {_fmt(g['value'])} vs {_fmt(g['threshold'])} -> "
                  f"{'met' if g['met'] else 'NOT met' if g['met'] is False else 'n/a'}"
                  for g in summary["goals"]]
    return {
        "columns": [("arm", "arm"), ("runs", "seeds"), ("sizes", "image sizes"),
                    ("median_top1", "median held-out top-1"), ("min_top1", "min top-1"),
                    ("train_s", "train time (s, median)"),
                    ("time_to_target_s", "time to target (s, median)"),
                    ("reached", "reached"), ("speedup", "progressive is faster by")],
        "rows": summary["rows"], "runs": runs, "goals": summary["goals"],
        "target_top1": summary["target"], "figures": [figure],
        "notes": [f"scripts/train.py {' '.join(cfg.main_job_flags)} --epochs="
                  f"{cfg.main_job_epochs} per seed {list(cfg.main_job_seeds)}; fixed adds "
                  f"--stages=1; keras.applications.{cfg.main_job_apps_model}(weights=None) "
                  f"+ Adam + fit at {cfg.main_job_image_size} px, batch "
                  f"{cfg.main_job_batch}; SVC grid {_SVC_GRID} by {_CV_FOLDS}-fold CV on "
                  f"the training split ({len(split[0])} images). Held-out: the {dataset} "
                  f"source's {len(split[2])} images (20 % of each class)."]
        + exact_notes + goal_lines}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 1.0:
        return f"{value:.2%}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


SECTION = Section("main_job", "0. The main job vs fixed size, keras.applications and "
                  "scikit-learn", cpu_only=True, run=run, display=1)
