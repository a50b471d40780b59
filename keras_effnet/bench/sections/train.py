"""1. Training throughput: keras_effnet vs keras.applications, one train step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session, repeat_step, train_step

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run"]


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Images per second of both models' train steps (with and without XLA), and an A/A
    control: keras_effnet's model built twice."""
    from keras_effnet.port import KERAS_APPLICATIONS_NAMES, keras_applications_model

    rows = []
    size, batch = cfg.train_image_size, cfg.train_batch
    for name in cfg.train_models:
        if name not in KERAS_APPLICATIONS_NAMES:
            rows.append({"model": name, "note": "no keras.applications counterpart"})
            continue
        clear_session()
        shape = (size, size, 3)
        plain_step, images, labels, ours = ctx.steps.get(
            (name, size, batch, cfg.train_classes), cfg.seed)
        theirs = keras_applications_model(name, classes=cfg.train_classes, input_shape=shape)
        fns, first = {}, {}
        for jit in cfg.train_jit:
            for side, model in (("keras_effnet", ours), ("keras.applications", theirs)):
                key = (side, jit)
                step = plain_step if (side, jit) == ("keras_effnet", False) else \
                    train_step(model, jit)
                fns[key] = repeat_step(step, images, labels, cfg.train_steps)
                first[key] = timing.timed(fns[key])  # trace (and XLA compile)
        if False in cfg.train_jit:
            # What keras_effnet's trainer runs: the same model, BatchNorm and RMSProp fused.
            fns[("fused", False)] = repeat_step(train_step(ours, False, fused=True),
                                                images, labels, cfg.train_steps)
            first[("fused", False)] = timing.timed(fns[("fused", False)])
        twin = None
        if cfg.train_control and False in cfg.train_jit:
            # A/A control: the same keras_effnet model built a second time, in the same
            # rounds. How far two identical models drift apart is the noise floor.
            import keras_effnet
            twin = keras_effnet.build(name, classes=cfg.train_classes, input_shape=shape)
            fns[("twin", False)] = repeat_step(train_step(twin, False), images, labels,
                                               cfg.train_steps)
            first[("twin", False)] = timing.timed(fns[("twin", False)])
        times = timing.interleaved({f"{s}|{j}": fn for (s, j), fn in fns.items()},
                                   cfg.repeats, warmup=cfg.warmup)
        images_per_round = batch * cfg.train_steps
        for jit in cfg.train_jit:
            a = timing.median(times[f"keras_effnet|{jit}"])
            b = timing.median(times[f"keras.applications|{jit}"])
            fused = timing.median(times.get(f"fused|{jit}", [])) or None
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
                "fused_img_s": timing.per_second(images_per_round, fused),
                "fused_ratio": timing.ratio(b, fused),
                "fused_round_ratios": timing.spread(timing.paired_ratios(
                    times[f"keras.applications|{jit}"], times[f"fused|{jit}"]))
                if fused else None,
                "ours_first_call_s": first[("keras_effnet", jit)],
                "fused_first_call_s": first.get(("fused", jit)),
                "theirs_first_call_s": first[("keras.applications", jit)],
                "ours_times_s": times[f"keras_effnet|{jit}"],
                "theirs_times_s": times[f"keras.applications|{jit}"],
                "twin_times_s": times.get(f"twin|{jit}"),
                "fused_times_s": times.get(f"fused|{jit}")})
        del ours, theirs, twin, fns, plain_step
        ctx.steps.trim()  # keeps only a step a later section reserved
    return {
        "columns": [("model", "model"), ("image_size", "image"), ("batch", "batch"),
                    ("jit_compile", "jit_compile"), ("ours_img_s", "keras_effnet img/s"),
                    ("theirs_img_s", "keras.applications img/s"),
                    ("ratio", "ratio ours/theirs"),
                    ("round_ratios", "per-round ratios (min–max)"),
                    ("control_ratio", "A/A control: ours built twice"),
                    ("fused_img_s", "trainer's step (fused ops) img/s"),
                    ("fused_ratio", "ratio trainer's step/theirs"),
                    ("fused_round_ratios", "its per-round ratios"),
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
                  "Trainer's step (no XLA): keras_effnet's model in the same step with "
                  "BatchNorm's training pass and the RMSProp update fused, as "
                  "keras_effnet.train traces them (keras_effnet.train.fused_bn, "
                  "fused_rmsprop), timed in the same rounds. "
                  "First call = trace (+ XLA compile) + the first round."]
        + ([] if True in cfg.train_jit else [
            "jit_compile=True is left out of these settings: XLA's CPU compile of one train "
            "step takes minutes per model (add it with --set=train_jit=false,true)."])}


SECTION = Section("train", "1. Training throughput: keras_effnet vs keras.applications",
                  cpu_only=True, run=run, display=2)
