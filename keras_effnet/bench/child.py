"""Benchmark work in a fresh Python process.

Some work cannot share the benchmark's process: TFLite conversion and pruning (importing
tensorflow-model-optimization switches a process to legacy Keras), and the serving fuzz
(a crash there must not take the whole benchmark down). :class:`Child` runs one
module-level function ``fn(cfg, out) -> dict`` as::

    python -m keras_effnet.bench.sections <module:function> <config.json> <out_dir> <result.json>

and reads back its JSON result. :class:`Background` holds children started ahead of the
section that reads them.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["Child", "Background", "run_in_child", "main"]

# The package whose __main__ calls main(): running a submodule of keras_effnet.bench with
# -m would import it twice (the package's imports already loaded it).
ENTRY_MODULE = "keras_effnet.bench.sections"

Job = Callable[["BenchConfig", Path], dict[str, Any]]


def _job_name(fn: Job) -> str:
    if "." in fn.__qualname__ or fn.__module__ == "__main__":
        raise ValueError(f"a child runs a module-level function; received {fn!r}")
    return f"{fn.__module__}:{fn.__qualname__}"


class Child:
    """``fn(cfg, out)`` run in a fresh Python process, started now; :meth:`result`
    waits for it. ``out`` is ``self.work / "out"`` unless given."""

    def __init__(self, fn: Job, cfg: BenchConfig, out: Path | None = None):
        job = _job_name(fn)
        self.work = Path(tempfile.mkdtemp(prefix=f"keras_effnet_bench_{fn.__name__}_"))
        self.out = out or self.work / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self.result_path = self.work / "result.json"
        config_path = self.work / "config.json"
        config_path.write_text(json.dumps(cfg.to_dict()))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                                       "3")}
        self.log = open(self.work / "output.txt", "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", ENTRY_MODULE, job, str(config_path), str(self.out),
             str(self.result_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def result(self, timeout: float = 3600) -> dict[str, Any]:
        """The child's result, or ``{"error": ...}``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"error": f"timed out after {timeout:.0f} s"}
        finally:
            self.log.close()
        if self.proc.returncode != 0 or not self.result_path.exists():
            text = (self.work / "output.txt").read_text(errors="replace").strip()
            tail = [line for line in text.splitlines() if line.strip()][-5:]
            return {"error": f"exit status {self.proc.returncode}: " + " | ".join(tail)}
        result = json.loads(self.result_path.read_text())
        result["child_wall_s"] = round(time.perf_counter() - self.started, 1)
        return result

    def cleanup(self) -> None:
        """Kills the process if it still runs and removes its work folder."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


def run_in_child(fn: Job, cfg: BenchConfig, out: Path, timeout: float = 3600
                 ) -> dict[str, Any]:
    """Runs ``fn(cfg, out)`` in a fresh Python process; its result, or
    ``{"error": ...}``."""
    child = Child(fn, cfg, out)
    try:
        return child.result(timeout)
    finally:
        child.cleanup()


class Background:
    """Children started ahead of the section that reads them, by key: untimed CPU work
    can overlap the first sections (their A/B rounds are interleaved, so ratios hold;
    their absolute times run slower)."""

    def __init__(self) -> None:
        self._children: dict[str, Child] = {}

    def start(self, key: str, fn: Job, cfg: BenchConfig) -> None:
        """Starts ``fn(cfg, out)`` now, unless ``key`` already runs."""
        if key not in self._children:
            self._children[key] = Child(fn, cfg)

    def take(self, key: str) -> Child | None:
        """The child started under ``key`` (now the caller's to clean up), or None."""
        return self._children.pop(key, None)

    def stop(self) -> None:
        """Kills and cleans up every child not taken."""
        for key in list(self._children):
            self._children.pop(key).cleanup()


def main(argv: list[str]) -> int:
    """The child's side: ``argv[1:5]`` = job, config.json, out folder, result.json."""
    from keras_effnet.bench.config import BenchConfig
    from keras_effnet.bench.report import json_ready
    from keras_effnet.run_dir import write_json

    job, config_path, out_dir, result_path = argv[1:5]
    module, _, name = job.partition(":")
    fn = getattr(importlib.import_module(module), name)
    config = BenchConfig.from_dict(json.loads(Path(config_path).read_text()))
    result = fn(config, Path(out_dir))
    write_json(result_path, json_ready(result))
    return 0
