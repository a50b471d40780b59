"""Exponential moving average of model weights, for every tf.distribute strategy.

Averages every floating-point model variable, BatchNorm moving statistics included (as
google/automl's ``ema_vars``). The decay follows ``tf.train.ExponentialMovingAverage``'s
``num_updates`` rule, ``min(decay, (1 + step) / (10 + step))`` (see
:func:`keras_effnet.train.schedules.ema_decay`), so short runs average over their last
~10 % of steps instead of remembering the random initialisation.

Updates run in cross-replica context through ``strategy.extended.update``, so each
device averages its own copy of each (identical) weight and nothing crosses the network.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import tensorflow as tf

__all__ = ["WeightEMA"]


def _tf_variable(variable):
    """The ``tf.Variable`` (possibly distributed) behind a Keras 3 variable."""
    return getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) \
        else variable


class WeightEMA:
    """Shadow copies of ``variables``; create it inside ``strategy.scope()``.

    ``averages`` (a list of ``tf.Variable``) is what a checkpoint must hold.
    """

    def __init__(self, variables: Sequence, decay: float = 0.9999, strategy=None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1). Received: decay={decay!r}")
        self.decay = float(decay)
        self.strategy = strategy or tf.distribute.get_strategy()
        self._variables = [_tf_variable(v) for v in variables
                           if _tf_variable(v).dtype.is_floating]
        with self.strategy.scope():
            self.averages = [tf.Variable(v.read_value(), trainable=False,
                                         name=f"ema_{i}")
                             for i, v in enumerate(self._variables)]
            self._backup = [tf.Variable(tf.zeros_like(v.read_value()), trainable=False,
                                        name=f"ema_backup_{i}")
                            for i, v in enumerate(self._variables)]
        self._swapped = False

    def decay_at(self, step: tf.Tensor | int) -> tf.Tensor:
        """The decay used at ``step``: ``min(decay, (1 + step) / (10 + step))``."""
        step = tf.cast(step, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + step) / (10.0 + step))

    def update(self, step: tf.Tensor | int) -> None:
        """One EMA step; call in cross-replica context (after ``strategy.run``)."""
        decay = self.decay_at(step)

        def apply(average, value):
            value = tf.cast(value, average.dtype)
            return average.assign_sub((average - value) * (1.0 - tf.cast(decay, average.dtype)))

        for average, variable in zip(self.averages, self._variables):
            self.strategy.extended.update(average, apply, args=(variable,), group=False)

    def _copy(self, targets, sources) -> None:
        for target, source in zip(targets, sources):
            self.strategy.extended.update(target, lambda t, s: t.assign(s), args=(source,),
                                          group=False)

    @tf.function(autograph=False)
    def _swap_in(self):
        self._copy(self._backup, self._variables)
        self._copy(self._variables, self.averages)

    @tf.function(autograph=False)
    def _swap_out(self):
        self._copy(self._variables, self._backup)

    def reset(self) -> None:
        """Set the averages to the current weights."""
        with self.strategy.scope():
            self._copy(self.averages, self._variables)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; restored after."""
        if self._swapped:
            yield
            return
        with self.strategy.scope():
            self._swap_in()
        self._swapped = True
        try:
            yield
        finally:
            with self.strategy.scope():
                self._swap_out()
            self._swapped = False

    def copy_to_model(self) -> None:
        """Overwrite the model's weights with the averages (for the final export)."""
        with self.strategy.scope():
            self._copy(self._variables, self.averages)
