"""Timing helpers for benchmarks on a shared, noisy machine: A/B interleaving, medians,
ratios. Pure Python (``time.perf_counter``), no TensorFlow.

Why interleave: load from other processes comes and goes over seconds to minutes. Timing
all of A, then all of B, lets a burst of load land on one side only; alternating A, B, A,
B, ... spreads it over both, so the *ratio* of the medians stays meaningful even when the
absolute times do not.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Mapping, Sequence

__all__ = ["median", "ratio", "paired_ratios", "spread", "interleaved", "timed", "per_second"]


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def median(values: Sequence[float]) -> float | None:
    """The median of ``values`` (None when empty; non-finite values are ignored)."""
    finite = _finite(values)
    return statistics.median(finite) if finite else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is
    zero (a report shows "–" rather than inventing a number)."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]
                  ) -> list[float]:
    """Round-by-round ``numerators[i] / denominators[i]`` of two interleaved series (rounds
    with a missing or zero time are left out). Their spread is the noise a ratio of
    medians has to beat: two sides within it are at parity on this machine."""
    pairs = (ratio(a, b) for a, b in zip(numerators, denominators))
    return [r for r in pairs if r is not None and math.isfinite(r)]


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``"min–max"`` of ``values`` for a report ("–" when empty)."""
    finite = _finite(values)
    if not finite:
        return "–"
    return f"{min(finite):.{digits}f}–{max(finite):.{digits}f}"


def per_second(count: float, seconds: float | None) -> float | None:
    """A rate (``count / seconds``), None for a missing or zero time."""
    return ratio(count, seconds)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                timer: Callable[[Callable[[], object]], float] = timed
                ) -> dict[str, list[float]]:
    """Times every function ``repeats`` times, alternating between them.

    Each function first runs ``warmup`` times untimed (traces, caches, allocator). Then
    round ``r`` times each function once, in the given order on even rounds and reversed
    on odd rounds, so neither side always runs right after the other's cleanup.

    Returns ``{name: [seconds per round]}``.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1. Received: repeats={repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0. Received: warmup={warmup!r}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timer(fns[name]))
    return times
