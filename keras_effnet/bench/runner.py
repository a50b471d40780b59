"""What the command line asks for (:class:`BenchRequest`), and the run: the chosen
benchmark sections, then ``results.json`` and ``results.md``."""

from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from keras_effnet.bench import report
from keras_effnet.bench import sections as registry
from keras_effnet.bench.config import BenchConfig, apply_overrides, full_config, quick_config
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.gpu import GPUUnavailable, gpu_name
from keras_effnet.cli import option
from keras_effnet.errors import ConfigError

__all__ = ["BenchRequest", "run", "run_section"]


@dataclasses.dataclass(frozen=True)
class BenchRequest:
    """One run of the benchmark as the command line asks for it: which sections, with
    which settings, and where the results go. Its fields are ``scripts/benchmark.py``'s
    flags, except ``overrides`` (``--set``, repeatable)."""

    quick: bool = option(False, help="Small settings: a few minutes on two CPU cores.")
    only: tuple[str, ...] | None = option(
        None, help=f"Sections to run, of: {', '.join(registry.SECTIONS)}. Results of sections not "
        "rerun are kept from the existing results.json.")
    reliability: bool = option(
        False, help="Also run the reliability checks (kill -9 and resume, serving and "
        "block-string fuzzing, a messy image folder).")
    gpu: bool = option(False, help="Run only the accelerator part (needs a visible GPU); "
                       "results go to benchmarks/gpu/.")
    out_dir: str | None = option(None, help="Output folder (default: benchmarks/cpu, or "
                                 "benchmarks/gpu with --gpu: in the checkout for "
                                 "scripts/benchmark.py, else in the current directory).")
    repeats: int | None = option(None, help="Timed rounds per comparison (default: 5).")
    # ``name=value`` settings of BenchConfig
    overrides: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        """``"gpu"`` for the accelerator run, else ``"cpu"``."""
        return "gpu" if self.gpu else "cpu"

    @property
    def merge(self) -> bool:
        """Whether to keep the sections of an existing results.json not rerun."""
        return self.only is not None

    def sections(self) -> list[str]:
        """The sections asked for, in run order (ConfigError naming ``only``/``gpu``)."""
        return registry.select(self.only, reliability=self.reliability, gpu=self.gpu)

    def config(self) -> BenchConfig:
        """The preset with the overrides, then ``repeats``, applied. A bad override
        raises ConfigError naming ``overrides``; a bad ``repeats``, naming ``repeats``."""
        preset = quick_config() if self.quick else full_config()
        try:
            config = apply_overrides(preset, self.overrides)
        except ConfigError as e:
            raise ConfigError(str(e), "overrides") from None
        if self.repeats is not None:
            config = dataclasses.replace(config, repeats=self.repeats)
        return config


def run_section(section: Section, cfg: BenchConfig, out: Path, ctx: Context,
                log: Callable[[str], None] = print) -> dict:
    """Runs one section and adds its title, mode, date and wall time. A failure is
    reported in the result, not raised, so one broken section does not lose the others
    (except :class:`GPUUnavailable`)."""
    started = time.perf_counter()
    log(f"[benchmark] {section.name}: {section.title} ...")
    date = report.utc_now()
    try:
        result = section.run(cfg, out, ctx)
    except GPUUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - reported in the table, the run goes on
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"[:500]}
    result.update(title=section.title, mode=cfg.mode, date=date,
                  wall_s=round(time.perf_counter() - started, 1))
    log(f"[benchmark] {section.name}: done in {result['wall_s']} s"
        + (f" (FAILED: {result['error']})" if result.get("error") else ""))
    return result


def run(config: BenchConfig, sections: Sequence[str], out_dir: str | Path, command: str,
        device: str = "cpu", merge: bool = False,
        log: Callable[[str], None] = print) -> dict:
    """Runs ``sections`` in run order and writes the results to ``out_dir``.

    Results are rewritten after every section, so an interrupted run keeps what it
    measured. With ``merge``, sections of an earlier ``results.json`` that this run does
    not repeat are kept (rerunning pieces).
    """
    registry.check_names(sections)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = report.load_results(out / "results.json") if merge else None
    accelerator = gpu_name() if device == "gpu" else None
    results = {"command": command, "date": report.utc_now(),
               "machine": report.machine_info(device, accelerator),
               "config": config.to_dict(), "sections": {}}
    started = time.perf_counter()
    chosen = [registry.get(name) for name in registry.SECTIONS if name in sections]
    ctx = Context()
    try:
        for section in chosen:
            if section.prepare is not None:
                section.prepare(config, ctx)
        for section in chosen:
            results["sections"][section.name] = run_section(section, config, out, ctx, log)
            results["wall_s"] = round(time.perf_counter() - started, 1)
            report.write_results(out, report.merge_results(previous, results),
                                 registry.DISPLAY_ORDER)
    finally:
        ctx.close()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    merged = report.merge_results(previous, results)
    json_path, md_path = report.write_results(out, merged, registry.DISPLAY_ORDER)
    log(f"[benchmark] wrote {json_path} and {md_path} ({results['wall_s']} s)")
    return merged
