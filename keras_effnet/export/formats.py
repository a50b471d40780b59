"""Which export formats exist, and what they can be asked for.

A format is a module of ``keras_effnet.export`` with ``export(model, context) ->
list[Artifact]`` and one line in :data:`FORMATS`; this module imports none of them (most
import TensorFlow), so :class:`~keras_effnet.export.config.ExportConfig` can check a
request against the registry in a second.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

__all__ = ["Format", "FORMATS", "QUANTIZE_MODES", "MIN_REPRESENTATIVE_IMAGES"]

# TFLite flavours: float32, float16 weights, dynamic-range int8, full-integer int8.
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
# Full-integer calibration needs enough training images to see each activation's range
# (the TFLite guide's figure).
MIN_REPRESENTATIVE_IMAGES = 100


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: ``keras_effnet.export.<module>.export(model, context)``,
    imported when the format runs.

    Attributes:
        module: the module's name in ``keras_effnet.export``.
        writes_pruned: ``config -> bool``: whether, when there is a pruned model, the
            format gets it rather than the dense one.
    """

    module: str
    writes_pruned: Callable[[Any], bool]

    def export(self, model: Any, context: Any) -> list:
        module = importlib.import_module(f"keras_effnet.export.{self.module}")
        return module.export(model, context)


# Written in this order whatever the order of ExportConfig.formats.
FORMATS: dict[str, Format] = {
    "saved_model": Format("saved_model", writes_pruned=lambda config: config.serve_pruned),
    "tflite": Format("tflite", writes_pruned=lambda config: True),
}
