"""Keras 3 model -> versioned SavedModel that TF-Serving loads as it is written.

Layout (what ``tensorflow_model_server --model_base_path`` polls)::

    saved_models/
      models.config                  model_config_list, version labels (regenerated)
      batching_parameters.txt        for --enable_batching
      <model_name>/<version>/        saved_model.pb, variables/, assets/labels.txt,
                                     assets.extra/tf_serving_warmup_requests

A version is written into a hidden sibling (``.tmp-<version>-...``, which TF-Serving
ignores: it only loads integer-named directories) and renamed into place when complete,
so the server never sees half a model. Existing versions are never overwritten; an
export that fails or is killed leaves no version directory (a killed one leaves a
hidden temporary, removed by the next export). Versions are int64, chosen under the
base directory's lock (:mod:`~keras_effnet.export.serving_config`).

The export uses Keras 3's ``keras.export.ExportArchive``: ``tf.saved_model.save`` on a
Keras 3 model loses the input names and dtypes TF-Serving clients rely on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from keras_effnet.builder import model_image_size  # re-exported: the serving size
from keras_effnet.errors import ConfigError
from keras_effnet.export import images as images_lib
from keras_effnet.export import serving_config
from keras_effnet.export.report import Artifact
from keras_effnet.export.serving_config import VersionExistsError
from keras_effnet.run_dir import has_line_break

if TYPE_CHECKING:  # for the hints only: this module need not load the export's others
    from keras_effnet.export.context import ExportContext

__all__ = ["SavedModelExport", "ServingSpec", "VersionExistsError", "build_export_archive",
           "export_saved_model", "next_version", "sample_image_bytes", "model_image_size",
           "OtherModelError",
           "export"]

WARMUP_FILE = "tf_serving_warmup_requests"
LABELS_FILE = "labels.txt"
INFO_FILE = "keras_effnet_export.json"
_TMP_PREFIX = ".tmp-"


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """What the serving signatures need besides the model."""

    image_size: int
    class_names: tuple[str, ...]
    top_k: int = 5
    max_pixels: int = images_lib.DEFAULT_MAX_PIXELS

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer. "
                             f"Received: image_size={self.image_size!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1. Received: top_k={self.top_k}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1. Received: max_pixels={self.max_pixels}")
        bad = [c for c in self.class_names if has_line_break(c)]
        if bad:
            raise ValueError(f"class names must not contain line breaks. Received: {bad[:3]}")


@dataclasses.dataclass(frozen=True)
class SavedModelExport:
    """Where an export went."""

    path: Path
    model_name: str
    version: int
    size_bytes: int
    models_config: Path
    batching_parameters: Path
    warnings: tuple[str, ...] = ()  # e.g. a broken models.config kept as a backup


def next_version(model_dir: str | os.PathLike) -> int:
    """One more than the newest version existing or reserved (1 for a new model)."""
    return serving_config.next_version(model_dir)


def sample_image_bytes(image_size: int | None = None) -> bytes:
    """A real photograph (scikit-learn's ``china.jpg``) as JPEG bytes, downscaled so its
    shorter side is ``image_size + 32`` when given (keeps warmup files small)."""
    import sklearn.datasets
    import tensorflow as tf

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    data = path.read_bytes()
    if image_size is None:
        return data
    image = tf.io.decode_jpeg(data, channels=3)
    height, width = int(image.shape[0]), int(image.shape[1])
    short = image_size + 32  # the eval crop keeps size / (size + 32) of the short side
    scale = short / min(height, width)
    if scale >= 1:
        return data
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    small = tf.cast(tf.clip_by_value(tf.image.resize(image, size, antialias=True), 0, 255),
                    tf.uint8)
    return tf.io.encode_jpeg(small, quality=90).numpy()


def build_export_archive(model: Any, spec: ServingSpec, labels_path: str | os.PathLike):
    """A ``keras.export.ExportArchive`` with the ``serving_default`` and
    ``predict_images`` signatures. ``labels_path`` (one class name per line) becomes the
    ``assets/labels.txt`` that the ``labels`` output is looked up from."""
    import keras
    import tensorflow as tf

    classes = int(model.output_shape[-1])
    if len(spec.class_names) != classes:
        raise ValueError(f"The model has {classes} classes but {len(spec.class_names)} class "
                         "names were given.")
    size, k = spec.image_size, min(spec.top_k, classes)
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(labels_path), key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER, value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")

    def non_empty(batch, what):
        # TF's convolutions reject an empty batch with an obscure shape error.
        check = tf.debugging.assert_positive(
            tf.shape(batch)[0], message=f"{what} holds no image; send at least one")
        with tf.control_dependencies([check]):
            return tf.identity(batch)

    def outputs(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "classes": indices, "scores": scores,
                "labels": table.lookup(tf.cast(indices, tf.int64))}

    # The decode is a function of its own, called, not inlined into the signature's graph:
    # inlined, its loops and branches slowed the model after them (the signature took
    # ~15 % longer than the decode and the model called one after the other, batch 32).
    decode = tf.function(lambda b: images_lib.decode_batch(b, size, spec.max_pixels),
                         input_signature=[tf.TensorSpec([None], tf.string)],
                         autograph=False, experimental_attributes={"_noinline": True})

    def serving_default(image_bytes):
        return outputs(decode(non_empty(image_bytes, "image_bytes")))

    def predict_images(images):
        return outputs(images_lib.check_finite(non_empty(images, "images")))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(table)
    archive.add_endpoint("serving_default", serving_default,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("predict_images", predict_images,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                        name="images")])
    return archive


class OtherModelError(ConfigError):
    """The served model's newest version has other classes or another architecture (a
    :class:`ConfigError` of ``model_name``: the CLI prints it as one line)."""

    def __init__(self, message: str):
        super().__init__(message, "model_name")


def _architecture(model: Any) -> str:
    """What identifies the network behind a version: its name and parameter count."""
    return f"{model.name} ({model.count_params():,} parameters)"


def _newest_version(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()
                and int(p.name) <= serving_config.MAX_VERSION] if model_dir.is_dir() else []
    return max(versions, key=lambda p: int(p.name), default=None)


def _check_same_model(model_dir: Path, model_name: str, spec: ServingSpec,
                      architecture: str) -> None:
    newest = _newest_version(model_dir)
    if newest is None:
        return
    labels = newest / "assets" / LABELS_FILE
    try:
        theirs = labels.read_text(encoding="utf-8").splitlines()
    except OSError:
        return  # not one of ours (or damaged): nothing to compare
    try:
        info = json.loads((newest / "assets.extra" / INFO_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    what = None
    if list(theirs) != list(spec.class_names):
        what = (f"its classes are {_short(theirs)}, this model's {_short(spec.class_names)}")
    elif info.get("architecture") not in (None, architecture):
        what = f"it is {info['architecture']}, this model {architecture}"
    if what:
        raise OtherModelError(
            f"{model_dir} serves another model as {model_name!r} (version {newest.name}): "
            f"{what}. Export under its own name (model_name=..., --model_name) or, to "
            "change what clients of that name get, pass allow_other_model=True "
            "(--allow_other_model). Nothing was written.")


def _short(names) -> str:
    names = list(names)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} [{shown}]"


def _remove_stale_temporaries(model_dir: Path) -> None:
    # Called with the lock held, so any temporary left is from a dead exporter.
    for path in model_dir.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_name(model_name: str) -> str:
    problem = serving_config.check_model_name(model_name)
    if problem:
        raise ValueError(f"model_name {problem}. Received: model_name={model_name!r}")
    return model_name


def export_saved_model(model: Any, base_dir: str | os.PathLike = "saved_models", *,
                       model_name: str | None = None, version: int | None = None,
                       class_names: Sequence[str] | None = None,
                       image_size: int | None = None, top_k: int = 5,
                       max_pixels: int = images_lib.DEFAULT_MAX_PIXELS,
                       warmup: bool = True, warmup_images: Sequence[bytes] | None = None,
                       warmup_batch_sizes: Sequence[int] = (1,),
                       serving_base_path: str = "/models",
                       batching: serving_config.BatchingConfig | None = None,
                       keep_versions: int = 2,
                       metadata: dict[str, Any] | None = None,
                       allow_other_model: bool = False) -> SavedModelExport:
    """Exports ``model`` as ``<base_dir>/<model_name>/<version>/``, atomically.

    Args:
        model: a Keras 3 classifier taking float32 pixels in [0, 255].
        base_dir: the TF-Serving base directory.
        model_name: default ``model.name``.
        version: default the next free integer (chosen under the base directory's
            lock); an existing one raises :class:`VersionExistsError`. At most
            :data:`~keras_effnet.export.serving_config.MAX_VERSION` (int64).
        class_names: default ``"0" .. "<classes-1>"``.
        image_size: evaluation size (default: the model's static input size or its
            variant's ``eval_size``).
        top_k: how many ``classes`` / ``labels`` / ``scores`` per image.
        max_pixels: images the decoder would allocate more pixels for (a GIF: its first
            frame, the only one decoded) are refused before decoding.
        warmup, warmup_images, warmup_batch_sizes: the warmup records (default image:
            a real photograph shipped with scikit-learn).
        serving_base_path: how the server sees ``base_dir`` (for ``models.config``).
        batching: batching parameters to write (default: keep the file, or create it).
        keep_versions: how many newest versions ``models.config`` serves.
        metadata: extra JSON written to ``assets.extra/keras_effnet_export.json``.
        allow_other_model: add the version even when the newest version served under
            ``model_name`` has other classes or another architecture (what its clients
            get changes). By default that raises :class:`OtherModelError` naming both,
            and nothing is written: unrelated models belong under their own names.

    Example:
        >>> export_saved_model(model, "saved_models", model_name="photos",
        ...                    class_names=["cat", "dog"])   # saved_models/photos/1/
    """
    classes = int(model.output_shape[-1])
    spec = ServingSpec(image_size=model_image_size(model, image_size),
                       class_names=tuple(class_names) if class_names is not None
                       else tuple(str(i) for i in range(classes)),
                       top_k=top_k, max_pixels=max_pixels)
    model_name = _check_name(model_name or model.name)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 1 <= version <= serving_config.MAX_VERSION):
        raise ValueError("version must be an integer from 1 to "
                         f"{serving_config.MAX_VERSION} (TF-Serving's int64). "
                         f"Received: version={version!r}")
    base = Path(base_dir)
    model_dir = base / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    with serving_config.export_lock(base), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", serving_config.ModelsConfigWarning)
        _remove_stale_temporaries(model_dir)
        if not allow_other_model:
            _check_same_model(model_dir, model_name, spec, _architecture(model))
        if version is None:
            version = next_version(model_dir)
        final = model_dir / str(version)
        if final.exists():
            raise VersionExistsError(
                f"{final} already exists and versions are never overwritten; omit the "
                f"version to export as the next free one ({next_version(model_dir)}).")
        tmp = model_dir / f"{_TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write_version(model, spec, tmp, model_name, warmup, warmup_images,
                           warmup_batch_sizes, metadata)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        models_config = serving_config.update_models_config(
            base, serving_base_path=serving_base_path, keep_versions=keep_versions)
        batching_parameters = serving_config.write_batching_parameters(base, batching)
    for warning in caught:  # passed on, and reported with the export
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    return SavedModelExport(path=final, model_name=model_name, version=version,
                            size_bytes=_tree_size(final), models_config=models_config,
                            batching_parameters=batching_parameters,
                            warnings=tuple(str(w.message) for w in caught
                                           if issubclass(w.category,
                                                         serving_config.ModelsConfigWarning)))


def _write_version(model, spec: ServingSpec, path: Path, model_name: str, warmup: bool,
                   warmup_images, warmup_batch_sizes, metadata) -> None:
    if warmup:
        serving_config.serving_api()  # fail before the slow part if the extra is missing
    with tempfile.TemporaryDirectory() as work:
        labels = Path(work) / LABELS_FILE
        labels.write_text("".join(f"{c}\n" for c in spec.class_names), encoding="utf-8")
        archive = build_export_archive(model, spec, labels)
        archive.write_out(str(path), verbose=False)
    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    if warmup:
        images = list(warmup_images) if warmup_images else [sample_image_bytes(spec.image_size)]
        serving_config.write_warmup_requests(extra / WARMUP_FILE, model_name, images,
                                             warmup_batch_sizes)
    import keras_effnet
    info = {"model_name": model_name, "image_size": spec.image_size,
            "classes": len(spec.class_names), "architecture": _architecture(model),
            "top_k": spec.top_k,
            "max_pixels": spec.max_pixels, "keras_effnet": keras_effnet.__version__,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "signatures": {"serving_default": "image_bytes: string [N] -> probabilities, "
                                              "classes, scores, labels",
                           "predict_images": f"images: float32 [N, {spec.image_size}, "
                                             f"{spec.image_size}, 3] in [0, 255] -> same"},
            **(metadata or {})}
    (extra / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def export(model: Any, context: ExportContext) -> list[Artifact]:
    """The ``saved_model`` format of an export (:mod:`keras_effnet.export.job`): ``model``
    as the next TF-Serving version, measured through its ``predict_images`` signature."""
    import tensorflow as tf

    config, pruned = context.config, context.is_pruned(model)
    written = export_saved_model(
        model, config.saved_models, model_name=context.name, version=context.version,
        class_names=context.class_names, image_size=context.image_size, top_k=config.top_k,
        max_pixels=config.max_pixels, serving_base_path=config.serving_base_path,
        allow_other_model=config.allow_other_model,
        metadata={"source": context.origin,
                  "pruned_sparsity": config.prune.target_sparsity if pruned else 0.0})
    for warning in written.warnings:
        context.log(f"warning: {warning}")
    loaded = tf.saved_model.load(str(written.path))  # must outlive its signature
    signature = loaded.signatures["predict_images"]

    def predict(images):
        return signature(images=tf.constant(images))["probabilities"].numpy()

    return [Artifact("saved_model" + (" (pruned)" if pruned else ""), str(written.path),
                     size_bytes=written.size_bytes,
                     notes="; ".join([f"models.config: {written.models_config}",
                                      *written.warnings]),
                     **context.measure(predict, made_from=model))]
