"""2. Input pipeline vs train step: can the folder source feed the model?"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import StepKey, repeat_step

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "step_key"]


def step_key(cfg: BenchConfig) -> StepKey:
    """The train step this section times: a 1000-class model on a batch in memory, as
    in section 1 (the class count does not change its cost), so it can reuse that one."""
    return (cfg.pipeline_model, cfg.pipeline_image_size, cfg.pipeline_batch,
            cfg.train_classes)


def prepare(cfg: BenchConfig, ctx: Context) -> None:
    """Asks the training section to keep this section's step once traced."""
    ctx.steps.reserve(step_key(cfg))


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Images per second of one epoch of the folder pipeline (with and without the
    augmentations) against the train step's."""
    from keras_effnet.bench.photos import write_jpeg_folder
    from keras_effnet.data import Augment, FolderSource

    size, batch = cfg.pipeline_image_size, cfg.pipeline_batch
    with tempfile.TemporaryDirectory() as work:
        source = FolderSource(write_jpeg_folder(Path(work) / "jpegs", cfg.pipeline_images,
                                                cfg.seed))
        counter = {"epoch": 0}

        def pipeline(randaug: float, mixup: float):
            augment = Augment(randaug_magnitude=randaug, mixup_alpha=mixup,
                              cutmix_alpha=mixup)

            def one_epoch():
                counter["epoch"] += 1  # a new epoch: a new order and new augmentations
                ds = source.train_dataset(image_size=size, batch_size=batch,
                                          augment=augment, seed=cfg.seed,
                                          epoch=counter["epoch"])
                n = 0
                for images, _ in ds:
                    n += int(images.shape[0])
                counter["images"] = n
                return n
            return one_epoch

        key = step_key(cfg)
        traced = ctx.steps.get(key, cfg.seed)
        step = repeat_step(traced.step, traced.images, traced.labels,
                           cfg.pipeline_train_steps)
        times = timing.interleaved({
            "pipeline": pipeline(cfg.pipeline_randaug, cfg.pipeline_mixup),
            "pipeline_no_aug": pipeline(0.0, 0.0), "train_step": step},
            cfg.repeats, warmup=cfg.warmup)
        per_epoch = counter["images"]
    del traced, step
    ctx.steps.release(key)
    step_rate = timing.per_second(batch * cfg.pipeline_train_steps,
                                  timing.median(times["train_step"]))
    rows = []
    for name, label in (("pipeline", f"decode, crop, flip, RandAugment "
                                      f"{cfg.pipeline_randaug:g}, MixUp/CutMix "
                                      f"{cfg.pipeline_mixup:g}"),
                        ("pipeline_no_aug", "decode, crop, flip only")):
        rate = timing.per_second(per_epoch, timing.median(times[name]))
        rows.append({"what": label, "image_size": size, "batch": batch,
                     "pipeline_img_s": rate, "train_step_img_s": step_rate,
                     "ratio": timing.ratio(rate, step_rate), "goal": ">= 3",
                     "meets_goal": None if rate is None or step_rate is None
                     else rate / step_rate >= 3, "times_s": times[name]})
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


SECTION = Section("pipeline", "2. Input pipeline vs train step", cpu_only=True, run=run,
                  display=3, prepare=prepare)
