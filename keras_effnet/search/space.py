"""The two search spaces, as pure functions of a base :class:`~keras_effnet.variants.Variant`.

**Scaling** (EfficientNet paper, section 3.3): depth ``alpha``, width ``beta`` and
resolution ``gamma``, each >= 1 on a grid of ``step``, such that ``alpha * beta^2 *
gamma^2`` is within ``ratio_tolerance`` of the target (2: "twice the resources"). Widths
round to multiples of 8 and repeats round up, so the product only approximates the MACs
a candidate really has; a candidate is kept when its profiled MACs are within
``macs_tolerance`` of target x base as well, and both ratios are reported.

**NAS** (EfficientNetV2 paper, section 3.3): per stage of the base, the block type
(MBConv or Fused-MBConv), kernel (3, 5), expansion (1, 4, 6) and repeats (-1, 0, +1),
keeping the base's channels and strides. Squeeze-excite goes with the block type as in
EfficientNetV2: MBConv stages have it (the base stage's ratio, else 0.25), Fused-MBConv
stages do not; around a base without any (every lite variant), no stage has it. A candidate is a list of block strings: :func:`arch_from_params` and
:func:`params_from_arch` translate between the sampler's parameters and them.

Duplicates: :func:`network_key` names the network a candidate builds (scaled blocks,
stem, head, resolution, recipe), so two candidates that round to the same network share
one key and are trained once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Iterator, Mapping, Sequence

from keras_effnet import spec as spec_lib
from keras_effnet.errors import ConfigError
from keras_effnet.variants import Variant

__all__ = ["ScalingCandidate", "ScalingGrid", "coefficient_grid", "flops_ratio",
           "coefficient_label", "scaled_variant", "scaling_grid", "PAPER_COEFFICIENTS",
           "MAX_GRID_POINTS", "BLOCK_TYPES", "KERNELS", "EXPANSIONS", "REPEAT_DELTAS", "nas_space",
           "arch_from_params", "params_from_arch", "nas_variant", "network_key"]

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)  # alpha, beta, gamma (EfficientNet, section 4)

BLOCK_TYPES = ("mbconv", "fused")
KERNELS = (3, 5)
EXPANSIONS = (1, 4, 6)
REPEAT_DELTAS = (-1, 0, 1)
_DEFAULT_SE = 0.25
_EPS = 1e-9  # the grid's products are sums of float steps: compare with slack
# Every grid point is profiled (a few ms each) before the first trial: 10,000 is about
# half a minute, and 90x the paper's grid (step 0.05: 111 points at target 2).
MAX_GRID_POINTS = 10_000


# --- scaling ------------------------------------------------------------------------


def flops_ratio(alpha: float, beta: float, gamma: float) -> float:
    """``alpha * beta^2 * gamma^2``: how much FLOPs grow (depth counts once, width and
    resolution twice)."""
    return alpha * beta ** 2 * gamma ** 2


def coefficient_grid(target_ratio: float = 2.0, step: float = 0.05,
                     tolerance: float = 0.05, limit: int = MAX_GRID_POINTS
                     ) -> list[tuple[float, float, float]]:
    """Every ``(alpha, beta, gamma)`` >= 1 on the grid whose :func:`flops_ratio` is
    within ``tolerance`` (a fraction) of ``target_ratio``, in lexicographic order.

    Raises:
        ValueError: bad arguments, or a grid of more than ``limit`` points (found out
            after walking at most about ``limit`` of them, not after all).
    """
    if not (math.isfinite(target_ratio) and target_ratio > 1) or not 0 < step < 1 \
            or not 0 < tolerance < 1:
        raise ValueError("target_ratio must be a finite number > 1, step and tolerance in "
                         f"(0, 1). Received: target_ratio={target_ratio}, step={step}, "
                         f"tolerance={tolerance}")
    low, high = target_ratio * (1 - tolerance) - _EPS, target_ratio * (1 + tolerance) + _EPS

    def values(start: float, stop: float) -> Iterator[float]:
        # Integer steps, rounded once: 1 + 3 * 0.05 is 1.15, not 1.1500000000000001.
        # From one step under ``start``: the points below it are not walked.
        k = max(0, math.floor((start - 1) / step) - 1)
        while 1 + k * step <= stop + _EPS:
            yield round(1 + k * step, 10)
            k += 1

    grid: list[tuple[float, float, float]] = []
    walked = 0  # points looked at, kept or not: bounds the time when few are kept
    for alpha in values(1, high):
        for beta in values(1, (high / alpha) ** 0.5):
            for gamma in values((low / (alpha * beta ** 2)) ** 0.5,
                                (high / (alpha * beta ** 2)) ** 0.5):
                walked += 1
                if low <= flops_ratio(alpha, beta, gamma) <= high:
                    grid.append((alpha, beta, gamma))
                if len(grid) > limit or walked > 4 * limit:
                    size = (f"has more than {limit:,} points" if len(grid) > limit else
                            f"takes walking more than {4 * limit:,} points")
                    raise ValueError(
                        f"the grid {size} (target_ratio={target_ratio}, step={step}, "
                        f"tolerance={tolerance}); each point is profiled before the "
                        "search starts: use a coarser step, or a smaller target_ratio.")
    return grid


def coefficient_label(alpha: float, beta: float, gamma: float) -> str:
    """``a1.20_b1.10_g1.15``: the sampler's value and the candidate's directory name."""
    return f"a{alpha:.2f}_b{beta:.2f}_g{gamma:.2f}"


def scaled_variant(base: Variant, image_size: int, alpha: float, beta: float,
                   gamma: float) -> tuple[Variant, int]:
    """``base`` with depth x ``alpha``, width x ``beta``, and its image size (rounded as
    :func:`keras_effnet.profile.scale_to_macs` rounds it)."""
    size = max(8, int(round(image_size * gamma)))
    variant = base.replace(
        name=f"{base.name}-{coefficient_label(alpha, beta, gamma)}",
        width=base.width * beta, depth=base.depth * alpha, train_size=size, eval_size=size,
        paper_top1=None, paper_params_m=None, paper_macs_b=None)
    return variant, size


@dataclasses.dataclass(frozen=True)
class ScalingCandidate:
    """One grid point and the network it scales the base to."""

    alpha: float
    beta: float
    gamma: float
    flops_ratio: float  # alpha * beta^2 * gamma^2
    macs_ratio: float  # profiled MACs / the base's
    macs: int
    params: int
    image_size: int
    variant: Variant
    key: str

    @property
    def label(self) -> str:
        return coefficient_label(self.alpha, self.beta, self.gamma)

    def params_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}


@dataclasses.dataclass(frozen=True)
class ScalingGrid:
    """The candidates of a scaling search and what was left out."""

    base_macs: int
    base_params: int
    candidates: tuple[ScalingCandidate, ...]
    off_macs: tuple[tuple[float, float, float, float], ...]  # (a, b, g, macs ratio)
    # (a, b, g) scaling the base past a size limit (blocks, channels): not buildable
    too_large: tuple[tuple[float, float, float], ...] = ()

    def by_label(self) -> dict[str, ScalingCandidate]:
        return {c.label: c for c in self.candidates}


def scaling_grid(base: Variant, image_size: int, classes: int, *,
                 target_ratio: float = 2.0, step: float = 0.05,
                 ratio_tolerance: float = 0.05, macs_tolerance: float = 0.10
                 ) -> ScalingGrid:
    """The constrained grid around ``base`` at ``image_size``: :func:`coefficient_grid`,
    then profiled MACs within ``macs_tolerance`` of ``target_ratio`` x the base's. Points
    that scale the base past a size limit (:data:`~keras_effnet.variants.MAX_BLOCKS`,
    ...) are left out as ``too_large``."""
    from keras_effnet.profile import profile

    base_profile = profile(base, image_size=image_size, classes=classes)
    kept, off, too_large = [], [], []
    for alpha, beta, gamma in coefficient_grid(target_ratio, step, ratio_tolerance):
        variant, size = scaled_variant(base, image_size, alpha, beta, gamma)
        try:
            p = profile(variant, image_size=size, classes=classes)
        except ConfigError:  # the size limits; the base itself is within them
            too_large.append((alpha, beta, gamma))
            continue
        ratio = p.macs / base_profile.macs
        if abs(ratio - target_ratio) > macs_tolerance * target_ratio:
            off.append((alpha, beta, gamma, ratio))
            continue
        kept.append(ScalingCandidate(
            alpha=alpha, beta=beta, gamma=gamma,
            flops_ratio=flops_ratio(alpha, beta, gamma), macs_ratio=ratio, macs=p.macs,
            params=p.params, image_size=size, variant=variant,
            key=network_key(variant, size)))
    return ScalingGrid(base_macs=base_profile.macs, base_params=base_profile.params,
                       candidates=tuple(kept), off_macs=tuple(off),
                       too_large=tuple(too_large))


# --- NAS ----------------------------------------------------------------------------


def _stage_values(block: spec_lib.BlockSpec) -> dict[str, Any]:
    return {"block": "fused" if block.fused else "mbconv", "kernel": block.kernel_size,
            "expand": block.expand_ratio, "repeats": 0}


def nas_space(base_blocks: Sequence[str | spec_lib.BlockSpec]) -> dict[str, tuple]:
    """Parameter name -> choices, four per stage (``stage{i}_block``, ``_kernel``,
    ``_expand``, ``_repeats``; ``i`` from 1). The base's own values are always among
    the choices, and a one-block stage cannot lose its block."""
    space: dict[str, tuple] = {}
    for i, block in enumerate(spec_lib.parse_arch(base_blocks), start=1):
        own = _stage_values(block)
        space[f"stage{i}_block"] = BLOCK_TYPES
        space[f"stage{i}_kernel"] = tuple(sorted(set(KERNELS) | {own["kernel"]}))
        space[f"stage{i}_expand"] = tuple(sorted(set(EXPANSIONS) | {own["expand"]}))
        space[f"stage{i}_repeats"] = tuple(d for d in REPEAT_DELTAS
                                           if block.repeats + d >= 1)
    return space


def arch_from_params(params: Mapping[str, Any],
                     base_blocks: Sequence[str | spec_lib.BlockSpec]) -> list[str]:
    """The candidate's canonical block strings: the base's stages with the sampled
    block type, kernel, expansion and repeats; channels and strides unchanged."""
    space = nas_space(base_blocks)
    missing = [name for name in space if name not in params]
    if missing:
        raise ValueError(f"params lack {missing[0]!r} (expected the keys of nas_space). "
                         f"Received: {sorted(params)}")
    out = []
    base = spec_lib.parse_arch(base_blocks)
    default_se = _DEFAULT_SE if any(b.se_ratio for b in base) else None
    for i, block in enumerate(base, start=1):
        for key in ("block", "kernel", "expand", "repeats"):
            value = params[f"stage{i}_{key}"]
            if value not in space[f"stage{i}_{key}"]:
                raise ValueError(f"stage{i}_{key} must be one of "
                                 f"{space[f'stage{i}_{key}']}. Received: {value!r}")
        fused = params[f"stage{i}_block"] == "fused"
        se = None if fused else (block.se_ratio or default_se)
        out.append(spec_lib.format(block.replace(
            fused=fused, se_ratio=se, kernel_size=int(params[f"stage{i}_kernel"]),
            expand_ratio=int(params[f"stage{i}_expand"]),
            repeats=block.repeats + int(params[f"stage{i}_repeats"]))))
    return out


def params_from_arch(arch: Sequence[str | spec_lib.BlockSpec],
                     base_blocks: Sequence[str | spec_lib.BlockSpec]) -> dict[str, Any]:
    """The parameters whose :func:`arch_from_params` is ``arch``.

    Raises:
        ValueError: ``arch`` is not in the space around ``base_blocks`` (another stage
            count, other channels or strides, a choice out of range, or squeeze-excite
            that does not follow the block type).
    """
    blocks, base = spec_lib.parse_arch(arch), spec_lib.parse_arch(base_blocks)
    if len(blocks) != len(base):
        raise ValueError(f"arch has {len(blocks)} stages, the base {len(base)}.")
    params: dict[str, Any] = {}
    for i, (block, own) in enumerate(zip(blocks, base), start=1):
        values = _stage_values(block)
        values["repeats"] = block.repeats - own.repeats
        params.update({f"stage{i}_{k}": v for k, v in values.items()})
    canonical = arch_from_params(params, base) if _in_space(params, base) else None
    if canonical != [spec_lib.format(b) for b in blocks]:
        raise ValueError(f"arch {[spec_lib.format(b) for b in blocks]} is not in the search "
                         f"space around {[spec_lib.format(b) for b in base]}: channels, "
                         "strides and skips are the base's, and squeeze-excite follows the "
                         "block type.")
    return params


def _in_space(params: Mapping[str, Any], base: Sequence[spec_lib.BlockSpec]) -> bool:
    space = nas_space(base)
    return all(params[name] in choices for name, choices in space.items())


def nas_variant(base: Variant, arch: Sequence[str]) -> Variant:
    """``base`` (its width, depth, rules and recipe) with the candidate's blocks."""
    return base.replace(name=f"{base.name}-nas", blocks=tuple(arch), paper_top1=None,
                        paper_params_m=None, paper_macs_b=None)


# --- identity -----------------------------------------------------------------------

# Fields that do not change the network once its blocks are scaled, or that the scaled
# blocks, stem and head already capture.
_NOT_NETWORK = ("name", "family", "blocks", "width", "depth", "train_size", "eval_size",
                "rounding", "fix_stem_head", "head_filters", "paper_top1",
                "paper_params_m", "paper_macs_b")


def network_key(variant: Variant, image_size: int) -> str:
    """A short hash naming the network ``variant`` builds and trains at ``image_size``:
    equal keys, equal networks and recipes (two coefficient triples that round to the
    same widths and repeats, or the same block strings sampled twice)."""
    rest = {k: v for k, v in variant.to_dict().items() if k not in _NOT_NETWORK}
    payload = {"stem": variant.stem(), "head": variant.head(), "image_size": image_size,
               "blocks": [dataclasses.astuple(b) for b in variant.scaled_blocks()],
               **rest}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
