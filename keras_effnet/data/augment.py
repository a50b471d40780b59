"""What a training pipeline augments: the :class:`Augment` record (pure Python).

A progressive stage carries one (``stage.augment``) and
``Source.train_dataset(augment=...)`` applies it; the ops themselves (Inception crop,
RandAugment, MixUp, CutMix) are TensorFlow code in :mod:`keras_effnet.data.transforms`.
This module imports no TensorFlow, so plans stay importable without it
(docs/reference.md §4).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["Augment", "DEFAULT_RANDAUG_MAGNITUDE", "SOURCE_CROP"]

# ``train_dataset``'s RandAugment when no Augment is given: the start of the V2 ramp.
DEFAULT_RANDAUG_MAGNITUDE = 5.0
# ``Augment.crop_area_range`` meaning "the source's own Inception range".
SOURCE_CROP = "source"


@dataclasses.dataclass(frozen=True)
class Augment:
    """The per-image and per-batch augmentation of a training pipeline.

    Attributes:
        randaug_magnitude: RandAugment's automl magnitude (0-30); None or 0: off.
        mixup_alpha: MixUp's Beta alpha; 0: off.
        cutmix_alpha: CutMix's Beta alpha (Keras accepts at most 1); 0: off. When both
            alphas are > 0, each batch gets one of the two.
        crop_area_range: the Inception random crop's area, as ``(min, max)`` fractions
            of the image (``0 < min <= max <= 1``, aspect 3/4-4/3); ``"source"``: the
            source's own range (``Source.crop_area_range``: ``(0.05, 1.0)``, the
            official recipe, and ``(0.25, 1.0)`` for the embedded digit scans); None: no
            random crop, each image is centre-cropped and resized as for evaluation.

    ``Augment()`` is ``train_dataset``'s default and the recipe's (the source's Inception
    crop, RandAugment 5, no mixing); ``Augment.none()`` turns all four off, so training
    sees the images evaluation sees (the flip stays: it is ``train_dataset(flip=...)``'s).
    Milder crops for small or centred subjects: ``Augment(crop_area_range=(0.5, 1.0))``.
    """

    randaug_magnitude: float | None = DEFAULT_RANDAUG_MAGNITUDE
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    crop_area_range: tuple[float, float] | str | None = SOURCE_CROP

    def __post_init__(self) -> None:
        if self.randaug_magnitude is not None and not _non_negative(self.randaug_magnitude):
            raise ValueError("randaug_magnitude must be >= 0 (or None for off). "
                             f"Received: randaug_magnitude={self.randaug_magnitude!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if not _non_negative(getattr(self, name)):
                raise ValueError(f"{name} must be >= 0. "
                                 f"Received: {name}={getattr(self, name)!r}")
        crop = self.crop_area_range
        if crop is not None and crop != SOURCE_CROP:
            # A list from JSON (config.json's plan) is the same crop as the tuple.
            area = _area_range(crop)
            if area is None:
                raise ValueError(
                    "crop_area_range must be (min, max) with 0 < min <= max <= 1, "
                    f"{SOURCE_CROP!r} (the source's range) or None (no random crop). "
                    f"Received: crop_area_range={crop!r}")
            object.__setattr__(self, "crop_area_range", area)

    @classmethod
    def none(cls) -> "Augment":
        """No random crop (the eval centre crop), no RandAugment, no MixUp, no CutMix."""
        return cls(randaug_magnitude=None, mixup_alpha=0.0, cutmix_alpha=0.0,
                   crop_area_range=None)

    @property
    def randaugment(self) -> float:
        """The RandAugment magnitude as a float, 0.0 when off (a cache key)."""
        return float(self.randaug_magnitude or 0.0)

    def area_range(self, source_range: tuple[float, float]) -> tuple[float, float] | None:
        """The crop's ``(min, max)`` area for a source whose own range is
        ``source_range``; None when there is no random crop."""
        if self.crop_area_range == SOURCE_CROP:
            return tuple(float(v) for v in source_range)
        return self.crop_area_range

    def record(self) -> dict[str, Any]:
        """The keys an epoch record and the reports use: randaug, mixup, cutmix, crop."""
        crop = self.crop_area_range
        return {"randaug": self.randaug_magnitude, "mixup": self.mixup_alpha,
                "cutmix": self.cutmix_alpha,
                "crop": list(crop) if isinstance(crop, tuple) else crop}


def _non_negative(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and value >= 0
    except TypeError:
        return False


def _area_range(value: Any) -> tuple[float, float] | None:
    """``value`` as a ``(min, max)`` area range, or None when it is not one."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        low, high = value
        if isinstance(low, bool) or isinstance(high, bool):
            return None
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(low) and 0.0 < low <= high <= 1.0):
        return None
    return (low, high)
