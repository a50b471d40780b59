"""Rewards and the Pareto front: pure functions, tested against hand-computed values.

* ``v2`` (EfficientNetV2, section 3.3): ``A * S^w * P^v`` with ``w = -0.07``,
  ``v = -0.05``; ``A`` held-out top-1, ``S`` the train-step time and ``P`` the parameter
  count. Here ``S`` and ``P`` are taken relative to the base architecture (its own
  reward is then its top-1): the ranking is the same as with absolute values, because
  a constant factor on ``S`` or ``P`` scales every reward alike.
* ``mnas`` (MnasNet, as EfficientNet used it for B0): ``A * (MACs / T)^w`` with
  ``w = -0.07`` and ``T`` a target (by default the base's MACs).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["V2_STEP_EXPONENT", "V2_PARAMS_EXPONENT", "MNAS_EXPONENT", "v2_reward",
           "mnas_reward", "pareto_front"]

V2_STEP_EXPONENT = -0.07
V2_PARAMS_EXPONENT = -0.05
MNAS_EXPONENT = -0.07


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0. Received: {name}={value!r}")


def v2_reward(top1: float, step_time_ratio: float, params_ratio: float,
              w: float = V2_STEP_EXPONENT, v: float = V2_PARAMS_EXPONENT) -> float:
    """``top1 * step_time_ratio**w * params_ratio**v`` (EfficientNetV2's reward)."""
    _positive(step_time_ratio=step_time_ratio, params_ratio=params_ratio)
    return top1 * step_time_ratio ** w * params_ratio ** v


def mnas_reward(top1: float, macs: float, target_macs: float,
                w: float = MNAS_EXPONENT) -> float:
    """``top1 * (macs / target_macs)**w`` (MnasNet's reward with MACs as the cost)."""
    _positive(macs=macs, target_macs=target_macs)
    return top1 * (macs / target_macs) ** w


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the points no other point dominates, in input order.

    A point dominates another when it is at least as good in every objective and better
    in one (``maximize[j]`` says which way objective ``j`` is better). Equal points do
    not dominate each other: both stay on the front.
    """
    signs = [1.0 if up else -1.0 for up in maximize]
    scored = [[s * x for s, x in zip(signs, p)] for p in points]
    if any(len(p) != len(signs) for p in scored):
        raise ValueError(f"every point needs {len(signs)} objectives (one per maximize "
                         f"flag). Received: {list(points)!r}")

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [i for i, p in enumerate(scored)
            if not any(dominates(q, p) for j, q in enumerate(scored) if j != i)]
