"""Progressive learning plans (EfficientNetV2 §4): pure Python, no TensorFlow.

Training is cut into ``stages``; each stage trains at one image size with one
regularisation strength, small and weak first, large and strong last.

Two schedules (docs/reference.md §4):

* ``mode="automl"`` reproduces google/automl ``main_tf2.py`` exactly. For stage ``i`` of
  ``S`` with ``ratio = (i + 1) / S``: epochs ``[int(i / S * E), int(ratio * E))``, image
  size ``int(ibase + (train_size - ibase) * ratio)``, RandAugment magnitude
  ``linspace(5, magnitude, S)[i]``, mixup and cutmix ``linspace(0, alpha, S)[i]``.
  ``ibase`` is automl's ``data.ibase = 128``: it is the value that reproduces every listed
  sequence (V2-B0/B1 144/160/176/192, B2 148/..., B3 156/..., S 171/214/257/300,
  M/L/XL 192/256/320/384); ``train_size / 2`` (automl's fallback) reproduces none of them.
  When the train size is 128 px or less (tiny custom runs) the fallback
  ``train_size // 2`` is used, since 128 would make images shrink. The code keeps the
  variant's dropout throughout.
* ``mode="paper"`` follows the paper's Table 6 and Algorithm 1: every quantity moves
  linearly from its first to its last value, ``value_i = v0 + (ve - v0) * i / (S - 1)``,
  dropout included. S: 128 -> 300 px, RandAugment 5 -> 15, mixup 0, dropout 0.1 -> 0.3;
  M: 128 -> 380, 5 -> 20, mixup 0 -> 0.2, dropout 0.1 -> 0.4; L: 128 -> 380, 5 -> 25,
  mixup 0 -> 0.4, dropout 0.1 -> 0.5. Variants the table does not list (B0-B3, XL,
  custom recipes) ramp from the automl ``ibase`` / magnitude 5 / mixup 0 / dropout
  ``min(0.1, dropout)`` to the recipe's own values. (XL is not in Table 6; it is given
  its own recipe's values, not L's.)

Stochastic depth follows the head dropout in both modes (:func:`drop_path_scale`): a
stage's drop-path rates are the variant's times the stage's dropout over the last stage's.
In automl mode that is 1 throughout (the official code's constant rates); in paper mode
they ramp with dropout (S: a third of the rates at 128 px; the main job: half at 80 px).
This is ours, not the paper's: Table 6 ramps dropout, RandAugment and mixup, and says
nothing of stochastic depth, but it is the same kind of regularisation, and on the main
job's first stages it learns faster with both ramped than with dropout alone (README,
"The main job, measured"). The trainer changes these rates without tracing its step again
(:mod:`keras_effnet.train.dropout_rates`).

``min_image_size`` replaces the first size in both modes (``ibase`` in automl mode, the
first stage's size in paper mode).

The first size is never below ``2 * reduction`` (64 px for an EfficientNet, which reduces
32x), so the final feature map of the smallest images is at least 2x2; a smaller
``min_image_size`` is refused. ImageNet-size plans start at 128 px or more, so their
values are the official ones unchanged; the rule shapes small runs (the digits' main
job: 128 px last, 64 px first).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from keras_effnet.data.augment import Augment  # pure Python, like this module

__all__ = ["Recipe", "Stage", "progressive_plan", "resolve_recipe", "drop_path_scale",
           "MODES"]

MODES = ("automl", "paper")
_AUTOML_IBASE = 128
_RANDAUG_START = 5.0
_DROPOUT_START = 0.1


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The end point of a progressive schedule: what the last stage trains with.

    ``randaug`` is the final RandAugment magnitude (None: no RandAugment, as V2-B0..B3,
    which the official code trains with AutoAugment instead); ``mixup`` and ``cutmix``
    are the final alphas (``cutmix=None`` means equal to ``mixup``, as automl).
    """

    train_size: int
    randaug: float | None = None
    mixup: float = 0.0
    cutmix: float | None = None
    dropout: float = 0.2
    name: str = "custom"
    # The network's total stride (EfficientNets: 32); the plan's first size keeps the
    # final feature map at least 2x2.
    reduction: int = 32

    def __post_init__(self):
        if not isinstance(self.train_size, int) or isinstance(self.train_size, bool) \
                or self.train_size < 2:
            raise ValueError("train_size must be an integer >= 2. "
                             f"Received: train_size={self.train_size!r}")
        if self.randaug is not None and not self.randaug >= 0:
            raise ValueError(f"randaug must be >= 0 or None. Received: randaug={self.randaug!r}")
        if self.cutmix is None:
            object.__setattr__(self, "cutmix", self.mixup)
        for field in ("mixup", "cutmix"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field} must be >= 0. "
                                 f"Received: {field}={getattr(self, field)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={self.dropout!r}")
        if not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError("reduction must be an integer >= 1. "
                             f"Received: reduction={self.reduction!r}")

    @property
    def min_usable_size(self) -> int:
        """The smallest image size whose final feature map is 2x2 (``2 * reduction``),
        or the train size when even that is smaller."""
        return min(2 * self.reduction, self.train_size)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a progressive plan: epochs ``[start_epoch, end_epoch)``, trained at
    ``image_size`` with ``augment`` and head ``dropout``."""

    index: int
    start_epoch: int
    end_epoch: int
    image_size: int
    augment: Augment
    dropout: float

    @property
    def epochs(self) -> int:
        """Epochs in this stage."""
        return self.end_epoch - self.start_epoch

    @property
    def randaug_magnitude(self) -> float | None:
        """``augment.randaug_magnitude`` (None: no RandAugment)."""
        return self.augment.randaug_magnitude

    @property
    def mixup_alpha(self) -> float:
        """``augment.mixup_alpha``."""
        return self.augment.mixup_alpha

    @property
    def cutmix_alpha(self) -> float:
        """``augment.cutmix_alpha``."""
        return self.augment.cutmix_alpha

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the plan in config.json and the benchmark's tables."""
        return {"index": self.index, "start_epoch": self.start_epoch,
                "end_epoch": self.end_epoch, "image_size": self.image_size,
                **dataclasses.asdict(self.augment), "dropout": self.dropout}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Stage":
        """The inverse of :meth:`to_dict` (an Augment field a plan written before it
        existed lacks takes its default: ``crop_area_range``'s is the recipe's crop)."""
        augment = Augment(**{f.name: data[f.name] for f in dataclasses.fields(Augment)
                             if f.name in data})
        return cls(index=data["index"], start_epoch=data["start_epoch"],
                   end_epoch=data["end_epoch"], image_size=data["image_size"],
                   augment=augment, dropout=data["dropout"])

    def describe(self, num_stages: int | None = None) -> str:
        """One line for logs and banners."""
        of = f"/{num_stages}" if num_stages else ""
        ra = "off" if self.randaug_magnitude is None else f"{self.randaug_magnitude:.3g}"
        return (f"Stage {self.index + 1}{of}: epochs {self.start_epoch}-{self.end_epoch} | "
                f"image {self.image_size}px | RandAugment {ra} | mixup "
                f"{self.mixup_alpha:.3g} | cutmix {self.cutmix_alpha:.3g} | "
                f"dropout {self.dropout:.3g}")


