"""The benchmark sections: one module per section, each declaring its
:class:`~keras_effnet.bench.sections.base.Section` record; this registry holds them in
run order, and every list of section names (``keras_effnet.bench.config.SECTIONS``, ...)
and title derives from it.

Run order: cheap and independent sections first; "train" before "pipeline" (which reuses
its traced step); "search" (the longest) after the other training sections ("transfer"
among them); "tflite" last
of the default ones (its conversion child may have run in the background since the
start); "reliability" only when asked for; "gpu" on its own.

    python -m keras_effnet.bench.sections <module:function> <config.json> <out_dir> <result.json>

runs one function in a fresh process (see :mod:`keras_effnet.bench.child`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from keras_effnet.bench.sections import (build, gpu, main_job, mfu, pipeline, plots,
                                         progressive, reliability, search, serving,
                                         stage_cost, tflite, train, transfer, weights)
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.errors import ConfigError

__all__ = ["REGISTRY", "SECTIONS", "CPU_SECTIONS", "DISPLAY_ORDER", "TITLES", "Context",
           "Section", "get", "check_names", "select"]


def _validated(records: tuple[Section, ...]) -> tuple[Section, ...]:
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        raise ValueError(f"section names must be unique. Received: {names}")
    displays = [r.display for r in records]
    if sorted(displays) != list(range(len(records))):
        raise ValueError(f"section display positions must be 0..{len(records) - 1}, once "
                         f"each. Received: {dict(zip(names, displays))}")
    if not any(r.cpu_only and r.default for r in records):
        raise ValueError("at least one section must run by default.")
    return records


# In run order.
REGISTRY: tuple[Section, ...] = _validated((
    plots.SECTION, build.SECTION, train.SECTION, pipeline.SECTION, mfu.SECTION,
    serving.SECTION, progressive.SECTION, main_job.SECTION, stage_cost.SECTION,
    transfer.SECTION, weights.SECTION, search.SECTION,
    tflite.SECTION,
    reliability.SECTION,
    gpu.SECTION))

SECTIONS = tuple(r.name for r in REGISTRY)
# The CPU run's default sections (no section named, no switch).
CPU_SECTIONS = tuple(r.name for r in REGISTRY if r.cpu_only and r.default)
# The order of the tables in results.md.
DISPLAY_ORDER = tuple(r.name for r in sorted(REGISTRY, key=lambda r: r.display))
TITLES = {r.name: r.title for r in REGISTRY}
_BY_NAME = {r.name: r for r in REGISTRY}
_ACCELERATOR = tuple(r.name for r in REGISTRY if not r.cpu_only)
_OPT_IN = tuple(r.name for r in REGISTRY if r.cpu_only and not r.default)


def get(name: str) -> Section:
    """The record of section ``name`` (ConfigError naming ``only`` when unknown)."""
    check_names([name])
    return _BY_NAME[name]


def check_names(names: Iterable[str]) -> None:
    """ConfigError (field ``only``) unless every name is a section's."""
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(SECTIONS)}", "only")


def select(only: Sequence[str] | None = None, reliability: bool = False,
           gpu: bool = False) -> list[str]:
    """The sections a request names, in run order.

    Args:
        only: the sections to run (None: the default CPU sections).
        reliability: add the reliability checks (opt-in sections) to a CPU run.
        gpu: the accelerator run, on its own.

    Raises:
        ConfigError: naming ``only`` or ``gpu``.
    """
    if only is not None:
        check_names(only)
        if not only:
            raise ConfigError(f"only must name at least one section of "
                              f"{', '.join(SECTIONS)}. Received: only=''", "only")
    if gpu:
        if only and set(only) != set(_ACCELERATOR):
            raise ConfigError(f"gpu runs the accelerator part on its own; leave only unset. "
                              f"Received: only={','.join(only)}", "gpu")
        return list(_ACCELERATOR)
    accelerator = [n for n in only or () if n in _ACCELERATOR]
    if accelerator:
        raise ConfigError(f"the {', '.join(accelerator)} section runs only in the "
                          f"accelerator run, gpu=True (results go to benchmarks/gpu). "
                          f"Received: only={','.join(only)}", "only")
    wanted = set(only or CPU_SECTIONS)
    if reliability:
        wanted.update(_OPT_IN)
    return [n for n in SECTIONS if n in wanted]
