"""Input pipelines: labelled image sources and the EfficientNet augmentation recipe.

``get_source(name)`` returns a ``Source`` ("mnist5k", "digits", "folder", "tfrecord",
"tfds:<name>") whose ``train_dataset`` / ``eval_dataset`` are parallel, prefetched
``tf.data`` pipelines yielding float32 pixels in [0, 255] (the models normalise
internally) and float32 one-hot labels, with a known length (``cardinality()``) where the
source knows it. ``train_dataset(augment=Augment(...))`` says which crop and augmentation to
apply (``Augment.none()``: the eval view, nothing random but the flip).
``decode_and_center_crop`` is the eval preprocessing for serving signatures.

Names load on first use (PEP 562): ``Augment`` needs no TensorFlow, so progressive plans
that carry one stay importable without it.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> defining module; resolved on first access.
_EXPORTS = {
    "Augment": "augment",
    "DigitsSource": "digits",
    "FolderSource": "folder",
    "IMAGE_EXTENSIONS": "folder",
    "Mixer": "transforms",
    "Mnist5kSource": "mnist",
    "RandAugment": "transforms",
    "SOURCE_NAMES": "sources",
    "Source": "base",
    "TFDSSource": "tfds",
    "TFRecordSource": "tfrecord",
    "center_crop_and_resize": "transforms",
    "check_image_file": "folder",
    "decode_and_center_crop": "transforms",
    "get_source": "sources",
    "make_example": "tfrecord",
    "random_crop_and_resize": "transforms",
    "randaug_factor": "transforms",
    "write_tfrecord": "tfrecord",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
