"""Deployment: TF-Serving SavedModels, (pruned, quantised) TFLite models, and their checks.

Modules (``config``, ``job``, ``context``, ``report``, ``tflite`` and ``prune`` import
TensorFlow only when used, so ``scripts/export.py`` checks a request before paying for
the import):

* :mod:`~keras_effnet.export.saved_model`: versioned, atomic TF-Serving export.
* :mod:`~keras_effnet.export.serving_config`: ``models.config``, batching, warmup.
* :mod:`~keras_effnet.export.images`: in-graph decoding with a decompression-bomb guard.
* :mod:`~keras_effnet.export.tflite`: float32 / float16 / dynamic / int8 conversion and
  an ai-edge-litert runner.
* :mod:`~keras_effnet.export.prune`: magnitude pruning through the tf_keras twin
  (tensorflow-model-optimization and tf_keras imported inside its functions only).
* :mod:`~keras_effnet.export.rewrite`: layer rewrites (the XNNPACK form, 1x1 conv as dense).
* :mod:`~keras_effnet.export.config`: :class:`ExportConfig`, the request, checked
  without TensorFlow.
* :mod:`~keras_effnet.export.job`: the whole export of a training run (the CLI's
  library): the format registry and the run.
* :mod:`~keras_effnet.export.context`: what each format's ``export(model, context)`` gets.
* :mod:`~keras_effnet.export.report`: the artifacts written and their measured figures.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> defining module; resolved on first access (PEP 562).
_EXPORTS = {
    "Artifact": "report",
    "BatchingConfig": "serving_config",
    "ExportConfig": "config",
    "ExportContext": "context",
    "ExportError": "config",
    "ExportReport": "report",
    "LiteRunner": "tflite",
    "OtherModelError": "saved_model",
    "PruneConfig": "prune",
    "PruneResult": "prune",
    "SavedModelExport": "saved_model",
    "ServingSpec": "saved_model",
    "TFLiteExport": "tflite",
    "VersionExistsError": "saved_model",
    "convert": "tflite",
    "decode_and_center_crop": "images",
    "decode_image": "images",
    "export_saved_model": "saved_model",
    "next_version": "saved_model",
    "run": "job",
    "to_xnnpack_form": "rewrite",
    "update_models_config": "serving_config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"keras_effnet.export.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_effnet.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
