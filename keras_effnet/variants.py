"""Every EfficientNet variant as one row of data: architecture, scaling and recipe.

Block strings, coefficients and recipe fields are the official ones (docs/reference.md §1, §2,
§4, §6). Choices where the official codes disagree:

* Rounding: V1 and lite use tensorflow/tpu's rule (10 % guard), V2 google/automl's (none).
* Dropout: the V2 table's per-variant rates (keras.applications uses 0.2 for every V2).
* BatchNorm momentum: 0.99 for V1 and lite (tpu), 0.9 for V2 (automl's code, which
  trained the released checkpoints; the paper says 0.99). Parameter counts are the same.
* Lite preprocessing: ``(x - 127) / 128`` as tensorflow/tpu's lite builder (some
  releases use 127.5).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from keras_effnet import spec as spec_lib
from keras_effnet.errors import ConfigError
from keras_effnet.scaling import ScaledBlock, expand_stages, round_filters, round_repeats

__all__ = ["Variant", "get_variant", "list_models", "VARIANTS", "custom_variant",
           "resolve_variant", "is_arch_string"]

PREPROCESSING = ("imagenet", "symmetric", "lite", "inception", "none")
# Blocks a network may have once depth-scaled: ten times V2-XL's 100. Beyond it a model
# takes minutes (a million repeats: hours) to build and profile, so it is refused first.
MAX_BLOCKS = 1000

_V1_BLOCKS = (
    "r1_k3_s1_e1_i32_o16_se0.25", "r2_k3_s2_e6_i16_o24_se0.25",
    "r2_k5_s2_e6_i24_o40_se0.25", "r3_k3_s2_e6_i40_o80_se0.25",
    "r3_k5_s1_e6_i80_o112_se0.25", "r4_k5_s2_e6_i112_o192_se0.25",
    "r1_k3_s1_e6_i192_o320_se0.25",
)
_V2_BASE_BLOCKS = (
    "r1_k3_s1_e1_i32_o16_f", "r2_k3_s2_e4_i16_o32_f", "r2_k3_s2_e4_i32_o48_f",
    "r3_k3_s2_e4_i48_o96_se0.25", "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
)
_V2_S_BLOCKS = (
    "r2_k3_s1_e1_i24_o24_f", "r4_k3_s2_e4_i24_o48_f", "r4_k3_s2_e4_i48_o64_f",
    "r6_k3_s2_e4_i64_o128_se0.25", "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
)
_V2_M_BLOCKS = (
    "r3_k3_s1_e1_i24_o24_f", "r5_k3_s2_e4_i24_o48_f", "r5_k3_s2_e4_i48_o80_f",
    "r7_k3_s2_e4_i80_o160_se0.25", "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25", "r5_k3_s1_e6_i304_o512_se0.25",
)
_V2_L_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_f", "r7_k3_s2_e4_i32_o64_f", "r7_k3_s2_e4_i64_o96_f",
    "r10_k3_s2_e4_i96_o192_se0.25", "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25", "r7_k3_s1_e6_i384_o640_se0.25",
)
_V2_XL_BLOCKS = (
    "r4_k3_s1_e1_i32_o32_f", "r8_k3_s2_e4_i32_o64_f", "r8_k3_s2_e4_i64_o96_f",
    "r16_k3_s2_e4_i96_o192_se0.25", "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25", "r8_k3_s1_e6_i512_o640_se0.25",
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One network: its blocks, how they are scaled, and how it is trained."""

    name: str
    family: str  # "v1", "lite", "v2" or "custom"
    blocks: tuple[str, ...]
    width: float = 1.0
    depth: float = 1.0
    train_size: int = 224
    eval_size: int = 224
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    activation: str = "swish"
    use_se: bool = True
    preprocessing: str = "imagenet"
    rounding: str = "v1"
    fix_stem_head: bool = False  # lite: stem, head and first/last stage repeats unscaled
    head_filters: int = 1280
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    # Training recipe (google/automl hparams; docs/reference.md §4-5).
    randaug_magnitude: float | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Published figures, for comparison only (labelled as such wherever shown).
    paper_top1: float | None = None
    paper_params_m: float | None = None
    paper_macs_b: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(spec_lib.format(b) for b in
                                                 spec_lib.parse_arch(self.blocks)))
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}. "
                             f"Received: preprocessing={self.preprocessing!r}")
        if self.rounding not in ("v1", "v2"):
            raise ValueError(f"rounding must be 'v1' or 'v2'. Received: {self.rounding!r}")
        for field in ("width", "depth"):
            value = getattr(self, field)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{field} must be a finite number > 0. "
                                  f"Received: {field}={value}", field)
        for field in ("dropout", "drop_path_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{field} must be in [0, 1). "
                                 f"Received: {field}={getattr(self, field)}")

    @property
    def block_specs(self) -> tuple[spec_lib.BlockSpec, ...]:
        return spec_lib.parse_arch(self.blocks)

    def replace(self, **changes: Any) -> "Variant":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "Variant":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"Unknown Variant field(s) {unknown}; known: {sorted(known)}")
        return cls(**{**config, "blocks": tuple(config["blocks"])})

    # --- derived, pure: what the builder and the profiler both walk ----------------

    def stem(self) -> int:
        """Stem width: the first block's input filters, scaled (unscaled for lite)."""
        first = self.block_specs[0].input_filters
        return first if self.fix_stem_head else round_filters(first, self.width,
                                                              rule=self.rounding)

    def head(self) -> int:
        if self.fix_stem_head:
            return self.head_filters
        return round_filters(self.head_filters, self.width, rule=self.rounding)

    def _fixed_repeats(self) -> tuple[int, ...]:
        return (0, len(self.blocks) - 1) if self.fix_stem_head else ()

    def num_blocks(self) -> int:
        """How many blocks the scaled network has (counted, not built)."""
        fixed = self._fixed_repeats()
        return sum(b.repeats if i in fixed else round_repeats(b.repeats, self.depth)
                   for i, b in enumerate(self.block_specs))

    def scaled_blocks(self) -> tuple[ScaledBlock, ...]:
        """Every block after scaling. Raises :class:`~keras_effnet.errors.ConfigError`
        (field ``depth``) past :data:`MAX_BLOCKS`, before making any."""
        blocks = self.num_blocks()
        if blocks > MAX_BLOCKS:
            raise size_error(self, f"{count(blocks)} blocks", f"{MAX_BLOCKS:,}",
                             "efficientnetv2-xl has 100", "depth", "repeats",
                             max(b.repeats for b in self.block_specs))
        specs = self.block_specs
        fixed = self._fixed_repeats()
        blocks = list(expand_stages(specs, self.width, self.depth, self.rounding,
                                    use_se=self.use_se, fixed_repeats=fixed))
        # The first block reads the stem. They agree everywhere except lite, whose stem
        # is not scaled while the first stage's nominal input is.
        blocks[0] = dataclasses.replace(blocks[0], input_filters=self.stem())
        return tuple(blocks)

    def drop_path_rates(self) -> tuple[float, ...]:
        """automl / tpu rule: ``rate * idx / total`` over the blocks after scaling."""
        total = len(self.scaled_blocks())
        return tuple(self.drop_path_rate * i / total for i in range(total))


