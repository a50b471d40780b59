"""The benchmark sections. Each takes a :class:`BenchConfig` and an output folder and
returns a JSON-ready dict (``title``, ``columns``, ``rows``, ``notes``, ``figures``; see
:mod:`keras_effnet.bench.report`). Timings never raise on a "bad" number: they report.

    python -m keras_effnet.bench.sections <section> <config.json> <out_dir> <result.json>

runs one section in a fresh process: the TFLite conversions (pruning imports
tensorflow-model-optimization, which switches a process to legacy Keras) and the serving
fuzz (a crash there must not take the whole benchmark down).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from keras_effnet.bench import timing
from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION_FUNCTIONS", "TITLES", "run_section", "run_in_child", "GPUUnavailable",
           "start_background", "stop_background", "prepare_tflite"]

TITLES = {
    "plots": "Figures: accuracy vs MACs, progressive plan",
    "train": "1. Training throughput: keras_effnet vs keras.applications",
    "pipeline": "2. Input pipeline vs train step",
    "progressive": "3. Progressive vs fixed image size (digits)",
    "serving": "4. Serving: SavedModel serving_default vs the Keras model",
    "tflite": "5. TFLite (ai-edge-litert, XNNPACK)",
    "build": "6. Build time: keras_effnet vs keras.applications",
    "mfu": "7. Model FLOP utilisation (inference)",
    "reliability": "Reliability",
    "gpu": "Accelerator: training throughput with XLA and mixed precision",
}


class GPUUnavailable(RuntimeError):
    """--gpu was asked for on a machine without a visible GPU."""


def _keras():
    import keras
    return keras


def _clear() -> None:
    _keras().backend.clear_session()
    gc.collect()


def _train_step(model, jit: bool, loss_scale: bool = False):
    """A compiled train step: forward, loss, gradient, ``optimizer.apply``."""
    import tensorflow as tf
    keras = _keras()
    optimizer = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9,
                                         epsilon=1e-3)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function(jit_compile=jit, autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss = loss_fn(labels, tf.cast(probs, tf.float32))
            scaled = optimizer.scale_loss(loss) if loss_scale else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return loss
    return step


def _batch(batch: int, size: int, classes: int, seed: int):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.one_hot(rng.integers(0, classes, batch), classes)
    return images, labels


# keras_effnet train steps (no XLA) already traced in this process, keyed by (model,
# image size, batch, classes): the pipeline section reuses the training section's step
# instead of paying for a second trace (tens of seconds on a small CPU).
_TRACED_STEPS: dict[tuple, tuple] = {}


def _our_step(name: str, size: int, batch: int, classes: int, seed: int):
    """``(step, images, labels, model)`` for keras_effnet's ``name``, built and traced
    once per process."""
    key = (name, size, batch, classes)
    if key not in _TRACED_STEPS:
        import keras_effnet
        model = keras_effnet.build(name, classes=classes, input_shape=(size, size, 3))
        images, labels = _batch(batch, size, classes, seed)
        _TRACED_STEPS[key] = (_train_step(model, jit=False), images, labels, model)
    return _TRACED_STEPS[key]


def _steps(step, images, labels, n: int) -> Callable[[], float]:
    def run():
        loss = None
        for _ in range(n):
            loss = step(images, labels)
        return float(loss)  # waits for the device
    return run


# --- 1. training throughput -----------------------------------------------------------

def section_train(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    from keras_effnet.port import KERAS_APPLICATIONS_NAMES, keras_applications_model

    rows = []
    size, batch = cfg.train_image_size, cfg.train_batch
    for name in cfg.train_models:
        if name not in KERAS_APPLICATIONS_NAMES:
            rows.append({"model": name, "note": "no keras.applications counterpart"})
            continue
        _clear()
        shape = (size, size, 3)
        plain_step, images, labels, ours = _our_step(name, size, batch, cfg.train_classes,
                                                     cfg.seed)
        theirs = keras_applications_model(name, classes=cfg.train_classes, input_shape=shape)
        fns, first = {}, {}
        for jit in cfg.train_jit:
            for side, model in (("keras_effnet", ours), ("keras.applications", theirs)):
                key = (side, jit)
                step = plain_step if (side, jit) == ("keras_effnet", False) else \
                    _train_step(model, jit)
                fns[key] = _steps(step, images, labels, cfg.train_steps)
                first[key] = timing.timed(fns[key])  # trace (and XLA compile)
        twin = None
        if cfg.train_control and False in cfg.train_jit:
            # A/A control: the same keras_effnet model built a second time, in the same
            # rounds. How far two identical models drift apart is the noise floor.
            import keras_effnet
            twin = keras_effnet.build(name, classes=cfg.train_classes, input_shape=shape)
            fns[("twin", False)] = _steps(_train_step(twin, False), images, labels,
                                          cfg.train_steps)
            first[("twin", False)] = timing.timed(fns[("twin", False)])
        times = timing.interleaved({f"{s}|{j}": fn for (s, j), fn in fns.items()},
                                   cfg.repeats, warmup=cfg.warmup)
        images_per_round = batch * cfg.train_steps
        for jit in cfg.train_jit:
            a = timing.median(times[f"keras_effnet|{jit}"])
            b = timing.median(times[f"keras.applications|{jit}"])
            rows.append({
                "model": name, "image_size": size, "batch": batch, "jit_compile": jit,
                "ours_img_s": timing.per_second(images_per_round, a),
                "theirs_img_s": timing.per_second(images_per_round, b),
                "ratio": timing.ratio(b, a),  # throughput ratio ours / theirs
                "round_ratios": timing.spread(timing.paired_ratios(
                    times[f"keras.applications|{jit}"], times[f"keras_effnet|{jit}"])),
                # same direction as "ratio": the twin's round time / ours
                "control_ratio": timing.ratio(timing.median(times.get(f"twin|{jit}", [])),
                                              a),
                "ours_first_call_s": first[("keras_effnet", jit)],
                "theirs_first_call_s": first[("keras.applications", jit)],
                "ours_times_s": times[f"keras_effnet|{jit}"],
                "theirs_times_s": times[f"keras.applications|{jit}"],
                "twin_times_s": times.get(f"twin|{jit}")})
        del ours, theirs, twin, fns, plain_step
        keep = (cfg.pipeline_model, cfg.pipeline_image_size, cfg.pipeline_batch,
                cfg.train_classes)
        for key in [k for k in _TRACED_STEPS if k != keep]:
            del _TRACED_STEPS[key]
    return {
        "columns": [("model", "model"), ("image_size", "image"), ("batch", "batch"),
                    ("jit_compile", "jit_compile"), ("ours_img_s", "keras_effnet img/s"),
                    ("theirs_img_s", "keras.applications img/s"),
                    ("ratio", "ratio ours/theirs"),
                    ("round_ratios", "per-round ratios (min–max)"),
                    ("control_ratio", "A/A control: ours built twice"),
                    ("ours_first_call_s", "ours first call (s)"),
                    ("theirs_first_call_s", "theirs first call (s)")],
        "rows": rows,
        "notes": [f"One round = {cfg.train_steps} train steps (tf.function: forward, "
                  "categorical cross-entropy, gradient, RMSprop.apply) on one batch held in "
                  f"memory; medians of {cfg.repeats} interleaved rounds after {cfg.warmup} "
                  "warm-up round(s). ratio > 1: keras_effnet is faster. Per-round ratios: "
                  "the same ratio within each round; their spread is this machine's noise, "
                  "and a ratio of medians inside it is parity. A/A control (no XLA): the "
                  "same ratio between keras_effnet's model and a second build of it, timed "
                  "in the same rounds; identical models, so its distance from 1 is noise. "
                  "First call = trace (+ XLA compile) + the first round."]
        + ([] if True in cfg.train_jit else [
            "jit_compile=True is left out of these settings: XLA's CPU compile of one train "
            "step takes minutes per model (add it with --set=train_jit=false,true)."])}


# --- 2. input pipeline ----------------------------------------------------------------

def write_jpeg_folder(root: Path, n: int, seed: int) -> Path:
    """``n`` JPEG photos (crops of scikit-learn's sample photos, 240-400 px a side) in two
    class folders: a stand-in for an ImageNet-like folder."""
    import random

    from keras_effnet.bench.reliability import encode, photo_crop
    rng = random.Random(seed)
    for i in range(n):
        image = photo_crop(rng, rng.randint(240, 400), rng.randint(240, 400))
        path = root / ("a" if i % 2 else "b") / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(image, "JPEG", quality=90))
    return root


def section_pipeline(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    from keras_effnet.data import FolderSource

    size, batch = cfg.pipeline_image_size, cfg.pipeline_batch
    with tempfile.TemporaryDirectory() as work:
        source = FolderSource(write_jpeg_folder(Path(work) / "jpegs", cfg.pipeline_images,
                                                cfg.seed))
        counter = {"epoch": 0}

        def pipeline(randaug: float, mixup: float):
            def run():
                counter["epoch"] += 1  # a new epoch: a new order and new augmentations
                ds = source.train_dataset(image_size=size, batch_size=batch,
                                          randaug_magnitude=randaug, mixup_alpha=mixup,
                                          cutmix_alpha=mixup, seed=cfg.seed,
                                          epoch=counter["epoch"])
                n = 0
                for images, _ in ds:
                    n += int(images.shape[0])
                counter["images"] = n
                return n
            return run

        # The step of a 1000-class model on a batch in memory, as in section 1 (reused
        # from it when the settings match): the class count does not change its cost.
        train_step, images, labels, _ = _our_step(cfg.pipeline_model, size, batch,
                                                  cfg.train_classes, cfg.seed)
        step = _steps(train_step, images, labels, cfg.pipeline_train_steps)
        times = timing.interleaved({
            "pipeline": pipeline(cfg.pipeline_randaug, cfg.pipeline_mixup),
            "pipeline_no_aug": pipeline(0.0, 0.0), "train_step": step},
            cfg.repeats, warmup=cfg.warmup)
        per_epoch = counter["images"]
    _TRACED_STEPS.clear()
    step_rate = timing.per_second(batch * cfg.pipeline_train_steps,
                                  timing.median(times["train_step"]))
    rows = []
    for key, label in (("pipeline", f"decode, crop, flip, RandAugment "
                                     f"{cfg.pipeline_randaug:g}, MixUp/CutMix "
                                     f"{cfg.pipeline_mixup:g}"),
                       ("pipeline_no_aug", "decode, crop, flip only")):
        rate = timing.per_second(per_epoch, timing.median(times[key]))
        rows.append({"what": label, "image_size": size, "batch": batch,
                     "pipeline_img_s": rate, "train_step_img_s": step_rate,
                     "ratio": timing.ratio(rate, step_rate), "goal": ">= 3",
                     "meets_goal": None if rate is None or step_rate is None
                     else rate / step_rate >= 3, "times_s": times[key]})
    return {
        "columns": [("what", "pipeline"), ("image_size", "image"), ("batch", "batch"),
                    ("pipeline_img_s", "pipeline img/s"),
                    ("train_step_img_s", f"train step img/s ({cfg.pipeline_model})"),
                    ("ratio", "ratio pipeline/step"), ("goal", "goal"),
                    ("meets_goal", "meets goal")],
        "rows": rows,
        "notes": [f"keras_effnet.data folder source over {per_epoch} training JPEGs "
                  f"(of {cfg.pipeline_images}; crops of scikit-learn's sample photos, "
                  "240-400 px), one full epoch per round, a fresh dataset each round as the "
                  "trainer builds it; the train step (no XLA) is keras_effnet's "
                  f"{cfg.pipeline_model} on a batch in memory. Measured one after the other, "
                  "interleaved, each with all cores."]}


# --- 3. progressive vs fixed ----------------------------------------------------------

def _curve(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
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


def section_progressive(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    from keras_effnet.bench import plots
    from keras_effnet.train.trainer import DEFAULT_MODEL, TrainConfig, train

    def config(stages: int, model_dir: str, **extra) -> TrainConfig:
        fields = dict(model=cfg.progressive_model, dataset="digits",
                      epochs=cfg.progressive_epochs, stages=stages,
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
                _clear()
                train(config(stages, os.path.join(work, f"warmup-{label}"),
                             max_train_steps=1, eval_every_epochs=0))
        for r in range(cfg.progressive_repeats):
            order = arms if r % 2 == 0 else arms[::-1]
            pair = {}
            for label, stages in order:
                _clear()
                result = train(config(stages, os.path.join(work, f"{label}-{r}")))
                seconds, accuracy = _curve(result.history)
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


# --- 4. serving -----------------------------------------------------------------------

def _jpegs(n: int, short_side: int, seed: int) -> list[bytes]:
    import random

    from keras_effnet.bench.reliability import encode, photo_crop
    rng = random.Random(seed)
    return [encode(photo_crop(rng, int(short_side * rng.uniform(1.0, 1.5)), short_side), "JPEG",
                   quality=90) for _ in range(n)]


def section_serving(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.export.images import decode_and_center_crop
    from keras_effnet.export.saved_model import export_saved_model

    size = cfg.serving_image_size
    _clear()
    model = keras_effnet.build(cfg.serving_model, classes=10, width=cfg.serving_width,
                               depth=cfg.serving_depth)
    rows, load_times = [], []
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        export = export_saved_model(model, Path(work) / "models", model_name="bench",
                                    image_size=size, warmup=False)
        export_s = time.perf_counter() - started

        def load():
            tf.saved_model.load(str(export.path))
        load_times = timing.interleaved({"load": load}, cfg.repeats, warmup=cfg.warmup)["load"]
        loaded = tf.saved_model.load(str(export.path))
        serve = loaded.signatures["serving_default"]
        jpegs = _jpegs(max(cfg.serving_batches), size + 32, cfg.seed)
        decode = tf.function(lambda b: decode_and_center_crop(b, size), autograph=False)
        decoded = tf.stack([decode(tf.constant(b)) for b in jpegs])
        forward = tf.function(lambda x: model(x, training=False), autograph=False)
        for batch in cfg.serving_batches:
            body = tf.constant(jpegs[:batch])
            pixels = decoded[:batch]

            def served(body=body):
                for _ in range(cfg.serving_calls):
                    result = serve(image_bytes=body)
                return float(tf.reduce_sum(result["probabilities"]))

            def keras_call(pixels=pixels):
                for _ in range(cfg.serving_calls):
                    result = forward(pixels)
                return float(tf.reduce_sum(result))
            times = timing.interleaved({"serving": served, "keras": keras_call},
                                       cfg.repeats, warmup=cfg.warmup)
            a, b = timing.median(times["serving"]), timing.median(times["keras"])
            per = cfg.serving_calls
            rows.append({"batch": batch, "image_size": size,
                         "serving_ms": None if a is None else 1e3 * a / per,
                         "keras_ms": None if b is None else 1e3 * b / per,
                         "overhead_ratio": timing.ratio(a, b),
                         "serving_img_s": timing.per_second(batch * per, a),
                         "keras_img_s": timing.per_second(batch * per, b)})
        del loaded, serve
    load_ms = timing.median(load_times)
    return {
        "tables": [{"columns": [("batch", "batch"), ("image_size", "image"),
                                ("serving_ms", "serving_default on JPEG (ms/call)"),
                                ("keras_ms", "Keras model on decoded (ms/call)"),
                                ("overhead_ratio", "overhead ratio serving/Keras"),
                                ("serving_img_s", "serving img/s"),
                                ("keras_img_s", "Keras img/s")], "rows": rows},
                   {"columns": [("what", "what"), ("ms", "ms")],
                    "rows": [{"what": "tf.saved_model.load (median)",
                              "ms": None if load_ms is None else 1e3 * load_ms},
                             {"what": "export_saved_model (once)", "ms": 1e3 * export_s}]}],
        "rows": rows, "load_ms": None if load_ms is None else 1e3 * load_ms,
        "load_times_s": load_times, "export_s": export_s,
        "notes": [f"{cfg.serving_model} (width {cfg.serving_width}, depth "
                  f"{cfg.serving_depth}, 10 classes) exported with "
                  "keras_effnet.export.saved_model; serving_default = decode + centre "
                  "crop (map_fn) + model + top-k + labels on JPEG bytes "
                  f"(photo crops, short side {size + 32} px); Keras = the same model in a "
                  "tf.function on the same decoded, cropped tensors. "
                  f"{cfg.serving_calls} calls per round."]}


# --- 5. TFLite ------------------------------------------------------------------------

XNNPACK_DENSE = "xnnpack form, dense"
XNNPACK_SPARSE = "xnnpack form, pruned 75% (1x1)"


def _tflite_file(name: str) -> str:
    return name.replace(" ", "_").replace("%", "pct") + ".tflite"


def prepare_tflite(cfg: BenchConfig, models_dir: Path) -> dict[str, Any]:
    """Converts (and prunes) the TFLite models into ``models_dir``; runs in a child
    process, because importing tensorflow-model-optimization switches the process to
    legacy Keras. Returns sizes, sparsity and how long each step took."""
    import keras_effnet
    from keras_effnet.builder import resolve_variant
    from keras_effnet.export import prune as prune_lib
    from keras_effnet.export import rewrite, tflite
    from keras_effnet.export.measure import digits_arrays

    size = cfg.tflite_image_size
    _keras().utils.set_random_seed(cfg.seed)
    model = keras_effnet.build(cfg.tflite_model, classes=10, input_shape=(size, size, 3))
    x, y, _, _ = digits_arrays(size)
    calibration = x[:100]  # int8, before the fine-tuning's cut below
    if cfg.prune_steps_per_epoch:  # only what the fine-tuning reads
        x, y = x[:32 * cfg.prune_steps_per_epoch], y[:32 * cfg.prune_steps_per_epoch]
    info: dict[str, dict[str, Any]] = {}
    spent: dict[str, float] = {}
    mark = time.perf_counter()

    def keep(key: str, content: bytes, **extra) -> None:
        nonlocal mark
        (models_dir / _tflite_file(key)).write_bytes(content)
        info[key] = {"bytes": len(content), "gzip_bytes": tflite.gzipped_size(content),
                     **extra}
        now = time.perf_counter()
        spent[key] = round(now - mark, 1)
        mark = now

    flavours = cfg.tflite_flavours
    keep("float32", tflite.convert(model))
    if "float16" in flavours:
        keep("float16", tflite.convert(model, "float16"))
    if "int8" in flavours:
        keep("int8", tflite.convert(model, "int8", representative_images=calibration))
    for target in (t for t in (0.5, 0.75) if f"pruned{int(t * 100)}" in flavours):
        pruned = prune_lib.prune(model, (x, y), prune_lib.PruneConfig(
            target_sparsity=target, epochs=cfg.prune_epochs,
            steps_per_epoch=cfg.prune_steps_per_epoch or None),
            variant=cfg.tflite_model)
        content = tflite.convert(pruned.model, sparsity=True)
        keep(f"pruned {int(target * 100)}%", content, min_kernel_sparsity=pruned.min_sparsity,
             sparse_encoded=tflite.sparsity_encoded(content))
    if "xnnpack" in flavours and resolve_variant(cfg.tflite_model).family == "lite":
        # XNNPACK's sparse-inference form: the dense twin rewritten the same way, and
        # 75 % pruning of the 1x1 convolutions checked by PruneForLatencyOnXNNPack.
        keep(XNNPACK_DENSE, tflite.convert(rewrite.to_xnnpack_form(model, input_size=size)))
        pruned = prune_lib.prune(model, (x, y), prune_lib.PruneConfig(
            target_sparsity=0.75, epochs=cfg.prune_epochs,
            steps_per_epoch=cfg.prune_steps_per_epoch or None, policy="xnnpack"),
            variant=cfg.tflite_model, image_size=size)
        content = tflite.convert(rewrite.replay(pruned.model, lambda *args: None,
                                                input_size=size), sparsity=True)
        keep(XNNPACK_SPARSE, content, min_kernel_sparsity=pruned.min_sparsity,
             sparse_encoded=tflite.sparsity_encoded(content),
             densify_ops=tflite.densify_ops(content))
    return {"models": info, "seconds": spent}


class _Child:
    """One section function run in a fresh Python process (``python -m
    keras_effnet.bench.sections``), started now; :meth:`result` waits for it. Its
    ``out`` folder is ``self.work / "out"`` unless given."""

    def __init__(self, section: str, cfg: BenchConfig, out: Path | None = None):
        self.work = Path(tempfile.mkdtemp(prefix=f"keras_effnet_bench_{section}_"))
        self.out = out or self.work / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self.result_path = self.work / "result.json"
        config_path = self.work / "config.json"
        config_path.write_text(json.dumps(cfg.to_dict()))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                                       "3")}
        self.log = open(self.work / "output.txt", "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keras_effnet.bench.sections", section, str(config_path),
             str(self.out), str(self.result_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def result(self, timeout: float = 3600) -> dict[str, Any]:
        """The child's result, or ``{"error": ...}``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"error": f"timed out after {timeout:.0f} s"}
        finally:
            self.log.close()
        if self.proc.returncode != 0 or not self.result_path.exists():
            text = (self.work / "output.txt").read_text(errors="replace").strip()
            tail = [line for line in text.splitlines() if line.strip()][-5:]
            return {"error": f"exit status {self.proc.returncode}: " + " | ".join(tail)}
        result = json.loads(self.result_path.read_text())
        result["child_wall_s"] = round(time.perf_counter() - self.started, 1)
        return result

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


# Children started ahead of their section (see start_background).
_BACKGROUND: dict[str, _Child] = {}


def start_background(cfg: BenchConfig, sections: list[str]) -> None:
    """Starts the TFLite conversion child now, when ``cfg.tflite_background``: it is
    CPU work that is not timed, so it can overlap the first sections (their A/B rounds
    are interleaved, so ratios hold; their absolute times run slower)."""
    if "tflite" in sections and cfg.tflite_background and "tflite" not in _BACKGROUND:
        _BACKGROUND["tflite"] = _Child("_tflite_prepare", cfg)


def stop_background() -> None:
    for key in list(_BACKGROUND):
        _BACKGROUND.pop(key).cleanup()


def section_tflite(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import numpy as np

    from keras_effnet.export import tflite

    background = "tflite" in _BACKGROUND
    child = _BACKGROUND.pop("tflite", None) or _Child("_tflite_prepare", cfg)
    try:
        prepared = child.result()
        if prepared.get("error"):
            raise RuntimeError(f"TFLite conversion failed: {prepared['error']}")
        contents = {k: (child.out / _tflite_file(k)).read_bytes() for k in prepared["models"]}
    finally:
        child.cleanup()
    size = cfg.tflite_image_size
    runners = {k: tflite.LiteRunner(c, num_threads=cfg.tflite_threads)
               for k, c in contents.items()}
    image = np.random.default_rng(cfg.seed).uniform(0, 255, (size, size, 3)).astype("float32")
    per_round: dict[str, list[float]] = {k: [] for k in runners}
    for runner in runners.values():  # warm-up
        runner.latency(image, runs=2, warmup=2)
    names = list(runners)
    for r in range(cfg.repeats):  # interleaved: one block of invokes per model per round
        for k in (names if r % 2 == 0 else names[::-1]):
            per_round[k].append(timing.median(runners[k].latency(
                image, runs=cfg.tflite_runs, warmup=1)))
    base = timing.median(per_round["float32"])
    float_bytes = prepared["models"]["float32"]["bytes"]
    rows = []
    for k, info in prepared["models"].items():
        ms = timing.median(per_round[k])
        rows.append({"model": k, "bytes": info["bytes"], "gzip_bytes": info["gzip_bytes"],
                     "latency_ms": None if ms is None else 1e3 * ms,
                     "latency_vs_float32": timing.ratio(ms, base),
                     "size_vs_float32": info["bytes"] / float_bytes,
                     "min_kernel_sparsity": info.get("min_kernel_sparsity"),
                     "sparse_encoded": info.get("sparse_encoded"),
                     "times_s": per_round[k]})
    notes = []
    xnnpack = None
    if XNNPACK_SPARSE in per_round:
        twin, sparse = (timing.median(per_round[k]) for k in (XNNPACK_DENSE, XNNPACK_SPARSE))
        reason = tflite.xnnpack_sparse_unavailable()
        xnnpack = {"dense_twin_ms": None if twin is None else 1e3 * twin,
                   "pruned_ms": None if sparse is None else 1e3 * sparse,
                   "speedup": timing.ratio(twin, sparse),
                   "densify_ops": prepared["models"][XNNPACK_SPARSE].get("densify_ops"),
                   "sparse_path_unavailable": reason}
        notes.append(
            "XNNPACK-sparse: the 75 %-pruned model in XNNPACK's sparse form runs "
            + ("–" if xnnpack["speedup"] is None else f"{xnnpack['speedup']:.2f}x")
            + " as fast as its dense twin "
            f"({xnnpack['densify_ops']} sparse weights, each behind the DENSIFY op XNNPACK "
            "reads as its sparse hint)"
            + (f"; on this machine {reason}." if reason else "."))
    return {
        "xnnpack_sparse": xnnpack,
        "columns": [("model", "TFLite model"), ("bytes", "bytes"), ("gzip_bytes", "gzipped"),
                    ("size_vs_float32", "size vs float32"), ("latency_ms", "latency (ms)"),
                    ("latency_vs_float32", "latency vs float32"),
                    ("min_kernel_sparsity", "min kernel sparsity"),
                    ("sparse_encoded", "sparse encoded")],
        "rows": rows, "prepare_s": prepared.get("seconds"),
        "prepare_wall_s": prepared.get("child_wall_s"), "prepared_in_background": background,
        "notes": [f"{cfg.tflite_model} at {size} px, batch 1, 10 classes, "
                  f"{cfg.tflite_threads} thread(s), ai-edge-litert with XNNPACK "
                  "(OpResolverType.AUTO); median over rounds of the median of "
                  f"{cfg.tflite_runs} invokes, models interleaved. int8 calibrated on 100 "
                  "digits; pruned = keras_effnet.export.prune magnitude pruning (fine-tuned "
                  f"{cfg.prune_epochs} epoch(s)"
                  + (f" of {cfg.prune_steps_per_epoch} steps" if cfg.prune_steps_per_epoch
                     else "") + " on digits) converted float32 with sparse encoding where "
                  "XNNPACK accepts it. The model is not trained: sizes and latencies only. "
                  "Conversion and pruning ran in a child process"
                  + (", in the background from the start of the run" if background else "")
                  + f" ({prepared.get('child_wall_s')} s)."] + notes}


# --- 6. build time --------------------------------------------------------------------

def section_build(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import keras_effnet
    from keras_effnet.port import KERAS_APPLICATIONS_NAMES, keras_applications_model

    def timer(fn):
        _clear()
        return timing.timed(fn)

    rows = []
    for name in cfg.build_model_names():
        fns = {"ours": lambda name=name: keras_effnet.build(name)}
        if name in KERAS_APPLICATIONS_NAMES:
            fns["theirs"] = lambda name=name: keras_applications_model(name)
        times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup, timer=timer)
        a = timing.median(times["ours"])
        b = timing.median(times["theirs"]) if "theirs" in times else None
        rows.append({"model": name, "ours_s": a, "theirs_s": b, "ratio": timing.ratio(a, b),
                     "ours_times_s": times["ours"], "theirs_times_s": times.get("theirs")})
        _clear()
    return {
        "columns": [("model", "model"), ("ours_s", "keras_effnet (s)"),
                    ("theirs_s", "keras.applications (s)"), ("ratio", "ratio ours/theirs")],
        "rows": rows,
        "notes": ["Building the model (1000 classes, weights=None, default input shape) "
                  "after keras.backend.clear_session(); ratio < 1: keras_effnet builds "
                  "faster. \"–\": keras.applications has no such variant."]}


# --- 7. MFU ---------------------------------------------------------------------------

def section_mfu(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.profile import profile

    n = cfg.matmul_size
    a = tf.random.normal([n, n], seed=cfg.seed)
    b = tf.random.normal([n, n], seed=cfg.seed + 1)
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)), autograph=False)

    def peak():
        for _ in range(cfg.matmul_calls):
            value = matmul()
        return float(value)

    fns: dict[str, Callable[[], object]] = {"matmul": peak}
    macs: dict[str, int] = {}
    sizes: dict[str, int] = {}
    _clear()
    for name in cfg.mfu_models:
        size = cfg.mfu_image_size or keras_effnet.get_variant(name).eval_size
        sizes[name] = size
        model = keras_effnet.build(name, input_shape=(size, size, 3))
        images, _ = _batch(cfg.mfu_batch, size, 2, cfg.seed)
        forward = tf.function(lambda x, model=model: tf.reduce_sum(model(x, training=False)),
                              autograph=False)
        fns[name] = lambda forward=forward, images=images: float(forward(images))
        macs[name] = profile(name, image_size=size).macs
    times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup)
    t_peak = timing.median(times["matmul"])
    peak_macs = timing.per_second(cfg.matmul_calls * n ** 3, t_peak)
    rows = [{"what": f"float32 matmul {n}x{n} (peak)", "image_size": None, "batch": None,
             "macs_per_s": peak_macs, "mfu": 1.0, "times_s": times["matmul"]}]
    for name in cfg.mfu_models:
        t = timing.median(times[name])
        achieved = timing.per_second(macs[name] * cfg.mfu_batch, t)
        rows.append({"what": name, "image_size": sizes[name], "batch": cfg.mfu_batch,
                     "gmacs_per_image": macs[name] / 1e9, "macs_per_s": achieved,
                     "img_s": timing.per_second(cfg.mfu_batch, t),
                     "mfu": timing.ratio(achieved, peak_macs), "times_s": times[name]})
    for row in rows:
        row["gmacs_per_s"] = None if row["macs_per_s"] is None else row["macs_per_s"] / 1e9
    return {
        "columns": [("what", "what"), ("image_size", "image"), ("batch", "batch"),
                    ("gmacs_per_image", "GMACs/image"), ("img_s", "img/s"),
                    ("gmacs_per_s", "achieved GMACs/s"), ("mfu", "MFU (of matmul peak)")],
        "rows": rows,
        "notes": ["Inference (training=False, tf.function, no XLA), MACs from "
                  "keras_effnet.profile (convolutions and dense only); peak = "
                  "tf.linalg.matmul float32 in the same run, MACs/s = n^3 / time; "
                  "interleaved rounds."]}