# Table 6 of the EfficientNetV2 paper: (min size, max size), (randaug), (mixup), (dropout).
_PAPER_TABLE6 = {
    "efficientnetv2-s": ((128, 300), (5.0, 15.0), (0.0, 0.0), (0.1, 0.3)),
    "efficientnetv2-m": ((128, 380), (5.0, 20.0), (0.0, 0.2), (0.1, 0.4)),
    "efficientnetv2-l": ((128, 380), (5.0, 25.0), (0.0, 0.4), (0.1, 0.5)),
}


def resolve_recipe(model_name_or_recipe: Any) -> Recipe:
    """A :class:`Recipe` from a variant name, a ``Variant``, a ``Recipe`` or a mapping
    (``train_size``, ``randaug``, ``mixup``, ``cutmix``, ``dropout``).
    """
    obj = model_name_or_recipe
    if isinstance(obj, Recipe):
        return obj
    if isinstance(obj, Mapping):
        known = {f.name for f in dataclasses.fields(Recipe)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"Unknown recipe field(s) {unknown}; known: {sorted(known)}")
        if "train_size" not in obj:
            raise ValueError(f"A recipe needs train_size. Received: {dict(obj)!r}")
        return Recipe(**obj)
    from keras_effnet.variants import Variant, get_variant  # local: keep this module light
    if isinstance(obj, str):
        obj = get_variant(obj)
    if isinstance(obj, Variant):
        return Recipe(train_size=obj.train_size, randaug=obj.randaug_magnitude,
                      mixup=obj.mixup_alpha, cutmix=obj.cutmix_alpha, dropout=obj.dropout,
                      name=obj.name, reduction=reduction(obj))
    raise TypeError("model_name_or_recipe must be a model name, a Variant, a Recipe or a "
                    f"dict with train_size. Received: {model_name_or_recipe!r}")


