"""Transfer: fine-tuning pretrained weights on a new task with few labels, against
training the same network from scratch for the same number of steps.

The task is made from the embedded digits (``DigitsSource(classes=...,
train_per_class=...)``): pretrain on the digits 0-4 (their whole training split), then
learn the digits 5-9 from ``transfer_per_class`` labelled images per class, every other
5-9 image held out. Per seed (the few labelled images, the initialisation and the data
order all follow it) two arms train for the same epochs and batch, so the same steps:

* fine-tuned: ``init_weights`` = the pretraining run (a new classifier: its classes are
  not these), ``freeze`` / ``unfreeze_at_epoch`` / ``unfreeze_lr_factor`` as configured;
* scratch: the same network from a random initialisation, nothing frozen.

Both run through the Trainer, as ``scripts/train.py`` does (the digits' class subset is a
source option the script does not expose, so the section hands the trainer its source).
Reported: held-out top-1, median and min (and max) over seeds per arm, the per-seed gain,
the training time, and the pretraining's time and accuracy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "summarise", "gains", "PRETRAIN_CLASSES", "TARGET_CLASSES"]

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
ARMS = ("fine-tuned", "scratch")


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm (in :data:`ARMS` order) from the per-seed ``runs`` (each with
    ``arm``, ``seed``, ``top1``, ``steps``, ``train_s``, ``wall_s``): the median, min and
    max held-out top-1 over seeds, the steps, and the median train and wall seconds."""
    rows = []
    for arm in ARMS:
        group = [r for r in runs if r["arm"] == arm]
        if not group:
            continue
        top1 = [r["top1"] for r in group if r["top1"] is not None]
        steps = sorted({r["steps"] for r in group})
        rows.append({"arm": arm, "seeds": len(group),
                     "median_top1": timing.median(top1) if top1 else None,
                     "min_top1": min(top1) if top1 else None,
                     "max_top1": max(top1) if top1 else None,
                     "steps": steps[0] if len(steps) == 1 else steps,
                     "train_s": timing.median([r["train_s"] for r in group]),
                     "wall_s": timing.median([r["wall_s"] for r in group])})
    return rows


