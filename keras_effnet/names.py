"""The layer names other modules look layers up by, in one place below everything that
uses them: the builder names layers with them; porting, loading weights, freezing,
pruning and the trainer find layers by them."""

from __future__ import annotations

__all__ = ["INPUT_LAYER", "DROPOUT_LAYER", "CLASSIFIER_LAYER", "HEAD_PREFIX",
           "PYRAMID_STRIDES", "pyramid_key"]

INPUT_LAYER = "image"
DROPOUT_LAYER = "top_dropout"
CLASSIFIER_LAYER = "predictions"
# The head: the 1x1 conv, BatchNorm and activation after the last block.
HEAD_PREFIX = "top_"
# Feature-pyramid levels: P{i} is the last block's output at stride 2**i (keras-hub's keys;
# tensorflow/tpu's reduction_{i} endpoints).
PYRAMID_STRIDES = (2, 4, 8, 16, 32)


def pyramid_key(stride: int) -> str:
    """``"P3"`` for stride 8."""
    return f"P{stride.bit_length() - 1}"
