"""The warm-up + decay learning rate as a Keras ``LearningRateSchedule``.

Same formula as :func:`keras_effnet.train.schedules.learning_rate` (pure Python, the
tested reference), evaluated with ``keras.ops`` on the optimizer's step.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_effnet.train.schedules import check_schedule

__all__ = ["WarmupDecaySchedule", "PhasedSchedule"]


class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """:func:`keras_effnet.train.schedules.learning_rate` as a Keras
    ``LearningRateSchedule`` (serialisable with ``get_config``)."""

    def __init__(self, base_lr: float, steps_per_epoch: int, warmup_epochs: float = 5.0,
                 decay_epochs: float = 2.4, decay_factor: float = 0.97,
                 kind: str = "exponential", total_steps: int | None = None,
                 min_lr: float = 0.0):
        check_schedule(base_lr, steps_per_epoch, warmup_epochs, decay_epochs, decay_factor,
                       kind, total_steps)
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)
        self.decay_epochs = float(decay_epochs)
        self.decay_factor = float(decay_factor)
        self.kind = kind
        self.total_steps = int(total_steps) if total_steps else None
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.kind == "exponential":
            decay_steps = self.steps_per_epoch * self.decay_epochs
            lr = self.base_lr * ops.power(self.decay_factor, ops.floor(step / decay_steps))
        elif self.kind == "cosine":
            progress = ops.minimum(step, float(self.total_steps)) / float(self.total_steps)
            lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        else:
            lr = ops.ones_like(step) * self.base_lr
        warmup_steps = int(self.warmup_epochs * self.steps_per_epoch)
        if warmup_steps > 0:
            lr = ops.where(step < warmup_steps, self.base_lr * step / warmup_steps, lr)
        return ops.maximum(lr, self.min_lr)

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "warmup_epochs": self.warmup_epochs, "decay_epochs": self.decay_epochs,
                "decay_factor": self.decay_factor, "kind": self.kind,
                "total_steps": self.total_steps, "min_lr": self.min_lr}


@keras.saving.register_keras_serializable(package="keras_effnet")
class PhasedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule(step)``, times ``factor`` from step ``boundary`` on."""

    def __init__(self, schedule: Any, boundary: int, factor: float):
        self.schedule = schedule
        self.boundary = int(boundary)
        self.factor = float(factor)

    def __call__(self, step):
        lr = self.schedule(step)
        return ops.where(ops.cast(step, "float32") >= self.boundary, lr * self.factor, lr)

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "boundary": self.boundary, "factor": self.factor}

    @classmethod
    def from_config(cls, config: dict) -> "PhasedSchedule":
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"], custom_objects={"WarmupDecaySchedule": WarmupDecaySchedule})
        return cls(**config)
