"""The run directory: what a training run leaves behind, written by the trainer and read
by export, the benchmark and any later command.

    <model_dir>/
      config.json          RunConfig: the run's resolved configuration
      metrics.json         final and per-epoch metrics (the history grows epoch by epoch)
      labels.txt           class names, one per line, in the classifier's order
      final_model.keras    the trained model (EMA weights when the EMA is on)
      training_curves.png  loss / accuracy / image size per epoch
      checkpoints/         tf.train checkpoints (resume)
      logs/                TensorBoard scalars

This module is the one place that knows those names and the keys of ``config.json``.
Every JSON file is written atomically (a temporary file, then a rename), so a reader
never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RunDir", "RunConfig", "RunDirError", "write_json", "jsonable"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
FINAL_MODEL_FILE = "final_model.keras"
CURVES_FILE = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"


class RunDirError(ValueError):
    """A run directory that is missing, unfinished or unreadable; says which file."""


def jsonable(value: Any) -> Any:
    """``json.dump``'s ``default``: numpy scalars and arrays, then ``str``."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars (a scalar's is a Python number)
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, then rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=jsonable)
        f.write("\n")
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """``config.json``: the run's configuration after every default was resolved.

    ``model``, ``variant``, ``dataset``, ``num_classes``, ``class_names`` and
    ``eval_image_size`` are what readers need; the rest documents the run.
    """

    model: str
    variant: dict[str, Any]  # keras_effnet.variants.Variant.to_dict()
    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    eval_image_size: int
    data_dir: str | None = None  # absolute, or None for embedded / TFDS-managed data
    num_train: int | None = None
    num_val: int | None = None
    global_batch_size: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    strategy: str | None = None
    num_replicas: int | None = None
    precision: str | None = None
    learning_rate_schedule: dict[str, Any] | None = None
    plan: tuple[dict[str, Any], ...] = ()
    train_config: dict[str, Any] | None = None

    # The fields a resumed run must share with the run that wrote the checkpoint.
    RESUME_KEYS = ("variant", "num_classes", "dataset", "global_batch_size", "plan")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["class_names"] = list(self.class_names)
        out["plan"] = [dict(s) for s in self.plan]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise KeyError(", ".join(missing))
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["class_names"] = tuple(kwargs["class_names"])
        kwargs["plan"] = tuple(kwargs.get("plan") or ())
        return cls(**kwargs)

    def variant_record(self):
        """The run's :class:`~keras_effnet.variants.Variant`."""
        from keras_effnet.variants import Variant
        return Variant.from_dict(self.variant)


class RunDir:
    """A run directory at ``path`` (which need not exist yet)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # --- paths --------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def final_model_path(self) -> Path:
        return self.path / FINAL_MODEL_FILE

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    # --- state --------------------------------------------------------------------------

    def missing_outputs(self) -> list[str]:
        """The files a finished run has and this directory lacks."""
        return [p.name for p in (self.final_model_path, self.config_path)
                if not p.is_file()]

    def check_finished(self) -> None:
        """Raises :class:`RunDirError` unless this is a finished training run."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} does not exist or is not a directory; point it "
                              "at a training run directory (scripts/train.py --model_dir).")
        missing = self.missing_outputs()
        if missing:
            raise RunDirError(f"{self.path} has no {' or '.join(missing)}; is the training "
                              "run finished? (the trainer writes them at the end)")
        self.read_config()

    # --- config.json --------------------------------------------------------------------

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> RunConfig:
        path = self.config_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"cannot read {path} ({e}); is it a finished training "
                              "run?") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path} is not a JSON object; is it a training run's "
                              "config.json?")
        try:
            return RunConfig.from_dict(data)
        except (KeyError, TypeError) as e:
            raise RunDirError(f"{path} lacks {e}; was it written by keras_effnet's "
                              "trainer?") from None

    def write_config(self, config: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config.to_dict())

    # --- metrics.json -------------------------------------------------------------------

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` ({} when absent or unreadable: it is rewritten every epoch)."""
        try:
            data = json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def history(self, before_epoch: int | None = None) -> list[dict[str, Any]]:
        """The per-epoch records, those of epochs before ``before_epoch`` if given."""
        history = self.read_metrics().get("history", [])
        if before_epoch is None:
            return list(history)
        return [h for h in history if h.get("epoch", before_epoch) < before_epoch]

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.metrics_path, metrics)

    # --- labels.txt ---------------------------------------------------------------------

    def read_labels(self) -> list[str] | None:
        """Class names from ``labels.txt`` (None when the file is absent)."""
        if not self.labels_path.is_file():
            return None
        text = self.labels_path.read_text(encoding="utf-8")
        return [line.rstrip("\n") for line in text.splitlines()]

    def write_labels(self, class_names: list[str] | tuple[str, ...]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.labels_path.with_name(LABELS_FILE + ".tmp")
        tmp.write_text("\n".join(class_names) + "\n", encoding="utf-8")
        os.replace(tmp, self.labels_path)

    def class_names(self, num_classes: int | None = None) -> list[str]:
        """``labels.txt``, else config.json's names, else ``"0"``, ``"1"``, ..."""
        names = self.read_labels()
        if names is not None:
            return names
        if self.has_config():
            return list(self.read_config().class_names)
        return [str(i) for i in range(num_classes or 0)]

    # --- the model ----------------------------------------------------------------------

    def save_model(self, model: Any) -> Path:
        """Saves ``final_model.keras`` (through a temporary file, then a rename)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / ("tmp_" + FINAL_MODEL_FILE)
        model.save(tmp)
        os.replace(tmp, self.final_model_path)
        return self.final_model_path

    def load_model(self) -> Any:
        """The Keras 3 model in ``final_model.keras`` (not compiled)."""
        import keras
        return keras.models.load_model(self.final_model_path, compile=False)

    def eval_image_size(self, override: int | None = None) -> int:
        """The evaluation size: ``override``, else the run's, else its variant's."""
        if override:
            return int(override)
        config = self.read_config()
        if config.eval_image_size:
            return int(config.eval_image_size)
        return int(config.variant_record().eval_size)
