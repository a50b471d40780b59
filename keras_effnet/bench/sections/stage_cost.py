"""9. What a progressive stage costs: the trainer's step at each image size of the main
job's plan, against its MACs.

Progressive learning saves time only where a smaller image costs less. This section
times, in one process and interleaved rounds, the step ``scripts/train.py`` runs (fused
BatchNorm and RMSProp, one trace for every size: height and width unknown, as the
trainer's relaxed input shapes) at every size of the main job's plan, on the main job's
network and batch, and again at twice the batch. Each row gives the step's time per
image against the last (largest) size's, next to the MACs ratio from ``profile()``.

How to read it: if a small size's time ratio is well above its MACs ratio, the small
size runs the kernels less efficiently. Twice the batch tells which kind of cost that
is: a fixed cost per step (Python, dispatch, per-op overhead) halves per image at twice
the batch; a kernel that is slow on small feature maps does not. The plan is resolved
from ``main_job_flags`` as the trainer resolves it (``--model``, ``--dataset``,
``--image_size``, ``--min_image_size``, ``--stages``, ``--width``, ``--depth``, ...).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session, random_batch, train_step

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "main_job_config", "plan_sizes"]


def main_job_config(cfg: BenchConfig, flags: tuple[str, ...] | None = None) -> Any:
    """The :class:`~keras_effnet.train.config.TrainConfig` of the main job: its defaults,
    with the ``--name=value`` flags of ``main_job_flags`` that are training options
    (export flags and others are not: ignored here)."""
    import dataclasses

    from keras_effnet.cli import parse_value
    from keras_effnet.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {"epochs": cfg.main_job_epochs, "batch_size": cfg.main_job_batch}
    for flag in cfg.main_job_flags if flags is None else flags:
        name, sep, text = flag.lstrip("-").partition("=")
        if sep and name in fields:
            changes[name] = parse_value(name, hints[name], text)
    return TrainConfig(**changes)


def plan_sizes(config: Any) -> tuple[Any, list[int]]:
    """(the main job's variant, its plan's distinct image sizes, ascending)."""
    from keras_effnet.train import progressive as progressive_lib

    variant, recipe = config.resolved_model()
    plan = progressive_lib.progressive_plan(recipe, config.epochs, config.stages,
                                            config.resolved_progressive_mode(),
                                            config.resolved_min_image_size(recipe))
    return variant, sorted({stage.image_size for stage in plan})


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Per size and batch: ms per step and per image, ratios to the largest size."""
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.data.sources import get_source
    from keras_effnet.profile import profile

    config = main_job_config(cfg)
    variant, sizes = plan_sizes(config)
    classes = get_source(config.dataset, config.data_dir).num_classes
    clear_session()
    model = keras_effnet.build(variant, classes=classes, input_shape=(None, None, 3))
    step = train_step(model, False, fused=True)
    # One trace for every size, as the trainer (steps.relax_shapes).
    relaxed = tf.function(step.python_function, autograph=False, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, classes], tf.float32)])
    batches = [config.batch_size] + ([2 * config.batch_size] if cfg.stage_cost_double_batch
                                     else [])
    fns: dict[str, Callable[[], object]] = {}
    for size in sizes:
        for batch in batches:
            images, labels = random_batch(batch, size, classes, cfg.seed)

            def repeat(images=images, labels=labels) -> float:
                loss = None
                for _ in range(cfg.stage_cost_steps):
                    loss = relaxed(images, labels)
                return float(loss)
            fns[f"{size}|{batch}"] = repeat
    times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup)
    macs = {size: profile(variant, image_size=size, classes=classes).macs for size in sizes}
    largest = sizes[-1]
    rows = []
    for batch in batches:
        per_image = {size: timing.median(times[f"{size}|{batch}"]) / (cfg.stage_cost_steps
                                                                       * batch)
                     for size in sizes}
        for size in sizes:
            time_ratio = timing.ratio(per_image[size], per_image[largest])
            macs_ratio = macs[size] / macs[largest]
            rows.append({
                "image_size": size, "batch": batch,
                "ms_per_step": per_image[size] * batch * 1000.0,
                "ms_per_image": per_image[size] * 1000.0,
                "time_ratio": time_ratio, "macs_ratio": macs_ratio,
                "pixels_ratio": (size / largest) ** 2,
                "efficiency": timing.ratio(macs_ratio, time_ratio),
                "times_s": times[f"{size}|{batch}"]})
    if len(batches) == 2:
        small, large = batches
        for row in rows:
            if row["batch"] == large:
                base = next(r for r in rows if r["batch"] == small
                            and r["image_size"] == row["image_size"])
                row["per_image_vs_batch"] = timing.ratio(row["ms_per_image"],
                                                         base["ms_per_image"])
    return {
        "columns": [("image_size", "image"), ("batch", "batch"),
                    ("ms_per_step", "ms/step (median)"), ("ms_per_image", "ms/image"),
                    ("time_ratio", f"time/image vs {largest} px"),
                    ("macs_ratio", f"MACs vs {largest} px"),
                    ("pixels_ratio", f"pixels vs {largest} px"),
                    ("efficiency", "MACs ratio / time ratio"),
                    ("per_image_vs_batch", f"ms/image vs batch {batches[0]}")],
        "rows": rows, "model": variant.name, "sizes": sizes, "batches": batches,
        "notes": [f"{variant.name} ({classes} classes), the trainer's step (fused "
                  f"BatchNorm and RMSProp, no XLA, one trace for every size), "
                  f"{cfg.stage_cost_steps} steps per timed round, {cfg.repeats} "
                  f"interleaved rounds on random images; the sizes are the main job's "
                  f"plan ({', '.join(str(s) for s in sizes)} px). MACs from "
                  f"keras_effnet.profile."]}


SECTION = Section("stage_cost", "9. What a progressive stage costs: the trainer's step "
                  "at each of the main job's image sizes", cpu_only=True, run=run,
                  display=13)
