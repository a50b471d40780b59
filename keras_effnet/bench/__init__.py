"""Benchmarks of keras_effnet (``scripts/benchmark.py`` is the command line).

* :mod:`~keras_effnet.bench.timing`: A/B interleaving, medians, ratios (pure Python).
* :mod:`~keras_effnet.bench.report`: machine description, ``results.json`` / ``.md``.
* :mod:`~keras_effnet.bench.plots`: the figures (matplotlib, PNG).
* :mod:`~keras_effnet.bench.reliability`: fuzzers, a messy image folder, kill -9.
* :mod:`~keras_effnet.bench.sections`: the measurements themselves.
* :mod:`~keras_effnet.bench.runner`: runs the chosen sections and writes the results.

Nothing here imports TensorFlow at import time.
"""

from keras_effnet.bench.config import (CPU_SECTIONS, SECTIONS, BenchConfig, apply_overrides,
                                       full_config, quick_config)
from keras_effnet.bench.report import (machine_info, markdown_table, render_markdown,
                                       write_results)
from keras_effnet.bench.timing import interleaved, median, ratio

__all__ = ["BenchConfig", "CPU_SECTIONS", "SECTIONS", "apply_overrides", "full_config",
           "interleaved", "machine_info", "markdown_table", "median", "quick_config", "ratio",
           "render_markdown", "write_results"]
