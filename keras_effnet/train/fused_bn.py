"""BatchNormalization's training pass as one fused op while a train step is traced.

Keras 3 computes a training-mode ``BatchNormalization`` from separate ops (the batch
moments, then normalise, scale and shift; the same again backwards), each a pass over the
activations. TensorFlow's ``FusedBatchNormV3`` does the forward pass in one op and the
backward pass in one more: Keras 2 (tf_keras) used it by default (``fused=True``), Keras 3
has no such path. In the main job's train step on 2 CPU cores it took about a fifth off a
step at 80 and 128 px; the benchmark's train section times the trainer's fused step against
a plain one (README, "Performance").

:func:`fused_batchnorm` swaps the ``call`` of a model's BatchNormalization layers only
for the code traced inside it, so the model's layers stay Keras' own: inference, export
and saved models never see the swap. The results are Keras': normalised with the batch
mean and the biased batch variance, and ``moving = moving * momentum + batch * (1 -
momentum)`` (the op returns the Bessel-corrected variance, which is undone), in float32
whatever the input dtype. A layer or call the fused op cannot serve (renorm, synchronized
statistics, a mask, a non-4-D input or an axis other than the last, a frozen layer,
inference) runs Keras' own ``call``.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

__all__ = ["fused_batchnorm", "batchnorm_layers", "layers_of", "swapped_calls"]

_SWAPPED = "_keras_effnet_fused_call"


def layers_of(model: Any, kind: type) -> list:
    """Every layer of class ``kind`` in ``model``, nested models included, in order."""
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, kind):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


def batchnorm_layers(model: Any) -> list:
    """Every ``keras.layers.BatchNormalization`` in ``model``, nested models included."""
    import keras

    return layers_of(model, keras.layers.BatchNormalization)


def _fusable(layer: Any, inputs: Any, training: Any, mask: Any) -> bool:
    rank = len(inputs.shape)
    return (training is True and layer.trainable and mask is None and rank == 4
            and not layer.renorm and not layer.synchronized
            and layer.axis in (-1, rank - 1))


def _fused_call(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
    import tensorflow as tf

    if not _fusable(self, inputs, training, mask):
        return type(self).call(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)  # as Keras: statistics in float32 for any input
    channels = x.shape[-1]
    gamma = (tf.cast(self.gamma, tf.float32) if self.scale
             else tf.ones([channels], tf.float32))
    beta = (tf.cast(self.beta, tf.float32) if self.center
            else tf.zeros([channels], tf.float32))
    empty = tf.zeros([0], tf.float32)
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=empty, variance=empty,
        epsilon=float(self.epsilon), exponential_avg_factor=1.0, data_format="NHWC",
        is_training=True)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # biased, as Keras
    momentum = self.momentum  # a float, or the variable BatchNorm recalibration sets
    moving_mean = tf.cast(self.moving_mean, tf.float32)
    moving_variance = tf.cast(self.moving_variance, tf.float32)
    self.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


@contextlib.contextmanager
def swapped_calls(layers: list, call_for: Any, marker: str) -> Iterator[None]:
    """Within the block, each of ``layers`` not already marked with ``marker`` runs
    ``call_for(layer)`` (a function of ``(self, inputs, ...)``) as its ``call``; on exit
    they are Keras' own again. Meant around the code a ``tf.function`` traces."""
    swapped = [layer for layer in layers if marker not in vars(layer)]
    try:
        for layer in swapped:
            # object.__setattr__: past Keras' attribute tracking, an instance-level call
            object.__setattr__(layer, "call", types.MethodType(call_for(layer), layer))
            object.__setattr__(layer, marker, True)
        yield
    finally:
        for layer in swapped:
            for name in ("call", marker):
                if name in vars(layer):
                    object.__delattr__(layer, name)


def fused_batchnorm(model: Any) -> Any:
    """Within the block, ``model``'s BatchNormalization layers run their training pass as
    ``FusedBatchNormV3`` (see the module docstring); on exit they are as before.

    Meant around the model call a ``tf.function`` traces: the trace keeps the fused ops.
    """
    return swapped_calls(batchnorm_layers(model), lambda layer: _fused_call, _SWAPPED)