def reduction(variant: Any) -> int:
    """A variant's total stride: the stem's 2 times every block's stride."""
    from keras_effnet import spec as spec_lib  # local: keep this module light
    total = 2
    for block in spec_lib.parse_arch(variant.blocks):
        total *= int(block.strides)
    return total


def _linspace(start: float, stop: float, num: int) -> list[float]:
    # numpy.linspace's formula, in plain Python so the values are exact and importable
    # without numpy: the last value is exactly `stop`.
    if num == 1:
        return [float(start)]
    step = (stop - start) / (num - 1)
    return [float(start + i * step) if i < num - 1 else float(stop) for i in range(num)]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")


def progressive_plan(model_name_or_recipe: Any, epochs: int, stages: int = 4,
                     mode: str = "automl", min_image_size: int | None = None,
                     image_size: int | None = None) -> list[Stage]:
    """The progressive-learning schedule: one :class:`Stage` per stage.

    Args:
        model_name_or_recipe: a variant name (``"efficientnetv2-s"``), a ``Variant``, a
            :class:`Recipe` or a dict with ``train_size`` and optionally ``randaug``,
            ``mixup``, ``cutmix``, ``dropout``.
        epochs: total training epochs, at least ``stages``.
        stages: number of stages (1 = no progressive learning: everything at the end
            values).
        mode: ``"automl"`` (the official code, exactly) or ``"paper"`` (Table 6).
        min_image_size: the first image size (automl: ``ibase``), at most the last one
            and at least ``2 * reduction`` (64 px for an EfficientNet).
        image_size: the last stage's image size instead of the recipe's train size
            (``scripts/train.py --image_size``: the recipe is then a custom one, not a
            Table 6 row); the sizes of small images.

    Returns:
        The stages in order; they tile ``[0, epochs)`` without gaps.

    A variant's own plan is ImageNet-sized (V2-B0: 144, 160, 176, 192 px). For small
    images, name the sizes::

        progressive_plan("efficientnetv2-b0", epochs=4, image_size=128)
        # image_size 80, 96, 112, 128: automl's first size is half of a last size of
        # 128 px or less, then every stage a quarter of the way on
        progressive_plan("efficientnetv2-b0", epochs=8, image_size=128,
                         min_image_size=80, mode="paper")
        # 80, 96, 112, 128 px, dropout 0.1 -> 0.2: the embedded scans' main job

    No first size is below ``2 * reduction`` (see the module docstring), so sizes close
    in below 128 px: with ``image_size=64`` every stage of an EfficientNet is 64 px.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    _check_int("stages", stages, 1)
    _check_int("epochs", epochs, 1)
    if epochs < stages:
        raise ValueError(f"epochs must be >= stages so every stage trains at least one epoch. "
                         f"Received: epochs={epochs}, stages={stages}")
    recipe = resolve_recipe(model_name_or_recipe)
    if image_size is not None:
        _check_int("image_size", image_size, 2)
        # As TrainConfig resolves --image_size: another size is not the paper's row.
        recipe = dataclasses.replace(recipe, train_size=image_size, name="custom")
    size_end = recipe.train_size
    ra_start, ra_end = _RANDAUG_START, recipe.randaug
    mix_end, cut_end = recipe.mixup, recipe.cutmix
    drop_end = recipe.dropout
    drop_start = min(_DROPOUT_START, drop_end)
    table = _PAPER_TABLE6.get(recipe.name) if mode == "paper" else None
    if table is not None:
        (size_start, size_end), (ra_start, ra_end), (_, mix_end), (drop_start, drop_end) = table
        cut_end = mix_end
    else:
        size_start = _AUTOML_IBASE if size_end > _AUTOML_IBASE else size_end // 2
    # The first size still gives a usable (>= 2x2) final feature map: at 1x1 the head
    # sees one position, and what is learnt there does not carry to the last size.
    usable = min(2 * recipe.reduction, size_end)
    size_start = max(size_start, usable)
    if min_image_size is not None:
        _check_int("min_image_size", min_image_size, 1)
        if min_image_size > size_end:
            raise ValueError(f"min_image_size must be <= the final image size {size_end}. "
                             f"Received: min_image_size={min_image_size}")
        if min_image_size < usable:
            raise ValueError(f"min_image_size must be >= {usable}: the network reduces "
                             f"images {recipe.reduction}x, and smaller first images leave a "
                             f"final feature map under 2x2. Received: "
                             f"min_image_size={min_image_size}")
        size_start = min_image_size

    randaug = _linspace(ra_start, ra_end, stages) if ra_end is not None else [None] * stages
    mixup = _linspace(0.0, mix_end, stages)
    cutmix = _linspace(0.0, cut_end, stages)
    if mode == "paper":
        # One stage is plain training: Algorithm 1's i / (M - 1) has no first value to
        # start from, so every quantity takes its last (the fixed-size baseline).
        first = (lambda start, end: end) if stages == 1 else (lambda start, end: start)
        if stages == 1 and ra_end is not None:
            randaug = [float(ra_end)]
        mixup, cutmix = (([float(mix_end)], [float(cut_end)]) if stages == 1
                         else (mixup, cutmix))
        sizes = [int(round(s)) for s in _linspace(first(size_start, size_end), size_end,
                                                     stages)]
        dropout = _linspace(first(drop_start, drop_end), drop_end, stages)
    else:
        sizes = [int(size_start + (size_end - size_start) * (i + 1) / stages)
                 for i in range(stages)]
        dropout = [float(drop_end)] * stages

    plan = []
    for i in range(stages):
        # automl's float arithmetic, kept literally so the boundaries match exactly.
        start = int(float(i) / float(stages) * epochs)
        end = int(float(i + 1) / float(stages) * epochs)
        augment = Augment(randaug_magnitude=randaug[i], mixup_alpha=mixup[i],
                          cutmix_alpha=cutmix[i])
        plan.append(Stage(index=i, start_epoch=start, end_epoch=end, image_size=sizes[i],
                          augment=augment, dropout=dropout[i]))
    return plan


def drop_path_scale(plan: list[Stage], stage: Stage) -> float:
    """The factor on the variant's drop-path rates during ``stage``: its dropout over the
    plan's last stage's (1.0 when the last stage has no dropout). Constant 1.0 in automl
    mode; in paper mode stochastic depth ramps with dropout (see the module docstring)."""
    last = plan[-1].dropout
    return stage.dropout / last if last > 0 else 1.0
