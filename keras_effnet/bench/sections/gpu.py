"""Accelerator: training throughput with XLA and mixed precision (``gpu`` only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import (clear_session, random_batch, repeat_step,
                                               train_step)

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "gpu_name", "GPUUnavailable"]


class GPUUnavailable(RuntimeError):
    """The accelerator section was asked for on a machine without a visible GPU."""


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


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Training throughput with XLA and mixed precision, at the largest batch of
    ``gpu_batches`` where both models fit."""
    import keras
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.port import keras_applications_model

    name = gpu_name()
    if name is None:
        raise GPUUnavailable("the gpu section needs a visible GPU; TensorFlow sees none "
                             "(tf.config.list_physical_devices('GPU') is empty).")
    size, model_name = cfg.gpu_image_size, cfg.gpu_model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    tried, rows = [], []
    try:
        for batch in sorted(set(cfg.gpu_batches), reverse=True):
            clear_session()
            try:
                images, labels = random_batch(batch, size, 1000, cfg.seed)
                shape = (size, size, 3)
                ours = keras_effnet.build(model_name, input_shape=shape)
                theirs = keras_applications_model(model_name, input_shape=shape)
                fns, first = {}, {}
                for side, model in (("keras_effnet", ours), ("keras.applications", theirs)):
                    fns[side] = repeat_step(train_step(model, jit=True, loss_scale=True),
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


SECTION = Section("gpu", "Accelerator: training throughput with XLA and mixed precision",
                  cpu_only=False, run=run, display=11)