def count(n: int) -> str:
    """A count for a message: ``1,234,567``, or ``1.23e+45`` when absurdly large."""
    return f"{n:,}" if n < 10 ** 15 else f"{float(n):.3g}"


def size_error(variant: Variant, amount: str, limit: str, reference: str, multiplier: str,
               token: str, largest: int) -> ConfigError:
    """The error for a network past a size limit, naming what to lower: ``multiplier``
    (``depth`` or ``width``) when it scales the network up, else the block strings'
    ``token`` (``repeats``, ``filters``), of which ``largest`` is the largest."""
    scale = getattr(variant, multiplier)
    if scale > 1:
        fix, field, received = f"lower {multiplier}", multiplier, f"{multiplier}={scale:g}"
    else:
        fix, field, received = (f"lower the {token} of the block strings", "model",
                                f"{token}={count(largest)}")
    return ConfigError(f"{variant.name} would have {amount}, more than the limit of {limit} "
                       f"({reference}); {fix}. Received: {received}", field)


def _v1(name, width, depth, size, dropout, top1, params, macs):
    return Variant(name=f"efficientnet-{name}", family="v1", blocks=_V1_BLOCKS, width=width,
                   depth=depth, train_size=size, eval_size=size, dropout=dropout,
                   paper_top1=top1, paper_params_m=params, paper_macs_b=macs)


