"""What every format's ``export(model, context)`` is given: :class:`ExportContext`.

It carries the request, the models, the names and sizes every artifact shares, and the
held-out measurement: top-1 on the held-out split, and top-1 agreement with the Keras
model an artifact was made from (the dense model, or the pruned one).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from keras_effnet.export.config import ExportConfig

__all__ = ["ExportContext", "HELD_OUT_BATCH_SIZE"]

HELD_OUT_BATCH_SIZE = 64

# images -> probabilities [N, classes], for float32 images [N, H, W, 3] in [0, 255].
Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class ExportContext:
    """One export in progress.

    Attributes:
        config: the request.
        model: the trained (or untrained) float32 Keras 3 model.
        pruned: its pruned copy, None without pruning.
        class_names, image_size, variant: the model's classes, evaluation size and
            :class:`~keras_effnet.variants.Variant`.
        source: the data source of the held-out split and of calibration / fine-tuning
            images (None when no dataset is known).
        name, version: the served model name and the version being written.
        log: where progress lines go.
    """

    config: ExportConfig
    model: Any
    class_names: list[str]
    image_size: int
    variant: Any
    source: Any | None
    name: str
    version: int
    pruned: Any | None = None
    log: Callable[[str], None] = print
    # Held-out truth, and the top-1 predictions of `model` and of `pruned` that
    # measure() compares artifacts with; set by measure_model() and measure_pruned().
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), int))
    reference: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), int))
    pruned_reference: np.ndarray | None = None

    @property
    def origin(self) -> str:
        """Where the model came from: the run directory, or the variant asked for."""
        return str(self.config.model_dir or self.config.model)

    def held_out(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, integer labels) numpy batches of the held-out split, up to
        ``config.max_eval_images`` images (nothing without a source)."""
        if self.source is None:
            return
        limit, seen = self.config.max_eval_images, 0
        for images, labels in self.source.eval_dataset(image_size=self.image_size,
                                                        batch_size=HELD_OUT_BATCH_SIZE):
            images, labels = images.numpy(), np.argmax(labels.numpy(), -1)
            if limit is not None:
                images, labels = images[:limit - seen], labels[:limit - seen]
            if len(images) == 0:
                return
            seen += len(images)
            yield images, labels
            if limit is not None and seen >= limit:
                return

    def top1_predictions(self, predict: Predict) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class, true class) of every held-out image."""
        predictions, labels = [], []
        for images, y in self.held_out():
            predictions.append(np.argmax(predict(images), -1))
            labels.append(y)
        if not predictions:
            return np.zeros((0,), int), np.zeros((0,), int)
        return np.concatenate(predictions), np.concatenate(labels)

    def measure_model(self) -> dict[str, Any]:
        """Predicts the held-out split with ``model`` (the reference of every artifact
        made from it) and returns its figures."""
        self.reference, self.labels = self.top1_predictions(self.model.predict_on_batch)
        return {"top1": _fraction_equal(self.reference, self.labels),
                "eval_images": len(self.labels)}

    def measure_pruned(self, pruned: Any) -> dict[str, Any]:
        """Sets ``pruned``, predicts the held-out split with it (the reference of every
        artifact made from it) and returns its figures, agreement with ``model``'s."""
        self.pruned = pruned
        self.pruned_reference, _ = self.top1_predictions(pruned.predict_on_batch)
        return {"top1": _fraction_equal(self.pruned_reference, self.labels),
                "agreement": _fraction_equal(self.pruned_reference, self.reference),
                "eval_images": len(self.labels)}

    def is_pruned(self, model: Any) -> bool:
        """Whether ``model`` is the pruned one."""
        return self.pruned is not None and model is self.pruned

    def measure(self, predict: Predict, made_from: Any) -> dict[str, Any]:
        """``top1``, ``agreement`` with the Keras model it was ``made_from`` (``model``
        or ``pruned``) and ``eval_images`` of an artifact: keyword arguments of
        :class:`~keras_effnet.export.report.Artifact`."""
        predictions, _ = self.top1_predictions(predict)
        reference = self.pruned_reference if self.is_pruned(made_from) else self.reference
        return {"top1": _fraction_equal(predictions, self.labels),
                "agreement": _fraction_equal(predictions, reference),
                "eval_images": len(self.labels)}


def _fraction_equal(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of positions where two label arrays agree (None when empty)."""
    return float(np.mean(a == b)) if len(b) else None
