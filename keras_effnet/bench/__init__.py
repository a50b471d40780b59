"""Benchmarks of keras_effnet (``scripts/benchmark.py`` is the command line).

* :mod:`~keras_effnet.bench.config`: what to measure (``BenchConfig``).
* :mod:`~keras_effnet.bench.sections`: the measurements, one module per section, and
  their registry (run order, titles).
* :mod:`~keras_effnet.bench.runner`: what the command line asks for (``BenchRequest``);
  runs the chosen sections and writes the results.
* :mod:`~keras_effnet.bench.child`: work run in a fresh Python process.
* :mod:`~keras_effnet.timing`: A/B interleaving, medians, ratios (pure Python; below both bench and search).
* :mod:`~keras_effnet.bench.report`: machine description, ``results.json`` / ``.md``.
* :mod:`~keras_effnet.bench.plots`: the figures (matplotlib, PNG).
* :mod:`~keras_effnet.bench.photos`: stand-in photographs (scikit-learn's samples).
* :mod:`~keras_effnet.bench.fuzz`: fuzzed block strings and serving requests.
* :mod:`~keras_effnet.bench.reliability`: a messy image folder, kill -9 and resume.
* :mod:`~keras_effnet.bench.measure`: a study of one architecture's deployment figures
  (``python -m keras_effnet.bench.measure``).

Nothing here imports TensorFlow at import time.
"""

from keras_effnet.bench.config import BenchConfig, apply_overrides, full_config, quick_config
from keras_effnet.bench.report import (machine_info, markdown_table, render_markdown,
                                       write_results)
from keras_effnet.bench.runner import BenchRequest
from keras_effnet.bench.sections import CPU_SECTIONS, SECTIONS
from keras_effnet.timing import interleaved, median, ratio

__all__ = ["BenchConfig", "BenchRequest", "CPU_SECTIONS", "SECTIONS", "apply_overrides",
           "full_config", "interleaved", "machine_info", "markdown_table", "median",
           "quick_config", "ratio", "render_markdown", "write_results"]
