"""Runs the chosen benchmark sections and writes ``results.json`` and ``results.md``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from keras_effnet.bench import report
from keras_effnet.bench import sections as sections_lib
from keras_effnet.bench.config import DISPLAY_ORDER, SECTIONS, BenchConfig

__all__ = ["run"]


def run(config: BenchConfig, sections: Sequence[str], out_dir: str | Path, command: str,
        device: str = "cpu", merge: bool = False,
        log: Callable[[str], None] = print) -> dict:
    """Runs ``sections`` in order and writes the results to ``out_dir``.

    Results are rewritten after every section, so an interrupted run keeps what it
    measured. With ``merge``, sections of an earlier ``results.json`` that this run does
    not repeat are kept (``--only`` reruns pieces).
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = report.load_results(out / "results.json") if merge else None
    accelerator = None
    if device == "gpu":
        from keras_effnet.bench.sections import gpu_name
        accelerator = gpu_name()
    results = {"command": command, "date": report.utc_now(),
               "machine": report.machine_info(device, accelerator),
               "config": config.to_dict(), "sections": {}}
    started = time.perf_counter()
    order = [s for s in SECTIONS if s in sections]
    sections_lib.start_background(config, order)
    try:
        for name in order:
            results["sections"][name] = sections_lib.run_section(name, config, out, log)
            results["wall_s"] = round(time.perf_counter() - started, 1)
            report.write_results(out, report.merge_results(previous, results),
                                 DISPLAY_ORDER)
    finally:
        sections_lib.stop_background()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    merged = report.merge_results(previous, results)
    json_path, md_path = report.write_results(out, merged, DISPLAY_ORDER)
    log(f"[benchmark] wrote {json_path} and {md_path} ({results['wall_s']} s)")
    return merged
