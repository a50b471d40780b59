"""EfficientNet blocks as closures over built-in Keras layers.

Only built-in layers are used, so a model saves, reloads (safe mode) and converts with
no custom objects. ``layers`` is the layer namespace of the Keras in use: ``keras.layers``
or, for pruning with tensorflow-model-optimization, ``tf_keras.layers``; both have the
same names and arguments for everything used here.

Layer names are ``stage{s}_block{j:02d}_{op}``: stable, sortable, and good past 26
repeats (V2-XL has 32 in one stage).
"""

from __future__ import annotations

from typing import Any, Callable

from keras_effnet.scaling import ScaledBlock

__all__ = ["Ops", "conv_initializer", "dense_initializer", "squeeze_excite", "mbconv",
           "fused_mbconv", "block_name"]


def conv_initializer() -> dict[str, Any]:
    # automl / tpu draw conv kernels from an untruncated normal with std sqrt(2 / fan_out)
    # (keras.applications truncates). Also faster to sample, which shortens builds.
    return {"class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def dense_initializer() -> dict[str, Any]:
    # automl / tpu: uniform in +-1/sqrt(classes).
    return {"class_name": "VarianceScaling",
            "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def block_name(block: ScaledBlock) -> str:
    return f"stage{block.stage}_block{block.index:02d}_"


class Ops:
    """The handful of layers a block needs, with the package's defaults applied."""

    def __init__(self, layers, activation: str, bn_momentum: float, bn_epsilon: float):
        self.layers = layers
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def conv(self, filters: int, kernel_size: int, strides: int, name: str, **kwargs):
        return self.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                                  use_bias=False, kernel_initializer=conv_initializer(),
                                  name=name, **kwargs)

    def bn(self, name: str):
        return self.layers.BatchNormalization(momentum=self.bn_momentum,
                                              epsilon=self.bn_epsilon, name=name)

    def act(self, name: str):
        return self.layers.Activation(self.activation, name=name)

    def conv_bn_act(self, x, filters, kernel_size, strides, prefix, activate=True):
        x = self.conv(filters, kernel_size, strides, f"{prefix}conv")(x)
        x = self.bn(f"{prefix}bn")(x)
        return self.act(f"{prefix}activation")(x) if activate else x


def squeeze_excite(ops: Ops, reduced: int, name: str) -> Callable:
    """Global pool -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> sigmoid -> scale."""
    layers = ops.layers

    def apply(x):
        channels = x.shape[-1]
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}se_squeeze")(x)
        se = layers.Conv2D(reduced, 1, padding="same", activation=ops.activation,
                           kernel_initializer=conv_initializer(), name=f"{name}se_reduce")(se)
        se = layers.Conv2D(channels, 1, padding="same", activation="sigmoid",
                           kernel_initializer=conv_initializer(), name=f"{name}se_expand")(se)
        return layers.Multiply(name=f"{name}se_excite")([x, se])

    return apply


def _shortcut(ops: Ops, block: ScaledBlock, drop_path_rate: float, name: str, x, inputs):
    if not block.has_skip:
        return x
    if drop_path_rate > 0:
        # Per-sample drop path: one keep/drop decision per example (noise over batch only).
        x = ops.layers.Dropout(drop_path_rate, noise_shape=(None, 1, 1, 1),
                               name=f"{name}drop_path")(x)
    return ops.layers.Add(name=f"{name}add")([x, inputs])


def mbconv(ops: Ops, block: ScaledBlock, drop_path_rate: float) -> Callable:
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project."""
    name = block_name(block)

    def apply(inputs):
        channels = inputs.shape[-1]
        expanded = channels * block.expand_ratio
        x = inputs
        if block.expand_ratio != 1:
            x = ops.conv_bn_act(x, expanded, 1, 1, f"{name}expand_")
        x = ops.layers.DepthwiseConv2D(block.kernel_size, strides=block.strides, padding="same",
                                       use_bias=False, depthwise_initializer=conv_initializer(),
                                       name=f"{name}dwconv")(x)
        x = ops.bn(f"{name}dw_bn")(x)
        x = ops.act(f"{name}dw_activation")(x)
        if block.se_ratio:
            x = squeeze_excite(ops, max(1, int(channels * block.se_ratio)), name)(x)
        x = ops.conv_bn_act(x, block.output_filters, 1, 1, f"{name}project_", activate=False)
        return _shortcut(ops, block, drop_path_rate, name, x, inputs)

    return apply


def fused_mbconv(ops: Ops, block: ScaledBlock, drop_path_rate: float) -> Callable:
    """Fused-MBConv (automl): kxk expand conv -> [SE] -> 1x1 project; with expand ratio 1
    a single kxk conv -> BN -> act."""
    name = block_name(block)

    def apply(inputs):
        channels = inputs.shape[-1]
        x = inputs
        if block.expand_ratio != 1:
            x = ops.conv_bn_act(x, channels * block.expand_ratio, block.kernel_size,
                                block.strides, f"{name}expand_")
        if block.se_ratio:
            x = squeeze_excite(ops, max(1, int(channels * block.se_ratio)), name)(x)
        if block.expand_ratio != 1:
            x = ops.conv_bn_act(x, block.output_filters, 1, 1, f"{name}project_",
                                activate=False)
        else:
            x = ops.conv_bn_act(x, block.output_filters, block.kernel_size, block.strides,
                                f"{name}project_")
        return _shortcut(ops, block, drop_path_rate, name, x, inputs)

    return apply