def _lite(name, width, depth, size, dropout, top1, params, macs):
    blocks = tuple(b.replace("_se0.25", "") for b in _V1_BLOCKS)
    return Variant(name=f"efficientnet-{name}", family="lite", blocks=blocks, width=width,
                   depth=depth, train_size=size, eval_size=size, dropout=dropout,
                   activation="relu6", use_se=False, preprocessing="lite",
                   fix_stem_head=True, paper_top1=top1, paper_params_m=params,
                   paper_macs_b=macs)


def _v2(name, blocks, width, depth, train, evals, dropout, randaug, mixup, top1, params,
        macs):
    return Variant(name=f"efficientnetv2-{name}", family="v2", blocks=blocks, width=width,
                   depth=depth, train_size=train, eval_size=evals, dropout=dropout,
                   preprocessing="imagenet" if name.startswith("b") else "symmetric",
                   rounding="v2", bn_momentum=0.9, randaug_magnitude=randaug,
                   mixup_alpha=mixup, cutmix_alpha=mixup, paper_top1=top1,
                   paper_params_m=params, paper_macs_b=macs)


_ROWS = (
    #   name      width depth  size dropout top-1  params  MACs (B)
    _v1("b0", 1.0, 1.0, 224, 0.2, 77.1, 5.3, 0.39),
    _v1("b1", 1.0, 1.1, 240, 0.2, 79.1, 7.8, 0.70),
    _v1("b2", 1.1, 1.2, 260, 0.3, 80.1, 9.2, 1.0),
    _v1("b3", 1.2, 1.4, 300, 0.3, 81.6, 12.0, 1.8),
    _v1("b4", 1.4, 1.8, 380, 0.4, 82.9, 19.0, 4.2),
    _v1("b5", 1.6, 2.2, 456, 0.4, 83.6, 30.0, 9.9),
    _v1("b6", 1.8, 2.6, 528, 0.5, 84.0, 43.0, 19.0),
    _v1("b7", 2.0, 3.1, 600, 0.5, 84.3, 66.0, 37.0),
    _v1("b8", 2.2, 3.6, 672, 0.5, None, None, None),
    _v1("l2", 4.3, 5.3, 800, 0.5, None, None, None),
    _lite("lite0", 1.0, 1.0, 224, 0.2, 75.1, 4.7, 0.41),
    _lite("lite1", 1.0, 1.1, 240, 0.2, 76.7, 5.4, 0.63),
    _lite("lite2", 1.1, 1.2, 260, 0.3, 77.6, 6.1, 0.90),
    _lite("lite3", 1.2, 1.4, 280, 0.3, 79.8, 8.2, 1.44),
    _lite("lite4", 1.4, 1.8, 300, 0.3, 81.5, 13.0, 2.64),
    #   name  blocks           w    d    train eval dropout randaug mixup top-1 params MACs
    _v2("b0", _V2_BASE_BLOCKS, 1.0, 1.0, 192, 224, 0.2, None, 0.0, 78.7, 7.1, 0.72),
    _v2("b1", _V2_BASE_BLOCKS, 1.0, 1.1, 192, 240, 0.2, None, 0.0, 79.8, 8.1, 1.2),
    _v2("b2", _V2_BASE_BLOCKS, 1.1, 1.2, 208, 260, 0.3, None, 0.0, 80.5, 10.1, 1.7),
    _v2("b3", _V2_BASE_BLOCKS, 1.2, 1.4, 240, 300, 0.3, None, 0.0, 82.1, 14.4, 3.0),
    _v2("s", _V2_S_BLOCKS, 1.0, 1.0, 300, 384, 0.2, 10, 0.0, 83.9, 21.5, 8.4),
    _v2("m", _V2_M_BLOCKS, 1.0, 1.0, 384, 480, 0.3, 15, 0.2, 85.2, 54.1, 24.7),
    _v2("l", _V2_L_BLOCKS, 1.0, 1.0, 384, 480, 0.4, 20, 0.5, 85.7, 119.5, 56.3),
    _v2("xl", _V2_XL_BLOCKS, 1.0, 1.0, 384, 512, 0.4, 20, 0.5, None, None, None),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in _ROWS}


