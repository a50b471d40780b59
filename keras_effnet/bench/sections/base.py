"""What every benchmark section shares: its record (:class:`Section`) and the state one
benchmark run passes from section to section (:class:`Context`).

A section's ``run(cfg, out, ctx)`` returns a JSON-ready dict (``title`` is added by the
runner; ``columns``, ``rows``, ``notes``, ``figures``, see :mod:`keras_effnet.bench.report`).
Timings never raise on a "bad" number: they report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from keras_effnet.bench.child import Background
from keras_effnet.bench.config import BenchConfig
from keras_effnet.bench.sections.steps import TracedSteps

__all__ = ["Section", "Context"]

Result = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark section, declared once in its module.

    Attributes:
        name: the section's name (``only`` selects sections by it; results.json key).
        title: the heading of its table in results.md.
        cpu_only: part of the CPU run (``benchmarks/cpu``); False for the accelerator
            section, which runs on its own.
        run: ``run(cfg, out, ctx) -> dict``, the measurement.
        display: position of its table in results.md (the issue's numbering).
        default: runs when no section is named; False for a section asked for by its
            own switch (reliability).
        prepare: ``prepare(cfg, ctx)``, called for every chosen section before the first
            one runs (reserve a shared step, start a child process early).
    """

    name: str
    title: str
    cpu_only: bool
    run: Callable[[BenchConfig, Path, "Context"], Result]
    display: int
    default: bool = True
    prepare: Callable[[BenchConfig, "Context"], None] | None = None


class Context:
    """State one benchmark run shares between its sections, created by the runner.

    Attributes:
        steps: train steps already traced (one section hands its step to a later one).
        background: child processes started ahead of the section that reads them.
    """

    def __init__(self) -> None:
        self.steps = TracedSteps()
        self.background = Background()

    def close(self) -> None:
        """Stops the background children and drops the traced steps."""
        self.background.stop()
        self.steps.clear()
