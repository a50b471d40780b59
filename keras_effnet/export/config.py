"""What one export is asked to do: :class:`ExportConfig`, checked without TensorFlow.

Building an ExportConfig checks its options (formats, quantisation, pruning, counts);
:meth:`ExportConfig.validate` then checks the request against the disk (the run
directory, the model name, a free version), so a mistake costs a second, not a
TensorFlow import. Both raise :class:`~keras_effnet.errors.ConfigError` naming the field
(``"prune.epochs"`` for a field of the pruning config).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

from keras_effnet.cli import option
from keras_effnet.errors import ConfigError
from keras_effnet.export.formats import FORMATS, MIN_REPRESENTATIVE_IMAGES, QUANTIZE_MODES
from keras_effnet.export.prune import PruneConfig
from keras_effnet.export import serving_config
from keras_effnet.run_dir import RunConfig, RunDir, RunDirError

__all__ = ["ExportConfig", "ExportError", "DEFAULT_MODEL_NAME"]

# The served name of a model whose variant name is not a valid directory name.
DEFAULT_MODEL_NAME = "efficientnet-custom"
# Every variant evaluates at 600 px or less; a held-out image at 10^9 px was an OOM after
# the model folders were made.
MAX_IMAGE_SIZE = 4096


class ExportError(ConfigError):
    """A problem with what was asked for that is not one option's value (a run directory
    that is missing or unfinished, labels that do not fit the model); the message says
    what to do instead."""


def _check(ok: bool, field: str, rule: str, received: Any) -> None:
    if not ok:
        raise ConfigError(f"{field} {rule}. Received: {field}={received}", field)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Everything one export needs; ``scripts/export.py`` fills it from flags.

    Attributes:
        model_dir: a training run directory (final_model.keras, labels.txt, config.json).
        model: instead of ``model_dir``, a variant name or block strings, built untrained.
        num_classes: classifier width for ``model`` (ignored with ``model_dir``).
        formats: any of ``saved_model``, ``tflite`` (``keras_effnet.export.formats.FORMATS``).
        quantize: TFLite modes to write (``none``, ``float16``, ``dynamic``, ``int8``).
        prune: how to prune and fine-tune (None: no pruning); pruning writes sparse
            TFLite files, and ``serve_pruned`` also serves the pruned weights. A number
            is taken as the target sparsity of a default :class:`PruneConfig` (0: None),
            a dict as its fields.
        saved_models: TF-Serving base directory; tflite_dir: where TFLite files go.
        model_name, version: default the run's variant name and the next free version.
        dataset, data_dir: held-out data for accuracy (default: the run's).
        image_size: evaluation size (default: the run's ``eval_image_size``).
        max_eval_images: cap on held-out images evaluated per artifact (None: all).
        representative_images: int8 calibration images from the training split.
        compare_dense: with pruning, also convert the unpruned model to TFLite and report
            how much smaller the pruned file gzips (one more conversion: off in the main
            job's export, on in ``scripts/export.py``).
        serving_base_path: how TF-Serving sees ``saved_models`` (for models.config).
        max_pixels, top_k: serving signature settings.
    """

    model_dir: str | None = option(None, help="Training run directory (final_model.keras, "
                                   "labels.txt, config.json).")
    model: str | None = option(None, help="Instead of --model_dir: a variant name (or block "
                               "strings) to export untrained.")
    num_classes: int = option(1000, help="Classifier width for --model.")
    formats: tuple[str, ...] = option(("saved_model", "tflite"),
                                      help="saved_model and/or tflite.")
    quantize: tuple[str, ...] = option(("none",), help="TFLite flavours: none, float16, "
                                       "dynamic, int8 (a list writes one file each).")
    prune: PruneConfig | None = option(None, help="Target sparsity: prune + fine-tune.")
    compare_dense: bool = option(True, help="With --prune and tflite: also convert the "
                                 "unpruned model, to report how much smaller pruning "
                                 "makes the gzipped file (one more conversion).")
    serve_pruned: bool = option(False, help="Also serve the pruned weights (default: the "
                                "TF-Serving version is the dense trained model).")
    saved_models: str = option("saved_models", help="TF-Serving base directory.")
    tflite_dir: str = option("tflite", help="Where TFLite files go "
                             "(<dir>/<name>/<version>/).")
    model_name: str | None = option(None, help="Served model name (default: the variant "
                                    "name).")
    version: int | None = option(None, help="Version to write (default: the next free one).")
    allow_other_model: bool = option(
        False, help="Add the version even if the newest one served under the model name has "
        "other classes or another architecture (default: refused, naming both; use "
        "--model_name for an unrelated model).")
    dataset: str | None = option(None, help="Held-out data (default: the run's dataset).")
    data_dir: str | None = option(None, help="Its directory (default: the run's).")
    image_size: int | None = option(None, help="Evaluation size (default: the run's).")
    max_eval_images: int | None = option(None, help="Evaluate on at most this many held-out "
                                         "images per artifact (default: all).")
    representative_images: int = option(100, help="int8 calibration images (>= 100).")
    serving_base_path: str = option("/models", help="Where TF-Serving sees --saved_models "
                                    "(models.config base paths): /models in the official "
                                    "Docker image.")
    max_pixels: int = option(50_000_000, help="Serving refuses larger images.")
    top_k: int = option(5, help="Classes returned per image by serving_default.")

    def __post_init__(self):
        # Frozen: normalise through object.__setattr__ (lists and a bare string as tuples,
        # a number as a PruneConfig) before checking.
        for name in ("formats", "quantize"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.prune is not None and not isinstance(self.prune, PruneConfig):
            object.__setattr__(self, "prune", self._prune_config(self.prune))
        self._check_options()

    @staticmethod
    def _prune_config(value: Any) -> PruneConfig | None:
        """A target sparsity or a dict of PruneConfig fields, as a PruneConfig."""
        try:
            if isinstance(value, dict):
                return PruneConfig(**value)
            return PruneConfig(target_sparsity=float(value)) if value else None
        except ConfigError as e:
            raise ConfigError(str(e), f"prune.{e.field}" if e.field else "prune") from None

    def _check_options(self) -> None:
        _check(bool(self.formats) and set(self.formats) <= set(FORMATS), "formats",
               f"must be a list of {', '.join(FORMATS)}", ",".join(self.formats) or "nothing")
        _check(bool(self.quantize) and set(self.quantize) <= set(QUANTIZE_MODES), "quantize",
               f"must be a list of {', '.join(QUANTIZE_MODES)}",
               ",".join(self.quantize) or "nothing")
        if self.prune is not None and "tflite" not in self.formats and not self.serve_pruned:
            raise ConfigError("pruning needs formats to include tflite, or serve_pruned to "
                              "serve the pruned weights. Received: formats="
                              f"{','.join(self.formats)}", "prune")
        _check(self.num_classes >= 1, "num_classes", "must be >= 1", self.num_classes)
        _check(self.version is None or 1 <= self.version <= serving_config.MAX_VERSION,
               "version", f"must be an integer from 1 to {serving_config.MAX_VERSION} "
               "(TF-Serving's versions are int64)", self.version)
        _check("int8" not in self.quantize
               or self.representative_images >= MIN_REPRESENTATIVE_IMAGES,
               "representative_images", f"must be >= {MIN_REPRESENTATIVE_IMAGES} for int8 "
               "calibration", self.representative_images)
        _check(self.image_size is None or _is_image_size(self.image_size), "image_size",
               f"must be an integer from 1 to {MAX_IMAGE_SIZE}", self.image_size)
        _check(self.max_eval_images is None or self.max_eval_images >= 1, "max_eval_images",
               "must be >= 1 (or None: all)", self.max_eval_images)
        problem = self.model_name and serving_config.check_model_name(self.model_name)
        _check(not problem, "model_name", problem or "", repr(self.model_name))
        _check(self.top_k >= 1, "top_k", "must be >= 1", self.top_k)
        _check(self.max_pixels >= 1, "max_pixels", "must be >= 1", self.max_pixels)

    # --- the request against the disk ---------------------------------------------------

    def run_dir(self) -> RunDir | None:
        """The training run (None for an untrained build)."""
        return RunDir(self.model_dir) if self.model_dir else None

    def run_config(self) -> RunConfig | None:
        """The run's config.json (None for an untrained build)."""
        run = self.run_dir()
        if run is None:
            return None
        try:
            return run.read_config()
        except RunDirError as e:
            raise ExportError(str(e), "model_dir") from None

    def resolved_model_name(self) -> str:
        """``model_name``, else the run's (or ``model``'s) variant name when it is a valid
        directory name, else :data:`DEFAULT_MODEL_NAME`."""
        if self.model_name:
            return self.model_name
        run = self.run_config()
        if run is not None:
            name = (run.variant or {}).get("name") or run.model or ""
        else:
            name = self.model or ""
        return DEFAULT_MODEL_NAME if serving_config.check_model_name(name) else name

    def validate(self) -> None:
        """Raises :class:`ConfigError` (or :class:`ExportError`) unless the request can
        run: one model source, a finished run or a known variant, training images where
        calibration or pruning needs them, and a version not exported yet."""
        if bool(self.model_dir) == bool(self.model):
            raise ConfigError("pass exactly one of model_dir (a training run directory) or "
                              "model (a variant name: an untrained build). Received: "
                              f"model_dir={self.model_dir!r}, model={self.model!r}",
                              "model_dir")
        if self.model_dir:
            try:
                RunDir(self.model_dir).check_finished()
            except RunDirError as e:
                raise ExportError(str(e), "model_dir") from None
            size = self.run_config().eval_image_size
            if not self.image_size and size and not _is_image_size(size):
                raise ExportError(
                    f"{RunDir(self.model_dir).config_path} has eval_image_size={size!r}, "
                    f"not an image size (an integer from 1 to {MAX_IMAGE_SIZE}): restore "
                    "it, or pass image_size.", "model_dir")
        else:
            from keras_effnet.builder import resolve_variant
            try:
                resolve_variant(self.model)
            except ValueError as e:
                raise ConfigError(str(e), "model") from None
            if not self.dataset and ("int8" in self.quantize or self.prune is not None):
                raise ConfigError("int8 calibration and pruning need training images: set "
                                  "dataset (and data_dir) with model, or export a training "
                                  "run (model_dir)", "dataset")
        if self.version is not None:
            for target in self.version_dirs(self.resolved_model_name(), self.version):
                if target.exists():
                    raise ConfigError(f"{target} already exists and versions are never "
                                      "overwritten; omit version to use the next free one, "
                                      f"or pass a new number. Received: version={self.version}",
                                      "version")

    def version_dirs(self, name: str, version: int) -> list[Path]:
        """The directories this export would create for ``name`` / ``version``."""
        dirs = []
        if "saved_model" in self.formats:
            dirs.append(Path(self.saved_models) / name / str(version))
        if "tflite" in self.formats:
            dirs.append(Path(self.tflite_dir) / name / str(version))
        return dirs

    def bases(self) -> list[str]:
        """The base directories this export writes versions under."""
        return [base for fmt, base in (("saved_model", self.saved_models),
                                       ("tflite", self.tflite_dir)) if fmt in self.formats]

    def next_version(self, name: str) -> int:
        """The next version free (neither written nor reserved) in every output
        directory; :meth:`reserve_version` takes it safely."""
        return serving_config.next_version(*(Path(base) / name for base in self.bases()))

    @contextlib.contextmanager
    def reserve_version(self, name: str) -> Iterator[int]:
        """Holds ``version`` (or the next free one, chosen under the export lock) for
        ``name`` in every output directory while the block runs; yields it. Two exports
        started together get different versions; an explicit version another export
        holds raises :class:`ExportError`."""
        with contextlib.ExitStack() as stack:
            try:
                version = stack.enter_context(
                    serving_config.reserve_version(self.bases(), name, self.version))
            except serving_config.VersionExistsError as e:
                raise ExportError(str(e), "version") from None
            yield version


def _is_image_size(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and 1 <= value <= MAX_IMAGE_SIZE)
