"""One mapping from keras_effnet's layer names to each weight source's names.

keras_effnet names its weighted layers ``stem_conv``, ``stage{s}_block{j:02d}_{op}`` and
``top_conv`` / ``predictions`` (``blocks.py``). Every foreign source is read through this
module: a source's weights become ``{our layer name: arrays}``, then one loader
(:func:`keras_effnet.weights.assign`) checks and assigns them. The sources:

* ``keras``: keras.applications' EfficientNet and EfficientNetV2 layer names
  (``block2a_expand_conv``; V1 calls the depthwise conv ``dwconv``, V2 ``dwconv2``).
* ``official``: the variable names of Google's TensorFlow checkpoints (tensorflow/tpu for
  V1 and lite, google/automl for V2), e.g.
  ``efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel``. Inside a block scope
  the official code names layers as TensorFlow numbers them, per class in call order:
  ``conv2d`` then ``conv2d_1``; ``tpu_batch_normalization``, ``_1``, ``_2``; the
  squeeze-excite convs under ``se/``. So a block with an expand conv has its project
  conv at ``conv2d_1``, one without at ``conv2d``.

The functions here read layer names only (no TensorFlow): the block structure is in
them (an ``expand_conv`` or not, a ``dwconv`` or not, the order of the blocks).
"""

from __future__ import annotations

import re
from typing import Iterable

from keras_effnet.names import CLASSIFIER_LAYER, HEAD_PREFIX

__all__ = ["LayerRef", "weighted_layers", "keras_applications_names", "official_names",
           "official_variables", "SOURCES", "WEIGHT_LEAVES"]

SOURCES = ("keras", "official")
_BLOCK = re.compile(r"stage(\d+)_block(\d+)_(.+)")
# Each Keras layer class's weights, in Keras order, by their official (TF) leaf names.
WEIGHT_LEAVES = {
    "Conv2D": ("kernel",), "Conv2D+bias": ("kernel", "bias"),
    "DepthwiseConv2D": ("depthwise_kernel",),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "Dense": ("kernel", "bias"),
}


class LayerRef(tuple):
    """``(name, class name, number of weights)`` of one weighted layer of ours."""

    __slots__ = ()

    def __new__(cls, name: str, kind: str, count: int):
        return super().__new__(cls, (name, kind, count))

    name = property(lambda self: self[0])
    kind = property(lambda self: self[1])
    count = property(lambda self: self[2])


def weighted_layers(model) -> list[LayerRef]:
    """Our model's weighted layers in model order (Keras 3 or tf_keras)."""
    return [LayerRef(layer.name, type(layer).__name__, len(layer.weights))
            for layer in model.layers if layer.weights and not hasattr(layer, "layers")]


def _blocks(names: Iterable[str]) -> dict[tuple[int, int], int]:
    """(stage, index) -> 0-based global block index, in model order."""
    order: dict[tuple[int, int], int] = {}
    for name in names:
        match = _BLOCK.fullmatch(name)
        if match:
            order.setdefault((int(match[1]), int(match[2])), len(order))
    return order


def keras_applications_names(names: Iterable[str], family: str) -> dict[str, str]:
    """Our layer name -> keras.applications' layer name, for V1 (``family="v1"``) or V2.

    The classifier keeps its name (``predictions``, as keras.applications).
    """
    dwconv = "dwconv2" if family == "v2" else "dwconv"
    ops = {"dwconv": dwconv, "dw_bn": "bn"}
    out = {}
    for name in names:
        match = _BLOCK.fullmatch(name)
        if match is None:
            out[name] = name  # stem_conv, stem_bn, top_conv, top_bn, predictions
            continue
        stage, index, op = int(match[1]), int(match[2]), match[3]
        # keras.applications letters the repeats of a stage: chr(97 + j), 0-based.
        out[name] = f"block{stage}{chr(96 + index)}_{ops.get(op, op)}"
    return out


def official_names(names: Iterable[str]) -> dict[str, str]:
    """Our layer name -> the official checkpoints' layer scope, below the model's scope
    (``stem/conv2d``, ``blocks_3/tpu_batch_normalization_1``, ``head/dense``)."""
    names = list(names)
    blocks = _blocks(names)
    present = set(names)
    bn = "tpu_batch_normalization"
    out = {"stem_conv": "stem/conv2d", "stem_bn": f"stem/{bn}",
           f"{HEAD_PREFIX}conv": "head/conv2d", f"{HEAD_PREFIX}bn": f"head/{bn}",
           CLASSIFIER_LAYER: "head/dense"}
    for name in names:
        match = _BLOCK.fullmatch(name)
        if match is None:
            continue
        stage, index, op = int(match[1]), int(match[2]), match[3]
        prefix = f"stage{stage}_block{index:02d}_"
        scope = f"blocks_{blocks[(stage, index)]}"
        expands = f"{prefix}expand_conv" in present
        # TensorFlow numbers a scope's layers per class in call order (_1, _2, ...).
        bns = ([f"{prefix}expand_bn"] if expands else []) + (
            [f"{prefix}dw_bn"] if f"{prefix}dwconv" in present else []) + [f"{prefix}project_bn"]
        convs = ([f"{prefix}expand_conv"] if expands else []) + [f"{prefix}project_conv"]
        if name in bns:
            out[name] = f"{scope}/{_numbered(bn, bns.index(name))}"
        elif name in convs:
            out[name] = f"{scope}/{_numbered('conv2d', convs.index(name))}"
        elif op == "dwconv":
            out[name] = f"{scope}/depthwise_conv2d"
        elif op == "se_reduce":
            out[name] = f"{scope}/se/conv2d"
        elif op == "se_expand":
            out[name] = f"{scope}/se/conv2d_1"
        else:
            raise ValueError(f"No official name for layer {name!r}")
    return {name: out[name] for name in names}


def _numbered(base: str, i: int) -> str:
    return base if i == 0 else f"{base}_{i}"


def official_variables(layers: Iterable[LayerRef], scope: str) -> dict[str, tuple[str, ...]]:
    """Our layer name -> the official variable names of its weights, in Keras order,
    under the model scope ``scope`` (``"efficientnet-b0"``)."""
    layers = list(layers)
    names = official_names(layer.name for layer in layers)
    out = {}
    for layer in layers:
        kind = layer.kind if not (layer.kind == "Conv2D" and layer.count == 2) else "Conv2D+bias"
        leaves = WEIGHT_LEAVES.get(kind)
        if leaves is None or len(leaves) != layer.count:
            raise ValueError(f"No official weights for layer {layer.name!r} ({layer.kind}, "
                             f"{layer.count} weights)")
        out[layer.name] = tuple(f"{scope}/{names[layer.name]}/{leaf}" for leaf in leaves)
    return out