# --- plots ------------------------------------------------------------------------------

def section_plots(cfg: BenchConfig, out: Path) -> dict[str, Any]:
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


# --- reliability ----------------------------------------------------------------------

def _serving_fuzz_child(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.bench import reliability
    from keras_effnet.export.saved_model import export_saved_model

    max_pixels = 250_000
    model = keras_effnet.build(reliability.TINY_ARCH, classes=10)
    with tempfile.TemporaryDirectory() as work:
        export = export_saved_model(model, Path(work) / "models", model_name="fuzz",
                                    image_size=32, warmup=False, max_pixels=max_pixels)
        serve = tf.saved_model.load(str(export.path)).signatures["serving_default"]
        inputs = reliability.serving_fuzz_inputs(cfg.serving_fuzz, cfg.seed, max_pixels)
        result = reliability.fuzz_serving(lambda body: serve(image_bytes=body), inputs)
    result["max_pixels"] = max_pixels
    return result


def section_reliability(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    from keras_effnet.bench import reliability
    from keras_effnet.data import FolderSource
    from keras_effnet.train import TrainConfig, train

    result: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        # (a) SIGKILL and resume
        started = time.perf_counter()
        kill = reliability.kill_and_resume(Path(work) / "kill", cfg.kill_points, cfg.seed)
        kill["wall_s"] = time.perf_counter() - started
        result["kill_resume"] = kill
        lost = [k["steps_lost"] for k in kill["kills"] if k.get("steps_lost") is not None]
        rows.append({"check": "(a) SIGKILL at random steps, rerun the same command",
                     "result": f"{len(kill['kills'])} kills at steps "
                               f"{[k['killed_at'] for k in kill['kills']]}, resumed from "
                               f"{[k['resumed_from'] for k in kill['kills']]}; steps lost "
                               f"{lost}; final top-1 {_pct(kill['interrupted_top1'])} vs "
                               f"uninterrupted {_pct(kill['uninterrupted_top1'])}",
                     "goal": "completes; equal top-1",
                     "ok": kill["final_returncode"] == 0 and kill["top1_difference"] == 0})
        # (b) serving fuzz, in a child process: a crash there is counted, not fatal here
        fuzz = run_in_child("_serving_fuzz", cfg, out)
        result["serving_fuzz"] = fuzz
        if fuzz.get("error"):
            rows.append({"check": f"(b) {cfg.serving_fuzz} fuzzed byte strings through "
                                  "serving_default", "result": f"process failed: "
                                                               f"{fuzz['error'][:200]}",
                         "goal": "0 crashed", "ok": False})
        else:
            rows.append({"check": f"(b) {fuzz['requests']} random, truncated, corrupted, "
                                  "oversized and valid byte strings through serving_default",
                         "result": f"errored cleanly {fuzz['errored_cleanly']}, crashed "
                                   f"{fuzz['crashed']}"
                                   + (f" {fuzz['crash_types']}" if fuzz.get("crash_types")
                                      else "")
                                   + f", ok {fuzz['ok']} (valid images: "
                                   f"{fuzz['valid_ok']}/{fuzz['valid_requests']} finite, "
                                   "summing to 1"
                                   + (f"; rejected: {fuzz['valid_rejected_kinds']}"
                                      if fuzz.get("valid_rejected_kinds") else "") + ")",
                         "goal": "0 crashed; valid all ok",
                         "ok": fuzz["crashed"] == 0 and fuzz["valid_rejected"] == 0})
        # (c) block-string fuzz
        spec = reliability.fuzz_block_strings(cfg.spec_fuzz, cfg.seed)
        result["spec_fuzz"] = spec
        rows.append({"check": f"(c) {spec['strings']} fuzzed block strings through "
                              "keras_effnet.spec.parse",
                     "result": f"BlockSpec {spec['block_spec']}, SpecError "
                               f"{spec['spec_error']}, other {spec['crashed']}; round-trip "
                               f"failures {spec['round_trip_failures']}",
                     "goal": "0 other", "ok": spec["crashed"] == 0
                     and spec["round_trip_failures"] == 0})
        # (d) messy image folder
        folder = Path(work) / "folder"
        expected = reliability.seed_image_folder(folder, seed=cfg.seed)
        source = FolderSource(str(folder))
        skipped = {os.path.relpath(p, folder) for p, _ in source.skipped}
        actual = {rel: ("skipped" if rel in skipped else "present") for rel in expected}
        mismatches = {rel: {"expected": expected[rel], "actual": actual[rel]}
                      for rel in expected if expected[rel] != actual[rel]}
        _clear()
        run = train(TrainConfig(model=reliability.TINY_ARCH, dataset="folder",
                                data_dir=str(folder), model_dir=str(Path(work) / "run"),
                                epochs=2, stages=2, batch_size=8, image_size=16,
                                min_image_size=8, eval_every_epochs=0, verbose=0,
                                seed=cfg.seed), source=source)
        result["folder"] = {"files": len(expected),
                            "expected_skipped": sum(v == "skipped" for v in expected.values()),
                            "skipped": len(skipped), "present": source.num_train + source.num_val,
                            "mismatches": mismatches,
                            "skip_reasons": {os.path.relpath(p, folder): r
                                             for p, r in source.skipped},
                            "training_completed": run.epochs_completed == 2,
                            "training_top1": run.top1, "steps": run.steps}
        f = result["folder"]
        rows.append({"check": f"(d) image folder of {f['files']} files: corrupt, empty, "
                              "non-image, grayscale, RGBA, palette, animated GIF, BMP",
                     "result": f"skipped {f['skipped']} (expected {f['expected_skipped']}), "
                               f"present {f['present']}; mismatches "
                               f"{list(mismatches) or 'none'}; a 2-epoch training run "
                               f"{'completed' if f['training_completed'] else 'FAILED'}",
                     "goal": "bad skipped, odd modes kept; run completes",
                     "ok": not mismatches and f["training_completed"]})
    result["columns"] = [("check", "check"), ("result", "result"), ("goal", "goal"),
                         ("ok", "meets goal")]
    result["rows"] = rows
    result["notes"] = ["(a) scripts/train.py on digits with a tiny two-stage arch "
                       "(16 px, 2 epochs, batch 32, checkpoint every 10 steps), killed with "
                       "SIGKILL when its progress bar (on a pseudo-terminal) passes each "
                       "random step, then rerun; steps lost = last step shown - step resumed "
                       "from (can undercount by a step: the bar refreshes every 50 ms). "
                       "(b) SavedModel of a tiny model with max_pixels=250,000; errored "
                       "cleanly = tf.errors.InvalidArgumentError, crashed = anything else or "
                       "non-finite / non-normalised output."]
    return result


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


# --- accelerator ----------------------------------------------------------------------

def gpu_name() -> str | None:
    """The first visible GPU's name, or None when TensorFlow sees no GPU."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    try:
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name") or gpus[0].name
    except (ValueError, RuntimeError):
        return gpus[0].name


def section_gpu(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.port import keras_applications_model

    name = gpu_name()
    if name is None:
        raise GPUUnavailable("--gpu needs a visible GPU; TensorFlow sees none "
                             "(tf.config.list_physical_devices('GPU') is empty).")
    keras = _keras()
    size, model_name = cfg.gpu_image_size, cfg.gpu_model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    tried, rows = [], []
    try:
        for batch in sorted(set(cfg.gpu_batches), reverse=True):
            _clear()
            try:
                images, labels = _batch(batch, size, 1000, cfg.seed)
                shape = (size, size, 3)
                ours = keras_effnet.build(model_name, input_shape=shape)
                theirs = keras_applications_model(model_name, input_shape=shape)
                fns, first = {}, {}
                for side, model in (("keras_effnet", ours), ("keras.applications", theirs)):
                    fns[side] = _steps(_train_step(model, jit=True, loss_scale=True),
                                       images, labels, cfg.gpu_steps)
                    first[side] = timing.timed(fns[side])
            except (tf.errors.ResourceExhaustedError, tf.errors.InternalError) as e:
                tried.append({"batch": batch, "fits": False,
                              "error": type(e).__name__})
                fns = ours = theirs = None
                continue
            tried.append({"batch": batch, "fits": True})
            times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup)
            a = timing.median(times["keras_effnet"])
            b = timing.median(times["keras.applications"])
            n = batch * cfg.gpu_steps
            rows.append({"model": model_name, "image_size": size, "batch": batch,
                         "precision": "mixed_float16", "jit_compile": True,
                         "ours_img_s": timing.per_second(n, a),
                         "theirs_img_s": timing.per_second(n, b),
                         "ratio": timing.ratio(b, a),
                         "ours_first_call_s": first["keras_effnet"],
                         "theirs_first_call_s": first["keras.applications"],
                         "ours_times_s": times["keras_effnet"],
                         "theirs_times_s": times["keras.applications"]})
            break
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return {
        "columns": [("model", "model"), ("image_size", "image"), ("batch", "batch"),
                    ("precision", "precision"), ("ours_img_s", "keras_effnet img/s"),
                    ("theirs_img_s", "keras.applications img/s"),
                    ("ratio", "ratio ours/theirs"),
                    ("ours_first_call_s", "ours first call (s)"),
                    ("theirs_first_call_s", "theirs first call (s)")],
        "rows": rows, "batches_tried": tried, "gpu": name,
        "notes": [f"GPU: {name}. Train step with XLA (jit_compile=True), mixed_float16 and "
                  "LossScaleOptimizer(RMSprop); the largest batch of "
                  f"{sorted(set(cfg.gpu_batches), reverse=True)} where both models fit; "
                  f"{cfg.gpu_steps} steps per round."]}


SECTION_FUNCTIONS: dict[str, Callable[[BenchConfig, Path], dict[str, Any]]] = {
    "plots": section_plots, "train": section_train, "pipeline": section_pipeline,
    "progressive": section_progressive, "serving": section_serving,
    "tflite": section_tflite, "build": section_build, "mfu": section_mfu,
    "reliability": section_reliability, "gpu": section_gpu,
    "_serving_fuzz": _serving_fuzz_child,
    "_tflite_prepare": prepare_tflite,
}


def run_in_child(section: str, cfg: BenchConfig, out: Path, timeout: float = 3600
                 ) -> dict[str, Any]:
    """Runs one section in a fresh Python process; its result, or ``{"error": ...}``."""
    child = _Child(section, cfg, out)
    try:
        return child.result(timeout)
    finally:
        child.cleanup()


def run_section(section: str, cfg: BenchConfig, out: Path,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs one section and adds its title, mode, date and wall time. A failure is
    reported in the result, not raised, so one broken section does not lose the others
    (except ``GPUUnavailable``)."""
    from keras_effnet.bench.report import utc_now

    started = time.perf_counter()
    log(f"[benchmark] {section}: {TITLES.get(section, section)} ...")
    date = utc_now()
    try:
        result = SECTION_FUNCTIONS[section](cfg, out)
    except GPUUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - reported in the table, the run goes on
        import traceback
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"[:500]}
    result.update(title=TITLES.get(section, section), mode=cfg.mode, date=date,
                  wall_s=round(time.perf_counter() - started, 1))
    log(f"[benchmark] {section}: done in {result['wall_s']} s"
        + (f" (FAILED: {result['error']})" if result.get("error") else ""))
    return result


def _child_main(argv: list[str]) -> int:
    section, config_path, out_dir, result_path = argv[1:5]
    config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in json.loads(Path(config_path).read_text()).items()})
    result = SECTION_FUNCTIONS[section](config, Path(out_dir))
    from keras_effnet.bench.report import _jsonable
    Path(result_path).write_text(json.dumps(_jsonable(result)))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(_child_main(sys.argv))
