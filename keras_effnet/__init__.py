"""keras_effnet: EfficientNet V1, V1-lite and V2 for Keras 3, from block-spec strings.

The model library (specs, scaling, variants, profile, build) imports TensorFlow only when
a model is built; ``data``, ``train`` and ``export`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_effnet.builder import build, pyramid_channels, resolve_variant
from keras_effnet.port import from_keras_applications
from keras_effnet.profile import Profile, profile, scale_to_macs
from keras_effnet.scaling import compound, round_filters, round_repeats
from keras_effnet.spec import BlockSpec, SpecError, format_arch, parse, parse_arch
from keras_effnet.spec import format as format_spec
from keras_effnet.variants import Variant, custom_variant, get_variant, list_models
from keras_effnet.weights.table import list_weights

__version__ = "0.1.0"

# name -> module that defines it; resolved on first access (PEP 562).
_LAZY = {
    "data": "keras_effnet.data",
    "train": "keras_effnet.train",
    "export": "keras_effnet.export",
    "progressive_plan": "keras_effnet.train.progressive",
    "Stage": "keras_effnet.train.progressive",
    "fit_progressive": "keras_effnet.train.fit",
    "TrainConfig": "keras_effnet.train.trainer",
    "get_source": "keras_effnet.data.sources",
    "freeze": "keras_effnet.train.finetune",
    "load_weights": "keras_effnet.weights",
}

__all__ = [
    "BlockSpec", "Profile", "SpecError", "Stage", "TrainConfig", "Variant", "build",
    "compound", "custom_variant", "data", "export", "fit_progressive", "format_arch",
    "format_spec", "freeze", "from_keras_applications", "get_source", "get_variant",
    "list_models", "list_weights", "load_weights", "parse", "parse_arch", "profile", "progressive_plan", "pyramid_channels",
    "resolve_variant",
    "round_filters", "round_repeats", "scale_to_macs", "train",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_effnet' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
