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
Every file is written atomically (:func:`atomic_path`: a hidden temporary file in the
same directory, then a rename), so a reader never sees half a file, and a failed write
(a full disk) leaves the previous file, or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from keras_effnet.errors import ConfigError

__all__ = ["RunDir", "RunConfig", "RunDirError", "atomic_path", "write_text", "write_json",
           "jsonable"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
FINAL_MODEL_FILE = "final_model.keras"
CURVES_FILE = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"


class RunDirError(ConfigError):
    """A run directory that is missing, unfinished, unreadable or unwritable, or that
    holds another run; says which file and what to do. Its field is ``model_dir``."""

    def __init__(self, message: str, field: str | None = "model_dir"):
        super().__init__(message, field)


def jsonable(value: Any) -> Any:
    """``json.dump``'s ``default``: numpy scalars and arrays, then ``str``."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars (a scalar's is a Python number)
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _first_difference(where: str, theirs: Any, ours: Any) -> tuple[str, Any, Any]:
    """The path of the first entry where two (nested) records differ, and both values
    there in full: ``("variant.width", 1.0, 1.2)``, not two records cut short."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in list(theirs) + [k for k in ours if k not in theirs]:
            if theirs.get(key, _MISSING) != ours.get(key, _MISSING):
                return _first_difference(f"{where}.{key}", theirs.get(key, _MISSING),
                                         ours.get(key, _MISSING))
    if isinstance(theirs, (list, tuple)) and isinstance(ours, (list, tuple)) and \
            len(theirs) == len(ours) and all(isinstance(a, dict) for a in theirs):
        for i, (a, b) in enumerate(zip(theirs, ours)):
            if a != b:
                return _first_difference(f"{where}[{i}]", a, b)
    return where, theirs, ours


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def current_umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path`` (hidden, same extension) to write to; renamed
    onto ``path`` when the block ends, after an fsync, and removed if it raises.

    The one way the package writes a file that another step reads::

        with atomic_path("run/final_model.keras") as tmp:
            model.save(tmp)
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=os.path.splitext(name)[1],
                               dir=directory or ".")
    os.close(fd)
    # mkstemp makes 0600; the file gets the mode open() would give it, so a TF-Serving
    # container running as another user can read what the package writes.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=jsonable) + "\n")


def _comparable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists), to compare with a file."""
    return json.loads(json.dumps(value, default=jsonable))


def has_line_break(name: str) -> bool:
    """Whether ``name`` holds a character any line reader splits on (``str.splitlines``:
    newline, carriage return, U+0085, U+2028, ...)."""
    return name.splitlines() != [name]


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
    # Fine-tuning: starting weights (absolute path), freeze, unfreeze epoch and LR factor;
    # None for a run from scratch with nothing frozen.
    fine_tune: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None

    # The fields a resumed run must share with the run that wrote the checkpoint: the
    # same network, trained on the same data (source, directory and class names, so
    # cat/dog weights never continue as apple/pear), with the same batch and plan, from
    # the same starting weights under the same freeze schedule (the checkpoint is that
    # run's; resumed under another it would become neither).
    RESUME_KEYS = ("variant", "num_classes", "dataset", "data_dir", "class_names",
                   "global_batch_size", "plan", "fine_tune")

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

    def check_writable(self) -> None:
        """Raises :class:`RunDirError` unless this path is a directory that can be written
        (or can be created): not a file, not under a file, not read-only. Creates
        nothing. Remote paths (``gs://...``) are not checked."""
        if "://" in str(self.path):
            return
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            where = "is a file" if existing == self.path else f"is inside {existing}, a file"
            raise RunDirError(f"{self.path} {where}, not a directory; pass a directory "
                              "for model_dir (a new one starts a run, a run's resumes it).")
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".keras_effnet_probe"):
                pass
        except OSError as e:
            raise RunDirError(f"cannot write in {existing} ({e.strerror or e}); pass a "
                              "model_dir you can write to.") from None

    def check_resume(self, config: RunConfig) -> None:
        """Raises :class:`RunDirError` unless the run that wrote this directory's
        checkpoint (its ``config.json``) is ``config``'s: same network, data source,
        data directory, class names, global batch and plan. Call it before writing
        anything, so a refused run leaves the first run's ``config.json`` untouched."""
        if not self.has_config():
            return
        saved = self.read_config()
        for key in RunConfig.RESUME_KEYS:
            theirs, ours = _comparable(getattr(saved, key)), _comparable(getattr(config, key))
            if theirs != ours:
                where, theirs, ours = _first_difference(key, theirs, ours)
                raise RunDirError(
                    f"{self.path} holds a checkpoint of another run: its {where} is "
                    f"{theirs!r} ({self.config_path}), this run's is {ours!r}; use a new "
                    "model_dir, or that run's options to resume it.")

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
        fix = ("restore it, or delete it and rerun the training command (it resumes "
               "from the last checkpoint and writes the file again)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{path} does not exist; is {self.path} a finished training "
                              "run?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"cannot read {path} ({e}); {fix}.") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path} is not a JSON object, not a training run's "
                              f"config.json; {fix}.")
        try:
            return RunConfig.from_dict(data)
        except (KeyError, TypeError) as e:
            raise RunDirError(f"{path} lacks {e} (not written by keras_effnet's trainer); "
                              f"{fix}.") from None

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
        # One name per "\n" (as written, and as TF-Serving's label table reads it).
        text = self.labels_path.read_text(encoding="utf-8")
        return [line.rstrip("\r") for line in text.split("\n")[:-1 if text.endswith("\n")
                                                                 else None]]

    def write_labels(self, class_names: list[str] | tuple[str, ...]) -> None:
        bad = [name for name in class_names if has_line_break(name)]
        if bad:
            raise RunDirError(f"class names must not hold line breaks (labels.txt has one "
                              f"name per line). Received: {bad[:3]}", "class_names")
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.labels_path, "".join(f"{name}\n" for name in class_names))

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
        """Saves ``final_model.keras`` atomically: a failed save (a full disk) leaves the
        previous file or none, and raises :class:`RunDirError` saying what to do."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(self.final_model_path) as tmp:
                model.save(tmp)
        except OSError as e:
            raise RunDirError(
                f"cannot write {self.final_model_path} ({e.strerror or e}); nothing was "
                "left half-written. Free some space (or fix the permissions), then rerun "
                "the training command: it resumes from the last checkpoint and writes the "
                "outputs.") from e
        return self.final_model_path

    def load_model(self) -> Any:
        """The Keras 3 model in ``final_model.keras`` (not compiled); a file Keras cannot
        read raises :class:`RunDirError` naming it."""
        import keras
        try:
            return keras.models.load_model(self.final_model_path, compile=False)
        except Exception as e:  # Keras raises many types for a damaged archive
            raise RunDirError(
                f"cannot load {self.final_model_path} ({type(e).__name__}: "
                f"{str(e)[:200]}); rerun the training command to write it again (it "
                "resumes from the last checkpoint).") from e

    def eval_image_size(self, override: int | None = None) -> int:
        """The evaluation size: ``override``, else the run's, else its variant's."""
        if override:
            return int(override)
        config = self.read_config()
        if config.eval_image_size:
            return int(config.eval_image_size)
        return int(config.variant_record().eval_size)
