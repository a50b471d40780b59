"""Searches: the EfficientNet paper's compound-coefficient grid and EfficientNetV2's
training-aware NAS, on a proxy task, on Optuna (``pip install 'keras_effnet[search]'``).

    import keras_effnet.search as search
    result = search.scaling(trials=20, epochs=10)        # alpha, beta, gamma
    result.best["coefficients"]                          # -> scale_to_macs(...)
    result = search.nas(trials=20, epochs=10, reward="v2")
    keras_effnet.build(arch=result.best["arch"], base="efficientnetv2-b0")

* :mod:`~keras_effnet.search.config`: :class:`SearchConfig` (the options, the flags of
  ``scripts/search.py``; pure Python).
* :mod:`~keras_effnet.search.space`: the constrained scaling grid, the NAS space over
  block strings, network identity (pure Python).
* :mod:`~keras_effnet.search.reward`: the v2 and mnas rewards, the Pareto front (pure).
* :mod:`~keras_effnet.search.study`: the Optuna study: storage, resume, duplicates.
* :mod:`~keras_effnet.search.proxy`: training a candidate, timing its train step.
* :mod:`~keras_effnet.search.runner`: the two searches and :func:`run`.
* :mod:`~keras_effnet.search.result`: result.json, table.md, the figure.

Nothing here imports TensorFlow or Optuna at import time.
"""

from __future__ import annotations

from typing import Any

from keras_effnet.search.config import SearchConfig

__all__ = ["SearchConfig", "run", "scaling", "nas"]


def run(config: SearchConfig, log: Any = None) -> Any:
    """Runs (or continues) the search ``config`` describes; returns the
    :class:`~keras_effnet.search.result.SearchResult`."""
    from keras_effnet.search.runner import run as run_search
    return run_search(config, log=log)


def scaling(**options: Any) -> Any:
    """The compound-coefficient grid search; ``options`` are :class:`SearchConfig`
    fields (``model``, ``width``, ``trials``, ``epochs``, ``target_ratio``, ...)."""
    return run(SearchConfig(search="scaling", **options))


def nas(**options: Any) -> Any:
    """The training-aware NAS; ``options`` are :class:`SearchConfig` fields (``reward``,
    ``sampler``, ``trials``, ...)."""
    return run(SearchConfig(search="nas", **options))
