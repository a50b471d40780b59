"""Learning-rate and EMA-decay schedules as pure functions of the global step.

The functions here are plain Python (tested against hand-computed values);
:class:`keras_effnet.train.lr_schedule.WarmupDecaySchedule` evaluates the same formula
with ``keras.ops`` inside the optimizer, and a test checks the two agree step by step.

Recipe (google/automl ``WarmupLearningRateSchedule``; docs/reference.md §5):

* ``base_lr = 0.016 * global_batch / 256``;
* linear warm-up from 0: ``base_lr * step / warmup_steps`` while ``step < warmup_steps``;
* then ``exponential``: ``base_lr * 0.97 ** floor(step / decay_steps)`` with
  ``decay_steps = 2.4 epochs`` (counted from step 0, as automl, not from the end of
  warm-up), or ``cosine``: ``0.5 * base_lr * (1 + cos(pi * step / total_steps))``;
* never below ``min_lr``.
"""

from __future__ import annotations

import math

__all__ = ["scaled_learning_rate", "learning_rate", "ema_decay", "check_schedule",
           "DECAY_KINDS"]

DECAY_KINDS = ("exponential", "cosine", "constant")


def scaled_learning_rate(global_batch_size: int, base: float = 0.016,
                         reference_batch: int = 256) -> float:
    """The linear scaling rule: ``base * global_batch_size / reference_batch``."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1. Received: {global_batch_size}")
    return base * global_batch_size / reference_batch


def check_schedule(base_lr: float, steps_per_epoch: int, warmup_epochs: float,
                   decay_epochs: float, decay_factor: float, kind: str,
                   total_steps: int | None) -> None:
    """Raises ValueError naming the first bad schedule argument."""
    if kind not in DECAY_KINDS:
        raise ValueError(f"kind must be one of {DECAY_KINDS}. Received: kind={kind!r}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0. Received: base_lr={base_lr!r}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1. Received: {steps_per_epoch!r}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0. Received: {warmup_epochs!r}")
    if kind == "exponential" and not (decay_epochs > 0 and 0 < decay_factor <= 1):
        raise ValueError("exponential decay needs decay_epochs > 0 and 0 < decay_factor <= 1. "
                         f"Received: decay_epochs={decay_epochs!r}, "
                         f"decay_factor={decay_factor!r}")
    if kind == "cosine" and not (total_steps and total_steps > 0):
        raise ValueError(f"cosine decay needs total_steps > 0. Received: {total_steps!r}")


def learning_rate(step: int, *, base_lr: float, steps_per_epoch: int,
                  warmup_epochs: float = 5.0, decay_epochs: float = 2.4,
                  decay_factor: float = 0.97, kind: str = "exponential",
                  total_steps: int | None = None, min_lr: float = 0.0) -> float:
    """Learning rate at global ``step`` (0-based): linear warm-up, then decay."""
    check_schedule(base_lr, steps_per_epoch, warmup_epochs, decay_epochs, decay_factor, kind,
           total_steps)
    if kind == "exponential":
        decay_steps = steps_per_epoch * decay_epochs
        lr = base_lr * decay_factor ** math.floor(step / decay_steps)
    elif kind == "cosine":
        lr = 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        lr = base_lr
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        lr = base_lr * step / warmup_steps
    return max(lr, min_lr)


def ema_decay(step: int, decay: float = 0.9999) -> float:
    """EMA decay at ``step`` updates: ``min(decay, (1 + step) / (10 + step))``.

    The ``num_updates`` rule of ``tf.train.ExponentialMovingAverage``, which the
    official trainers use: early in training (and for a short run as a whole) the
    average follows the weights closely instead of remembering the random
    initialisation; after ~100k steps the recipe's 0.9999 applies. For a run of N
    steps the average ends up spanning roughly the last 10 % of them.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1). Received: decay={decay!r}")
    return min(decay, (1.0 + step) / (10.0 + step))
