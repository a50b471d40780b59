"""tf.distribute strategy and mixed-precision resolution.

One training loop runs under every strategy (see ``trainer.py``); this module only
decides which strategy and which dtype policy a run uses.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator

__all__ = ["STRATEGIES", "PRECISIONS", "resolve_strategy", "resolve_precision",
           "is_chief", "worker_index", "describe_strategy", "dtype_policy"]

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}). Received: {raw[:200]!r}") from e


def _num_workers(config: dict) -> int:
    cluster = config.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy(name: str = "auto", tpu: str | None = None) -> Any:
    """A ``tf.distribute.Strategy`` for ``name``.

    ``auto``: TPU when ``tpu`` is given, multi-worker when TF_CONFIG lists more than one
    worker, mirrored over every GPU when there are several, else the default strategy.
    Must be called before any other TensorFlow op when it is multi_worker or tpu.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "auto":
        if tpu:
            name = "tpu"
        elif _num_workers(_tf_config()) > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        config = _tf_config()
        if not config:
            raise ValueError("strategy='multi_worker' needs TF_CONFIG describing the cluster "
                             "(cluster.worker addresses and this task's index) on every "
                             "worker; use strategy='default' for one machine.")
        communication = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)
    # tpu: the same training loop; only the strategy object differs.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def describe_strategy(strategy: Any) -> str:
    """``MirroredStrategy x2 replicas`` and the like, for logs."""
    workers = getattr(strategy.extended, "_num_workers", 1)
    text = f"{type(strategy).__name__} ({strategy.num_replicas_in_sync} replica(s)"
    return text + (f", {workers} workers)" if workers and workers > 1 else ")")


def is_chief(strategy: Any) -> bool:
    """True on the one worker that writes logs, plots and the real checkpoints."""
    extended = strategy.extended
    if not getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type = getattr(extended, "_task_type", None)
    task_id = getattr(extended, "_task_id", 0)
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in _tf_config().get("cluster", {}))


def worker_index(strategy: Any) -> int:
    """This worker's index (0 outside multi-worker training)."""
    return int(getattr(strategy.extended, "_task_id", 0) or 0)


def resolve_precision(precision: str, strategy: Any) -> str:
    """Keras dtype policy name: ``auto`` = bfloat16 on TPU, float16 on GPU, else float32."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}. "
                         f"Received: mixed_precision={precision!r}")
    if precision != "auto":
        return precision
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``name`` inside the block, restored after."""
    import keras
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
