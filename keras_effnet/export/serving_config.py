"""TF-Serving side files: ``models.config``, batching parameters and warmup requests.

``models.config`` is regenerated from what is on disk after each export, through the
tensorflow-serving-api protos (so it always parses). Entries for models that are not
under the base directory, and version labels other than the two the exporter manages
(``stable`` -> newest version, ``previous`` -> the one before), are kept as found, so a
hand-set ``canary`` label survives the next export.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["BatchingConfig", "MANAGED_LABELS", "MODELS_CONFIG", "BATCHING_PARAMETERS",
           "existing_versions", "update_models_config", "write_batching_parameters",
           "write_warmup_requests", "read_warmup_requests", "serving_api"]

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
MANAGED_LABELS = ("stable", "previous")
_VERSION = re.compile(r"^[0-9]+$")


def serving_api():
    """The tensorflow_serving protos, or an ImportError naming the extra to install."""
    try:
        from tensorflow_serving.apis import (model_pb2, predict_pb2,  # noqa: F401
                                             prediction_log_pb2)
        from tensorflow_serving.config import model_server_config_pb2  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("TF-Serving export needs tensorflow-serving-api: "
                          "pip install 'keras_effnet[serving]'") from e
    import tensorflow_serving
    return tensorflow_serving


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer version directories under ``model_dir`` (what TF-Serving would load)."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and _VERSION.match(p.name))


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_models_config(base_dir: str | os.PathLike, serving_base_path: str = "/models",
                         keep_versions: int = 2) -> Path:
    """Rewrites ``<base_dir>/models.config`` for every model exported under ``base_dir``.

    Each model serves its newest ``keep_versions`` versions (plus any version a kept
    hand-set label points to), labelled ``stable`` (newest) and ``previous``.
    ``serving_base_path`` is where the server sees ``base_dir``: ``/models`` for the
    official Docker image with ``-v $PWD/saved_models:/models``, or an absolute local path.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as pb

    if keep_versions < 1:
        raise ValueError(f"keep_versions must be >= 1. Received: keep_versions={keep_versions}")
    base = Path(base_dir)
    path = base / MODELS_CONFIG
    config = pb.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError:
            config = pb.ModelServerConfig()  # unreadable: regenerate from disk
    entries = {c.name: c for c in config.model_config_list.config}
    on_disk = {p.name: existing_versions(p) for p in sorted(base.iterdir()) if p.is_dir()}
    for name, versions in on_disk.items():
        if not versions:
            continue
        entry = entries.get(name)
        if entry is None:
            entry = config.model_config_list.config.add()
            entry.name = name
            entry.base_path = f"{serving_base_path.rstrip('/')}/{name}"
            entry.model_platform = "tensorflow"
            entries[name] = entry
        kept = {k: v for k, v in entry.version_labels.items()
                if k not in MANAGED_LABELS and v in versions}
        served = sorted(set(versions[-keep_versions:]) | set(kept.values()))
        entry.model_version_policy.Clear()
        entry.model_version_policy.specific.versions.extend(served)
        entry.version_labels.clear()
        labels = dict(kept)
        labels["stable"] = versions[-1]
        if len(versions) > 1:
            labels["previous"] = versions[-2]
        for key in sorted(labels):
            entry.version_labels[key] = labels[key]
    _atomic_write_text(path, text_format.MessageToString(config))
    return path


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """``--batching_parameters_file`` for ``tensorflow_model_server --enable_batching``.

    The defaults favour latency on a single accelerator: a batch closes after 2 ms or
    32 requests. ``allowed_batch_sizes`` (ascending, last = ``max_batch_size``) pads
    batches to a few fixed sizes, which bounds the number of shapes a GPU compiles.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {field}={getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be >= 0. "
                             f"Received: batch_timeout_micros={self.batch_timeout_micros}")
        sizes = tuple(self.allowed_batch_sizes)
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size
                      or sizes[0] < 1):
            raise ValueError("allowed_batch_sizes must be increasing and end with "
                             f"max_batch_size={self.max_batch_size}. "
                             f"Received: allowed_batch_sizes={sizes}")

    def to_text(self) -> str:
        lines = [f"max_batch_size {{ value: {self.max_batch_size} }}",
                 f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
                 f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}",
                 f"num_batch_threads {{ value: {self.num_batch_threads} }}"]
        lines += [f"allowed_batch_sizes: {s}" for s in self.allowed_batch_sizes]
        return "\n".join(lines) + "\n"


def write_batching_parameters(base_dir: str | os.PathLike,
                              batching: BatchingConfig | None = None) -> Path:
    """Writes ``batching_parameters.txt``: from ``batching`` when given, else the
    defaults if the file does not exist yet (a hand-edited file is left alone)."""
    path = Path(base_dir) / BATCHING_PARAMETERS
    if batching is not None or not path.exists():
        _atomic_write_text(path, (batching or BatchingConfig()).to_text())
    return path


def write_warmup_requests(path: str | os.PathLike, model_name: str,
                          images: Sequence[bytes], batch_sizes: Iterable[int] = (1,)) -> int:
    """Writes TF-Serving warmup records (``PredictionLog``) for ``serving_default``.

    One ``PredictRequest`` per batch size, each carrying ``batch_size`` encoded images
    (cycling through ``images``). Returns the number of records.
    """
    import tensorflow as tf
    serving_api()
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if not images:
        raise ValueError("write_warmup_requests needs at least one encoded image.")
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch_size in batch_sizes:
            batch = [images[i % len(images)] for i in range(batch_size)]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = "serving_default"
            request.inputs["image_bytes"].CopyFrom(
                tf.make_tensor_proto(batch, dtype=tf.string, shape=[batch_size]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
            count += 1
    return count


def read_warmup_requests(path: str | os.PathLike) -> list:
    """The ``PredictRequest`` protos of a warmup file, in order (for checks and tests)."""
    import tensorflow as tf
    serving_api()
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        requests.append(log.predict_log.request)
    return requests
