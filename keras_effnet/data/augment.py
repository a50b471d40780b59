"""What a training pipeline augments: the :class:`Augment` record (pure Python).

A progressive stage carries one (``stage.augment``) and
``Source.train_dataset(augment=...)`` applies it; the ops themselves (RandAugment, MixUp,
CutMix) are TensorFlow code in :mod:`keras_effnet.data.transforms`. This module imports
no TensorFlow, so plans stay importable without it (docs/reference.md §4).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Augment", "DEFAULT_RANDAUG_MAGNITUDE"]

# ``train_dataset``'s RandAugment when no Augment is given: the start of the V2 ramp.
DEFAULT_RANDAUG_MAGNITUDE = 5.0


@dataclasses.dataclass(frozen=True)
class Augment:
    """The per-image and per-batch augmentation of a training pipeline.

    Attributes:
        randaug_magnitude: RandAugment's automl magnitude (0-30); None or 0: off.
        mixup_alpha: MixUp's Beta alpha; 0: off.
        cutmix_alpha: CutMix's Beta alpha (Keras accepts at most 1); 0: off. When both
            alphas are > 0, each batch gets one of the two.

    ``Augment()`` is ``train_dataset``'s default (RandAugment 5, no mixing);
    ``Augment.none()`` turns all three off (the crop and flip stay: they are the
    pipeline's, not this record's).
    """

    randaug_magnitude: float | None = DEFAULT_RANDAUG_MAGNITUDE
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.randaug_magnitude is not None and not _non_negative(self.randaug_magnitude):
            raise ValueError("randaug_magnitude must be >= 0 (or None for off). "
                             f"Received: randaug_magnitude={self.randaug_magnitude!r}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if not _non_negative(getattr(self, name)):
                raise ValueError(f"{name} must be >= 0. "
                                 f"Received: {name}={getattr(self, name)!r}")

    @classmethod
    def none(cls) -> "Augment":
        """No RandAugment, no MixUp, no CutMix."""
        return cls(randaug_magnitude=None, mixup_alpha=0.0, cutmix_alpha=0.0)

    @property
    def randaugment(self) -> float:
        """The RandAugment magnitude as a float, 0.0 when off (a cache key)."""
        return float(self.randaug_magnitude or 0.0)

    def record(self) -> dict[str, Any]:
        """The keys an epoch record and the reports use: randaug, mixup, cutmix."""
        return {"randaug": self.randaug_magnitude, "mixup": self.mixup_alpha,
                "cutmix": self.cutmix_alpha}


def _non_negative(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and value >= 0
    except TypeError:
        return False
