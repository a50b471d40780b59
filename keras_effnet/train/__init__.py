"""Training: progressive-learning plans, the distributed trainer, ``fit_progressive``.

Importing this package does not import TensorFlow or Keras: plans, schedules and
:class:`TrainConfig` are pure Python, and the trainer loads TensorFlow when it runs.
"""

from keras_effnet.train.config import TrainConfig, TrainResult
from keras_effnet.train.fit import fit_progressive, set_dropout
from keras_effnet.train.progressive import Recipe, Stage, progressive_plan, resolve_recipe
from keras_effnet.train.schedules import ema_decay, learning_rate, scaled_learning_rate
from keras_effnet.train.trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "NonFiniteLossError", "Recipe", "Stage", "TrainConfig", "TrainResult", "Trainer",
    "WarmupDecaySchedule", "ema_decay", "fit_progressive", "learning_rate",
    "progressive_plan", "resolve_recipe", "scaled_learning_rate", "set_dropout", "train",
]


def __getattr__(name):
    if name == "WarmupDecaySchedule":  # the one Keras class: imported on first use
        from keras_effnet.train.lr_schedule import WarmupDecaySchedule
        return WarmupDecaySchedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
