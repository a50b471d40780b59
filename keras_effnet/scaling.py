"""Width, depth and resolution scaling: pure Python, no TensorFlow.

These are the rules of the official implementations (docs/reference.md §2). They differ in
one place: tensorflow/tpu (V1, keras.applications' EfficientNet) refuses to round a
width down by more than 10 %, google/automl (V2, keras.applications' EfficientNetV2)
does not. Both rules are kept, selected by ``rule``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from keras_effnet.spec import BlockSpec

__all__ = ["round_filters", "round_repeats", "compound", "expand_stages", "ScaledBlock"]

RULES = ("v1", "v2")


def round_filters(filters: int, width: float = 1.0, divisor: int = 8, rule: str = "v1",
                  min_depth: int | None = None) -> int:
    """Scales a channel count by ``width`` and rounds it to a multiple of ``divisor``.

    Rounds to the nearest multiple (half up). Under ``rule="v1"`` a result more than
    10 % below the scaled value is bumped up by one divisor; ``rule="v2"`` has no guard,
    so width 1.2 takes 16 to 24 under V1 and to 16 under V2.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}. Received: rule={rule!r}")
    if not (width > 0 and math.isfinite(width)) or divisor <= 0:
        raise ValueError(f"width must be a finite number > 0 and divisor > 0. "
                         f"Received: width={width}, divisor={divisor}")
    scaled = filters * width
    if not math.isfinite(scaled):
        raise ValueError(f"width={width} scales {filters} filters past any float. "
                         f"Received: width={width}")
    floor = min_depth or divisor
    new = max(floor, int(scaled + divisor / 2) // divisor * divisor)
    if rule == "v1" and new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scales a stage's repeat count by ``depth``, rounding up (never to zero)."""
    if not (depth > 0 and math.isfinite(depth * repeats)):
        raise ValueError(f"depth must be a finite number > 0. Received: depth={depth}")
    return int(math.ceil(depth * repeats))


def compound(phi: float, alpha: float = 1.2, beta: float = 1.1,
             gamma: float = 1.15) -> tuple[float, float, float]:
    """The paper's compound scaling: (depth, width, resolution) multipliers for ``phi``.

    With the paper's alpha * beta**2 * gamma**2 ~= 2, FLOPs grow by about 2**phi.
    """
    return alpha ** phi, beta ** phi, gamma ** phi


@dataclasses.dataclass(frozen=True)
class ScaledBlock:
    """One concrete block after scaling: where it sits and what it computes."""

    stage: int  # 1-based stage index
    index: int  # 1-based index within the stage
    global_index: int  # 0-based over the whole network
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None
    fused: bool
    skip: bool

    @property
    def has_skip(self) -> bool:
        """Identity shortcut: stride 1, same width in and out, and not ``noskip``."""
        return self.skip and self.strides == 1 and self.input_filters == self.output_filters


def expand_stages(blocks: Sequence[BlockSpec], width: float = 1.0, depth: float = 1.0,
                  rule: str = "v1", divisor: int = 8, use_se: bool = True,
                  fixed_repeats: Sequence[int] = ()) -> tuple[ScaledBlock, ...]:
    """Scales an architecture and unrolls every stage into its blocks.

    After depth scaling the first block of a stage keeps the stage's stride and input
    filters; the others use stride 1 and ``input = output``. Stages listed in
    ``fixed_repeats`` (0-based) keep their repeat count (EfficientNet-lite's first and
    last stage).
    """
    out: list[ScaledBlock] = []
    for s, block in enumerate(blocks):
        repeats = (block.repeats if s in fixed_repeats
                   else round_repeats(block.repeats, depth))
        filters_in = round_filters(block.input_filters, width, divisor, rule)
        filters_out = round_filters(block.output_filters, width, divisor, rule)
        for j in range(repeats):
            out.append(ScaledBlock(
                stage=s + 1, index=j + 1, global_index=len(out),
                kernel_size=block.kernel_size,
                strides=block.strides if j == 0 else 1,
                expand_ratio=block.expand_ratio,
                input_filters=filters_in if j == 0 else filters_out,
                output_filters=filters_out,
                se_ratio=block.se_ratio if use_se else None,
                fused=block.fused, skip=block.skip))
    return tuple(out)
