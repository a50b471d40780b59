"""TF-Serving side files: ``models.config``, batching parameters and warmup requests;
and the rules every export shares: model names, version numbers, the export lock.

``models.config`` is regenerated from what is on disk after each export, through the
tensorflow-serving-api protos (so it always parses). Entries for models that are not
under the base directory, and version labels other than the two the exporter manages
(``stable`` -> newest version, ``previous`` -> the one before), are kept as found, so a
hand-set ``canary`` label survives the next export. A ``models.config`` that does not
parse (a typo, an unknown field) is copied to ``models.config.broken-<time>`` with a
:class:`ModelsConfigWarning` before it is regenerated: hand edits are never lost silently.

Versions are positive int64 (what TF-Serving loads; a larger directory name is ignored).
Exports reserve their version under the base directories' lock
(:func:`reserve_version`), so two exports started together never pick the same one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from keras_effnet.run_dir import write_text

__all__ = ["BatchingConfig", "MANAGED_LABELS", "MODELS_CONFIG", "BATCHING_PARAMETERS",
           "MAX_VERSION", "ModelsConfigWarning", "VersionExistsError", "check_model_name",
           "existing_versions", "export_lock", "next_version", "reserve_version",
           "update_models_config", "write_batching_parameters", "write_warmup_requests",
           "read_warmup_requests", "serving_api"]

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
MANAGED_LABELS = ("stable", "previous")
MAX_VERSION = 2 ** 63 - 1  # TF-Serving's versions are int64
_VERSION = re.compile(r"[0-9]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_NAME_BYTES = 200  # a directory name, with room for temporaries' suffixes
_LOCK_FILE = ".export.lock"
_RESERVED = re.compile(r"\.reserved-([0-9]+)")


class ModelsConfigWarning(UserWarning):
    """``models.config`` did not parse; a copy was kept before it was regenerated."""


class VersionExistsError(FileExistsError):
    """The requested ``<model_name>/<version>`` is already exported (or being exported)."""


def check_model_name(name: str) -> str | None:
    """Why ``name`` cannot be a served model name (None when it can): letters, digits,
    ``.``, ``_``, ``-``, starting with a letter or digit, nothing else (no newline)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return ("must be letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(it is a directory and a TF-Serving model name)")
    if len(name.encode()) > _MAX_NAME_BYTES:
        return f"must be at most {_MAX_NAME_BYTES} characters long"
    return None


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
    """Integer version directories under ``model_dir`` that TF-Serving would load (1 to
    :data:`MAX_VERSION`; larger numbers are not versions to it, and are ignored here)."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    versions = (int(p.name) for p in path.iterdir()
                if _VERSION.fullmatch(p.name) and p.is_dir())
    return sorted(v for v in versions if 1 <= v <= MAX_VERSION)


@contextlib.contextmanager
def export_lock(*base_dirs: str | os.PathLike) -> Iterator[None]:
    """Serialises exporters that share a base directory (advisory ``flock`` on
    ``<base>/.export.lock``, each base once, in a fixed order)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with contextlib.ExitStack() as stack:
        for base in sorted({str(Path(b).resolve()) for b in base_dirs}):
            Path(base).mkdir(parents=True, exist_ok=True)
            f = stack.enter_context(open(Path(base) / _LOCK_FILE, "a"))
            fcntl.flock(f, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
        yield


def _held(path: Path) -> bool:
    """Whether a live process holds the reservation file ``path`` (its flock)."""
    import fcntl
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _reserved_versions(model_dir: Path) -> list[int]:
    """Versions that live exports have reserved in ``model_dir``; stale reservation files
    (their exporter died) are removed. Call with the export lock held."""
    live = []
    if not model_dir.is_dir():
        return live
    for path in model_dir.iterdir():
        if (m := _RESERVED.fullmatch(path.name)):
            if _held(path):
                live.append(int(m.group(1)))
            else:
                path.unlink(missing_ok=True)
    return live


def next_version(*model_dirs: str | os.PathLike) -> int:
    """One more than the newest version existing or reserved in any of ``model_dirs``
    (1 for a new model). Raises :class:`VersionExistsError` past :data:`MAX_VERSION`."""
    taken = [v for d in model_dirs for v in existing_versions(d) + _reserved_versions(Path(d))]
    version = max(taken, default=0) + 1
    if version > MAX_VERSION:
        raise VersionExistsError(f"{', '.join(map(str, model_dirs))} already hold version "
                                 f"{MAX_VERSION}, the largest TF-Serving loads; export under "
                                 "another model_name.")
    return version


@contextlib.contextmanager
def reserve_version(bases: Sequence[str | os.PathLike], name: str,
                    version: int | None = None) -> Iterator[int]:
    """Reserves ``<base>/<name>/<version>`` in every base for the block (default: the
    next free version), under the export lock; yields the version.

    The reservation is a hidden ``.reserved-<version>`` file the block holds an ``flock``
    on: other exports skip the version while this process lives, and it lapses when the
    process dies. An explicit ``version`` that exists or is reserved raises
    :class:`VersionExistsError`.
    """
    import fcntl

    dirs = [Path(base) / name for base in bases]
    with contextlib.ExitStack() as stack:
        # Last on the way out: the model folders this export made, when it wrote nothing
        # in them (it failed), so TF-Serving's base path lists no empty model.
        made = [d for d in dirs if not d.exists()]
        stack.callback(_remove_empty, made, bases)
        with export_lock(*bases):
            if version is None:
                version = next_version(*dirs)
            else:
                for d in dirs:
                    if (d / str(version)).exists() or version in _reserved_versions(d):
                        raise VersionExistsError(
                            f"{d / str(version)} already exists (or another export is "
                            "writing it) and versions are never overwritten; omit the "
                            f"version to use the next free one ({next_version(*dirs)}).")
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
                marker = d / f".reserved-{version}"
                f = stack.enter_context(open(marker, "a"))
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stack.callback(marker.unlink, missing_ok=True)
        yield version


def _remove_empty(dirs: Sequence[Path], bases: Sequence[str | os.PathLike]) -> None:
    if not dirs:
        return
    with export_lock(*bases):  # not while another export is reserving in one of them
        for d in dirs:
            with contextlib.suppress(OSError):  # not empty: something was written
                d.rmdir()


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
            text_format.Parse(path.read_text(encoding="utf-8"), config)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            config = pb.ModelServerConfig()  # regenerated from disk, after a backup
            backup = path.with_name(f"{MODELS_CONFIG}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
                                    f"-{uuid.uuid4().hex[:6]}")
            shutil.copy2(path, backup)
            reason = str(e).splitlines()[0][:160]
            warnings.warn(ModelsConfigWarning(
                f"{path} did not parse ({reason}); kept it as {backup} and wrote a new one "
                "from the models on disk: copy any hand edits (labels, other models) back "
                "from the backup."), stacklevel=2)
    entries = {c.name: c for c in config.model_config_list.config}
    on_disk = {p.name: existing_versions(p) for p in sorted(base.iterdir())
               if p.is_dir() and check_model_name(p.name) is None}
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
    write_text(path, text_format.MessageToString(config))
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
        write_text(path, (batching or BatchingConfig()).to_text())
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
