"""Dropout rates the traced train step reads at run time: a new stage, no new trace.

A Keras ``Dropout`` layer's rate is a Python float, so a traced step keeps the rate it was
traced with, and a progressive plan that changes the rate per stage (paper mode: dropout
0.1 -> the recipe's, and stochastic depth with it) paid a trace per stage: 7-10 s each
for the main job's network on 2 CPU cores, against 8-15 s for a whole epoch.

:class:`DropoutRates` keeps one float32 variable per ``Dropout`` layer of a model (the head
dropout and every block's drop path), and :meth:`DropoutRates.traced` swaps those layers'
``call``, only for the code traced inside it (as :mod:`keras_effnet.train.fused_bn` does
for BatchNorm), for one that reads the variable. The layers stay Keras' own: inference,
export and saved models never see the swap. The swapped call draws its seed from the
layer's own seed generator and runs the op Keras runs (``stateless_dropout``), so at equal
rates it drops what Keras drops, and the kept values agree to float32 rounding (the
op's scale ``1 / (1 - rate)`` comes from a float32 rate, not a Python float; tested); at
rate 0 it passes the inputs through, still drawing a seed.

:meth:`DropoutRates.assign` sets a stage's rates: the head's to the stage's dropout and
each drop path's to its built rate times ``drop_path_scale`` (see
:func:`keras_effnet.train.progressive.drop_path_scale`); the layers' ``rate`` attributes
follow, so a model saved after the run says what it trained with last.
"""

from __future__ import annotations

from typing import Any

from keras_effnet.train.fused_bn import layers_of, swapped_calls

__all__ = ["DropoutRates", "dropout_layers", "scaled_drop_path_rate", "DROP_PATH_SUFFIX"]

DROP_PATH_SUFFIX = "drop_path"  # keras_effnet.blocks names each block's "<block>drop_path"
_SWAPPED = "_keras_effnet_rate_call"


def dropout_layers(model: Any) -> list:
    """Every ``keras.layers.Dropout`` in ``model``, nested models included."""
    import keras

    return layers_of(model, keras.layers.Dropout)


def scaled_drop_path_rate(built: float, drop_path_scale: float) -> float:
    """A drop path's rate in a stage: its built rate times ``drop_path_scale`` (>= 0),
    kept below 1 (the trainer's rule and :func:`fit_progressive`'s)."""
    if not drop_path_scale >= 0.0:
        raise ValueError("drop_path_scale must be >= 0. "
                         f"Received: drop_path_scale={drop_path_scale!r}")
    return min(built * drop_path_scale, 0.99)


def _seed(layer: Any) -> Any:
    import tensorflow as tf

    seed = layer.seed_generator.next()
    if seed.dtype != tf.int32:  # the stateless ops take int32 seeds (as Keras casts them)
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


def _rate_call(rate: Any):
    def call(self: Any, inputs: Any, training: Any = False) -> Any:
        import tensorflow as tf

        if not training:
            return inputs
        shape = tf.shape(inputs)
        noise = self.noise_shape
        noise_shape = (None if noise is None else
                       tf.stack([shape[i] if n is None else n for i, n in enumerate(noise)]))
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=tf.cast(rate, inputs.dtype), noise_shape=noise_shape,
            seed=_seed(self))
    return call


class DropoutRates:
    """A float32 variable per ``Dropout`` layer of ``model``, created where this is
    constructed (under a strategy's scope for a distributed run), holding the layer's
    current rate. ``head`` names the head dropout layer; the layers whose name ends in
    ``drop_path`` are the blocks' stochastic depth."""

    def __init__(self, model: Any, head: str) -> None:
        import tensorflow as tf

        self.head = head
        self.layers = dropout_layers(model)
        self.built_rates = {layer.name: float(layer.rate) for layer in self.layers}
        self.variables = {
            layer.name: tf.Variable(float(layer.rate), trainable=False, dtype=tf.float32,
                                    name=f"rate_{i}")
            for i, layer in enumerate(self.layers)}

    def values(self) -> dict[str, float]:
        """Layer name -> the rate its variable holds now."""
        return {name: float(variable.numpy()) for name, variable in self.variables.items()}

    def assign(self, dropout: float, drop_path_scale: float = 1.0) -> None:
        """The head's rate becomes ``dropout``; each drop path's its built rate times
        ``drop_path_scale`` (a rate stays below 1)."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
        scaled_drop_path_rate(0.0, drop_path_scale)  # checks the scale before any assign
        for layer in self.layers:
            if layer.name == self.head:
                rate = float(dropout)
            elif layer.name.endswith(DROP_PATH_SUFFIX):
                rate = scaled_drop_path_rate(self.built_rates[layer.name], drop_path_scale)
            else:
                continue
            self.variables[layer.name].assign(rate)
            layer.rate = rate

    def traced(self) -> Any:
        """Within the block, the layers' training pass reads their variables (see the
        module docstring); on exit they are as before."""
        return swapped_calls(self.layers,
                             lambda layer: _rate_call(self.variables[layer.name]), _SWAPPED)
