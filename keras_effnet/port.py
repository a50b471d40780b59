"""Weights from keras.applications' EfficientNet / EfficientNetV2 into keras_effnet models.

Layers are paired by name through :func:`keras_effnet.weights.mapping.keras_applications_names`
(``stage2_block01_expand_conv`` is keras' ``block2a_expand_conv``) and assigned by
:func:`keras_effnet.weights.assign`, which checks every shape first. The one weighted
layer keras.applications has and we do not is V1's ``Normalization`` (7 numbers of
preprocessing state): keras_effnet normalises with fixed constants.
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
# keras.applications' weighted layers that keras_effnet holds as constants.
_PREPROCESSING = ("Normalization",)


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


def from_keras_applications(source: Any, model: Any) -> Any:
    """Copies a keras.applications EfficientNet(V2) into ``model`` (in place; returned).

    Args:
        source: a keras.applications EfficientNet / EfficientNetV2 model, or the path of
            a weights file saved from one (``.h5`` or ``.weights.h5``).
        model: a keras_effnet model of the same variant, top and class count.

    Raises:
        PortError: the architectures differ; nothing is copied then.
    """
    from keras_effnet.weights import assign, load_weights
    from keras_effnet.weights.mapping import keras_applications_names, weighted_layers
    try:
        if isinstance(source, (str, os.PathLike)):
            if not os.path.exists(source):
                raise FileNotFoundError(
                    f"No weights file at {os.fspath(source)!r}. keras.applications' "
                    "ImageNet weights: keras_effnet.build(name, weights='imagenet') "
                    "downloads them once into keras' cache.")
            load_weights(model, source)  # a classifier of another count stays new
        else:
            layers = weighted_layers(model)
            family = "v2" if "efficientnetv2" in source.name else "v1"
            names = keras_applications_names([layer.name for layer in layers], family)
            theirs = {layer.name: layer for layer in source.layers
                      if layer.weights and type(layer).__name__ not in _PREPROCESSING}
            mapped = {ours: (names[ours], tuple(theirs[names[ours]].get_weights()))
                      for ours in names if names[ours] in theirs}
            _check_classifiers(source, model)
            taken = {label for label, _ in mapped.values()}
            assign(model, mapped, [n for n in theirs if n not in taken], source.name)
    except ValueError as e:
        raise PortError(f"{e} (variant, include_top and classes must match; nothing was "
                        "copied)") from None
    return model


def _check_classifiers(source: Any, model: Any) -> None:
    def units(m):
        layer = next((x for x in m.layers if x.name == CLASSIFIER_LAYER), None)
        return None if layer is None else int(layer.units)
    if units(source) != units(model):
        raise PortError(f"The classifiers differ ({units(source)} vs {units(model)} "
                        "classes; None: no top): variant, include_top and classes must "
                        "match; nothing was copied.")
