"""Weights from keras.applications' EfficientNet / EfficientNetV2 into keras_effnet models.

The two builders create the same weighted layers in the same order (stem, then per block
expand, depthwise, squeeze-excite, project, then head and classifier), so weights move
layer by layer; every pair is checked for kind and shape before anything is copied. The
only weighted layer keras.applications has and we do not is V1's ``Normalization``
(7 numbers of preprocessing state): keras_effnet normalises with fixed constants.
"""

from __future__ import annotations

import os
from typing import Any

from keras_effnet.builder import CLASSIFIER_LAYER

__all__ = ["PortError", "from_keras_applications", "keras_applications_model",
           "KERAS_APPLICATIONS_NAMES"]

KERAS_APPLICATIONS_NAMES = {
    **{f"efficientnet-b{i}": f"EfficientNetB{i}" for i in range(8)},
    **{f"efficientnetv2-b{i}": f"EfficientNetV2B{i}" for i in range(4)},
    "efficientnetv2-s": "EfficientNetV2S",
    "efficientnetv2-m": "EfficientNetV2M",
    "efficientnetv2-l": "EfficientNetV2L",
}
_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "BatchNormalization": "bn",
          "Dense": "dense"}


class PortError(ValueError):
    """The source and target models do not have the same architecture."""


def keras_applications_model(name: str, **kwargs: Any):
    """The keras.applications model for a keras_effnet variant name (weights=None by
    default, so nothing is downloaded)."""
    import keras
    if name not in KERAS_APPLICATIONS_NAMES:
        raise PortError(f"keras.applications has no counterpart of {name!r}; it has "
                        f"{', '.join(KERAS_APPLICATIONS_NAMES)}")
    kwargs.setdefault("weights", None)
    return getattr(keras.applications, KERAS_APPLICATIONS_NAMES[name])(**kwargs)


def _weighted_layers(model) -> list:
    layers = []
    for layer in model.layers:
        kind = _KINDS.get(type(layer).__name__)
        if kind is not None:
            layers.append((kind, layer))
        elif type(layer).__name__ not in ("Normalization",) and layer.weights and \
                not hasattr(layer, "layers"):
            raise PortError(f"Unexpected weighted layer {layer.name!r} "
                            f"({type(layer).__name__}) in {model.name!r}")
    return layers


def from_keras_applications(source: Any, model: Any) -> Any:
    """Copies a keras.applications EfficientNet(V2) into ``model`` (in place; returned).

    Args:
        source: a keras.applications EfficientNet / EfficientNetV2 model, or the path of
            a weights file saved from one (``.h5`` or ``.weights.h5``); for a path, the
            keras.applications model is built from ``model.name`` and its top.
        model: a keras_effnet model of the same variant, top and class count.

    Raises:
        PortError: the architectures differ; nothing is copied then.
    """
    if isinstance(source, (str, os.PathLike)):
        source = _load_source(os.fspath(source), model)
    src = _weighted_layers(source)
    dst = _weighted_layers(model)
    if len(src) != len(dst):
        raise PortError(f"{source.name!r} has {len(src)} weighted layers, {model.name!r} has "
                        f"{len(dst)}: they are not the same architecture (variant, "
                        "include_top and classes must match).")
    pairs = []
    for (skind, slayer), (dkind, dlayer) in zip(src, dst):
        sw, dw = slayer.get_weights(), dlayer.get_weights()
        if skind != dkind or [w.shape for w in sw] != [w.shape for w in dw]:
            raise PortError(
                f"Layer mismatch: {slayer.name!r} ({skind}, {[w.shape for w in sw]}) vs "
                f"{dlayer.name!r} ({dkind}, {[w.shape for w in dw]}): the models are not the "
                "same architecture; nothing was copied.")
        pairs.append((dlayer, sw))
    for layer, weights in pairs:
        layer.set_weights(weights)
    return model


def _load_source(path: str, model: Any):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No weights file at {path!r}. Download the keras.applications "
                                "weights once on a machine with internet and pass its path.")
    include_top = any(layer.name == CLASSIFIER_LAYER for layer in model.layers)
    kwargs: dict[str, Any] = {"include_top": include_top, "weights": path}
    if include_top:
        kwargs["classes"] = model.get_layer(CLASSIFIER_LAYER).units
    return keras_applications_model(model.name, **kwargs)
