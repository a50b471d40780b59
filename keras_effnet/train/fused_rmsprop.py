"""RMSProp whose update is one TensorFlow op per variable.

Keras 3's ``RMSprop.update_step`` builds the update from about fifteen small ops per
variable (square, scale, add, assign for the mean square; add, sqrt, divide for the
increment; scale, add, assign for the momentum; then the subtraction). With a few hundred
variables that is thousands of ops a step, and on a CPU, where an EfficientNet step at a
small image size is dominated by per-op cost, they are a large share of it. TensorFlow's
``ResourceApplyRMSProp`` computes the same update in one kernel::

    ms  <- rho * ms + (1 - rho) * grad ** 2
    mom <- momentum * mom + lr * grad / sqrt(ms + epsilon)
    var <- var - mom

which is Keras' formula term for term (``velocity`` is ``ms``, ``momentum`` is ``mom``).
:func:`rmsprop` returns a ``keras.optimizers.RMSprop`` that uses it for dense gradients
of the TensorFlow backend and falls back to Keras' own update for everything else
(``centered=True``, ``momentum=0``, sparse gradients, another backend). The variables, the
slot variables and their names are Keras' own, so checkpoints are interchangeable.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["rmsprop"]


def _handle(variable: Any) -> Any:
    """The resource handle of a Keras or TensorFlow variable (inside a distribution
    strategy's ``update`` call: the local replica's)."""
    import keras

    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@functools.lru_cache(maxsize=None)
def _fused_class() -> type:
    import keras
    import tensorflow as tf

    class FusedRMSprop(keras.optimizers.RMSprop):
        """``keras.optimizers.RMSprop`` with ``ResourceApplyRMSProp`` as the update."""

        def update_step(self, gradient, variable, learning_rate):
            if (self.centered or self.momentum <= 0 or keras.backend.backend() != "tensorflow"
                    or isinstance(gradient, tf.IndexedSlices)):
                return super().update_step(gradient, variable, learning_rate)
            index = self._get_variable_index(variable)
            dtype = variable.dtype
            tf.raw_ops.ResourceApplyRMSProp(
                var=_handle(variable), ms=_handle(self._velocities[index]),
                mom=_handle(self._momentums[index]),
                lr=tf.cast(learning_rate, dtype), rho=tf.cast(self.rho, dtype),
                momentum=tf.cast(self.momentum, dtype),
                epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
            return None

    # Keras names an optimizer (and so its variables' paths) after its class: the same
    # name as Keras' RMSprop keeps the paths identical.
    FusedRMSprop.__name__ = "RMSprop"
    return FusedRMSprop


def rmsprop(**kwargs: Any) -> Any:
    """A ``keras.optimizers.RMSprop(**kwargs)`` whose dense TensorFlow update is one
    ``ResourceApplyRMSProp`` op per variable (same results, same slot variables)."""
    return _fused_class()(**kwargs)