def list_models() -> list[str]:
    """Names of every built-in variant, as google/automl and tensorflow/tpu write them."""
    return list(VARIANTS)


def get_variant(name: str | Variant) -> Variant:
    """The table row of ``name`` (case-insensitive; ``_`` and ``-`` interchangeable)."""
    if isinstance(name, Variant):
        return name
    if not isinstance(name, str):
        raise TypeError(f"A variant name must be a string. Received: {name!r}")
    key = name.strip().lower().replace("_", "-")
    if key in VARIANTS:
        return VARIANTS[key]
    import difflib
    close = difflib.get_close_matches(key, VARIANTS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown model {name!r}.{hint} Known models: {', '.join(VARIANTS)} "
                     "(or pass arch=[block strings] for a custom network).")


def custom_variant(arch: str | Sequence[str | spec_lib.BlockSpec], *,
                   base: str | Variant | None = None, name: str = "efficientnet-custom",
                   **fields: Any) -> Variant:
    """A variant for a custom list of block strings.

    Settings not given come from ``base``: by default efficientnetv2-b0 when any block
    is fused, efficientnet-b0 otherwise (width and depth reset to 1).
    """
    blocks = tuple(spec_lib.format(b) for b in spec_lib.parse_arch(arch))
    if base is None:
        base = "efficientnetv2-b0" if any(spec_lib.parse(b).fused for b in blocks) \
            else "efficientnet-b0"
    row = get_variant(base)
    defaults = dict(width=1.0, depth=1.0, paper_top1=None, paper_params_m=None,
                    paper_macs_b=None)
    return row.replace(name=name, family="custom" if row.family != "lite" else "lite",
                       blocks=blocks, **{**defaults, **fields})


def is_arch_string(text: str) -> bool:
    """Whether ``text`` is block strings rather than a variant name: a variant name never
    holds a block string's first token, ``r<digits>``."""
    import re
    return bool(re.search(r"(^|[\s,_])r[0-9]", text))


def resolve_variant(name_or_arch: str | Variant | Sequence[str | spec_lib.BlockSpec] | None = None,
                    *, arch: str | Sequence[str | spec_lib.BlockSpec] | None = None,
                    base: str | Variant | None = None, **fields: Any) -> Variant:
    """The :class:`Variant` that :func:`build` would build; ``fields`` override the row."""
    if arch is not None and name_or_arch is not None:
        raise ValueError("Pass either a model name (or Variant) or arch=[block strings], "
                         f"not both. Received: name_or_arch={name_or_arch!r}, arch={arch!r}")
    if arch is None and name_or_arch is None:
        raise ValueError("build() needs a model name such as 'efficientnetv2-s' "
                         "(see keras_effnet.list_models()) or arch=[block strings].")
    if arch is None and isinstance(name_or_arch, str) and is_arch_string(name_or_arch):
        arch, name_or_arch = name_or_arch, None
    if arch is None and not isinstance(name_or_arch, (str, Variant)):
        arch, name_or_arch = name_or_arch, None
    if arch is not None:
        variant = custom_variant(arch, base=base)
    else:
        variant = get_variant(name_or_arch)
    changes = {k: v for k, v in fields.items() if v is not None}
    return variant.replace(**changes) if changes else variant