def gains(runs: Sequence[dict[str, Any]]) -> dict[int, float | None]:
    """Per seed: fine-tuned top-1 minus scratch top-1 (None when either is missing)."""
    by = {(r["arm"], r["seed"]): r["top1"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    return {seed: (by[("fine-tuned", seed)] - by[("scratch", seed)]
                   if by.get(("fine-tuned", seed)) is not None
                   and by.get(("scratch", seed)) is not None else None)
            for seed in seeds}


def _config(cfg: BenchConfig, model_dir: str, seed: int, epochs: int, batch: int,
            **extra: Any):
    from keras_effnet.train import TrainConfig
    return TrainConfig(model=cfg.transfer_model, width=cfg.transfer_width,
                       depth=cfg.transfer_depth, image_size=cfg.transfer_image_size,
                       stages=1, epochs=epochs, batch_size=batch, seed=seed,
                       eval_every_epochs=0, model_dir=model_dir, verbose=0, **extra)


def _train(config, source) -> tuple[Any, float]:
    from keras_effnet.train import Trainer
    clear_session()
    started = time.perf_counter()
    result = Trainer(config, source=source, log=lambda _: None).run()
    return result, time.perf_counter() - started


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Pretrain on digits 0-4, then per seed fine-tune and train from scratch on 5-9."""
    from keras_effnet.data.digits import DigitsSource

    runs: list[dict[str, Any]] = []
    fine_tune = dict(freeze=cfg.transfer_freeze,
                     unfreeze_at_epoch=cfg.transfer_unfreeze_at_epoch or None,
                     unfreeze_lr_factor=cfg.transfer_unfreeze_lr_factor)
    with tempfile.TemporaryDirectory() as work:
        pretrain_dir = str(Path(work) / "pretrain")
        pretrained, pretrain_s = _train(
            _config(cfg, pretrain_dir, cfg.seed, cfg.transfer_pretrain_epochs,
                    cfg.transfer_pretrain_batch),
            DigitsSource(seed=cfg.seed, classes=PRETRAIN_CLASSES))
        for index, seed in enumerate(cfg.transfer_seeds):
            source = DigitsSource(seed=seed, classes=TARGET_CLASSES,
                                  train_per_class=cfg.transfer_per_class)
            for arm in (ARMS if index % 2 == 0 else ARMS[::-1]):  # order alternated
                extra = dict(init_weights=pretrain_dir, **fine_tune) if arm == ARMS[0] else {}
                result, wall = _train(_config(cfg, str(Path(work) / f"{arm}-{seed}"), seed,
                                              cfg.transfer_epochs, cfg.transfer_batch,
                                              **extra), source)
                runs.append({"arm": arm, "seed": seed, "top1": result.top1,
                             "steps": result.steps, "held_out": result.eval_count,
                             "train_s": round(sum(h["seconds"] for h in result.history), 1),
                             "wall_s": round(wall, 1)})
    per_seed = gains(runs)
    known = [g for g in per_seed.values() if g is not None]
    rows = summarise(runs)
    held_out = sorted({r["held_out"] for r in runs})
    unfreeze = (f", unfrozen (BatchNorm still frozen) from epoch "
                f"{cfg.transfer_unfreeze_at_epoch + 1} at x{cfg.transfer_unfreeze_lr_factor:g}"
                " the learning rate" if cfg.transfer_unfreeze_at_epoch else "")
    return {
        "columns": [("arm", "arm"), ("seeds", "seeds"), ("median_top1", "median top-1"),
                    ("min_top1", "min top-1"), ("max_top1", "max top-1"), ("steps", "steps"),
                    ("train_s", "train time (s, median)"), ("wall_s", "wall (s, median)")],
        "rows": rows, "runs": runs,
        "pretrain": {"top1": pretrained.top1, "steps": pretrained.steps,
                     "held_out": pretrained.eval_count, "wall_s": round(pretrain_s, 1)},
        "gain_points": {str(s): None if g is None else round(100 * g, 2)
                        for s, g in per_seed.items()},
        "notes": [
            f"{cfg.transfer_model} (width {cfg.transfer_width:g}, depth "
            f"{cfg.transfer_depth:g}) at {cfg.transfer_image_size} px, fixed size, the "
            "recipe's RMSProp / EMA / augmentation, through the Trainer. Pretrained on "
            f"digits 0-4 ({cfg.transfer_pretrain_epochs} epochs, batch "
            f"{cfg.transfer_pretrain_batch}, seed {cfg.seed}): held-out top-1 "
            f"{pretrained.top1:.2%} in {pretrain_s:.0f} s wall.",
            f"Digits 5-9 from {cfg.transfer_per_class} labelled images per class (held out: "
            f"every other 5-9 image, {'/'.join(map(str, held_out))} images); "
            f"{cfg.transfer_epochs} epochs at batch {cfg.transfer_batch} for both arms, "
            f"seeds {', '.join(map(str, cfg.transfer_seeds))} (the labelled images, the "
            "initialisation and the data order follow the seed). fine-tuned = the "
            f"pretraining run's weights, a new classifier, freeze={cfg.transfer_freeze}"
            f"{unfreeze}; scratch = random initialisation, nothing frozen.",
            "Gain (fine-tuned - scratch, points) per seed: "
            + ", ".join(f"seed {s}: {'-' if g is None else f'{100 * g:+.1f}'}"
                        for s, g in per_seed.items())
            + (f"; median {100 * timing.median(known):+.1f}" if known else "")
            + ". Train time = the epochs' training seconds (traces included: one per "
            "freeze phase); wall = the whole run, evaluation (and, for scratch, the BatchNorm "
            "recalibration) and saving included, pretraining not."]}


SECTION = Section("transfer", "Transfer: fine-tuning vs from scratch on few labels (digits)",
                  cpu_only=True, run=run, display=12)
