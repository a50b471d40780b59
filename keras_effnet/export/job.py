"""The export of a training run (or an untrained build): what ``scripts/export.py`` runs.

    run dir (final_model.keras, labels.txt, config.json)
      -> [prune + fine-tune on the training split]
      -> saved_models/<name>/<version>/  (TF-Serving; dense unless serve_pruned)
      -> tflite/<name>/<version>/<name>[-pruned50]-<quantize>.tflite  (+ labels.txt)
      -> top-1 of every artifact on the held-out split, sizes, paths

:meth:`ExportConfig.validate` checks everything that can be checked without TensorFlow
(flags, run directory, free version), so a mistake costs a second, not a TF import.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from keras_effnet.export.prune import LEARNING_RATE_DECAYS, PruneConfig

__all__ = ["ExportConfig", "ExportError", "ExportReport", "Artifact", "FORMATS", "run"]

FORMATS = ("saved_model", "tflite")
QUANTIZE = ("none", "float16", "dynamic", "int8")
_VERSION = re.compile(r"^[0-9]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExportError(ValueError):
    """A problem with what was asked for; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Everything one export needs; ``scripts/export.py`` fills it from flags.

    Attributes:
        model_dir: a training run directory (final_model.keras, labels.txt, config.json).
        model: instead of ``model_dir``, a variant name or block strings, built untrained.
        num_classes: classifier width for ``model`` (ignored with ``model_dir``).
        formats: any of ``saved_model``, ``tflite``.
        quantize: TFLite modes to write (``none``, ``float16``, ``dynamic``, ``int8``).
        prune: target sparsity (0 = no pruning); prunes, fine-tunes, then writes sparse
            TFLite files. ``serve_pruned`` also serves the pruned weights.
        prune_epochs, prune_steps, prune_learning_rate, prune_learning_rate_decay,
            prune_end_fraction, prune_policy: the fine-tuning (``prune_steps``: steps
            per epoch, default one pass over the training split); defaults are
            :class:`~keras_effnet.export.prune.PruneConfig`'s.
        saved_models: TF-Serving base directory; tflite_dir: where TFLite files go.
        model_name, version: default the run's variant name and the next free version.
        dataset, data_dir: held-out data for accuracy (default: the run's).
        image_size: evaluation size (default: the run's ``eval_image_size``).
        max_eval_images: cap on held-out images evaluated per artifact (None: all).
        representative_images: int8 calibration images from the training split.
        serving_base_path: how TF-Serving sees ``saved_models`` (for models.config).
        max_pixels, top_k: serving signature settings.
    """

    model_dir: str | None = None
    model: str | None = None
    num_classes: int = 1000
    formats: tuple[str, ...] = FORMATS
    quantize: tuple[str, ...] = ("none",)
    prune: float = 0.0
    prune_epochs: int = PruneConfig.epochs
    prune_steps: int | None = None
    prune_learning_rate: float = PruneConfig.learning_rate
    prune_learning_rate_decay: str = PruneConfig.learning_rate_decay
    prune_end_fraction: float = PruneConfig.prune_end_fraction
    prune_policy: str = "magnitude"
    serve_pruned: bool = False
    saved_models: str = "saved_models"
    tflite_dir: str = "tflite"
    model_name: str | None = None
    version: int | None = None
    dataset: str | None = None
    data_dir: str | None = None
    image_size: int | None = None
    max_eval_images: int | None = None
    representative_images: int = 100
    serving_base_path: str = "/models"
    max_pixels: int = 50_000_000
    top_k: int = 5

    # --- checks that need no TensorFlow -------------------------------------------------

    def run_config(self) -> dict[str, Any]:
        """The run's config.json ({} without a run directory)."""
        if not self.model_dir:
            return {}
        path = Path(self.model_dir) / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ExportError(f"cannot read {path} ({e}); is --model_dir a finished "
                              "training run?") from None

    def resolved_model_name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.model_dir:
            run = self.run_config()
            name = (run.get("variant") or {}).get("name") or run.get("model") or ""
        else:
            name = self.model or ""
        return name if _NAME.match(name) else "efficientnet-custom"

    def validate(self) -> None:
        """Raises :class:`ExportError` for anything wrong with the request."""
        if bool(self.model_dir) == bool(self.model):
            raise ExportError("pass exactly one of --model_dir=<training run directory> or "
                              "--model=<variant name> (an untrained build)")
        if self.model_dir:
            run_dir = Path(self.model_dir)
            if not run_dir.is_dir():
                raise ExportError(f"--model_dir={self.model_dir} does not exist; point it at "
                                  "a training run directory (scripts/train.py --model_dir)")
            missing = [f for f in ("final_model.keras", "config.json")
                       if not (run_dir / f).is_file()]
            if missing:
                raise ExportError(f"{self.model_dir} has no {' or '.join(missing)}; is the "
                                  "training run finished? (the trainer writes them at the end)")
            self.run_config()
        else:
            from keras_effnet.builder import resolve_variant
            try:
                resolve_variant(self.model)
            except ValueError as e:
                raise ExportError(f"--model: {e}") from None
            if self.num_classes < 1:
                raise ExportError(f"--num_classes must be >= 1, got {self.num_classes}")
        self.validate_options()
        if not self.model_dir and not self.dataset and (
                "int8" in self.quantize or self.prune):
            raise ExportError("int8 calibration and pruning need training images: pass "
                              "--dataset (and --data_dir) with --model, or use --model_dir")
        name = self.resolved_model_name()
        if not _NAME.match(name):
            raise ExportError(f"--model_name must be letters, digits, '.', '_' or '-'; got "
                              f"{name!r}")
        if self.version is not None:
            for target in self._version_dirs(name, self.version):
                if target.exists():
                    raise ExportError(f"{target} already exists and versions are never "
                                      "overwritten; omit --version to use the next free one "
                                      f"or pass a new number")

    def validate_options(self) -> None:
        """The checks of formats, quantisation, pruning and counts: the part of
        :meth:`validate` that needs no model, run directory or dataset."""
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ExportError(f"--formats must be a list of {', '.join(FORMATS)}; got "
                              f"{','.join(self.formats) or 'nothing'}")
        bad = [q for q in self.quantize if q not in QUANTIZE]
        if bad or not self.quantize:
            raise ExportError(f"--quantize must be a list of {', '.join(QUANTIZE)}; got "
                              f"{','.join(self.quantize) or 'nothing'}")
        if not 0.0 <= self.prune < 1.0:
            raise ExportError(f"--prune is a target sparsity in [0, 1) (e.g. 0.5); got "
                              f"{self.prune}")
        if self.prune and "tflite" not in self.formats and not self.serve_pruned:
            raise ExportError("--prune needs --formats to include tflite, or --serve_pruned "
                              "to serve the pruned weights")
        if self.prune_policy not in ("magnitude", "xnnpack"):
            raise ExportError(f"--prune_policy must be magnitude or xnnpack; got "
                              f"{self.prune_policy!r}")
        if self.prune_epochs < 1:
            raise ExportError(f"--prune_epochs must be >= 1; got {self.prune_epochs}")
        if self.prune_steps is not None and self.prune_steps < 1:
            raise ExportError(f"--prune_steps must be >= 1; got {self.prune_steps}")
        if not self.prune_learning_rate > 0.0:
            raise ExportError(f"--prune_learning_rate must be > 0; got "
                              f"{self.prune_learning_rate}")
        if self.prune_learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise ExportError(f"--prune_learning_rate_decay must be one of "
                              f"{', '.join(LEARNING_RATE_DECAYS)}; got "
                              f"{self.prune_learning_rate_decay!r}")
        if not 0.0 < self.prune_end_fraction <= 1.0:
            raise ExportError(f"--prune_end_fraction must be in (0, 1] (the sparsity "
                              f"schedule ends after this fraction of the fine-tuning); got "
                              f"{self.prune_end_fraction}")
        if self.version is not None and self.version < 1:
            raise ExportError(f"--version must be a positive integer; got {self.version}")
        if "int8" in self.quantize and self.representative_images < 100:
            raise ExportError("--representative_images must be >= 100 for int8 calibration; "
                              f"got {self.representative_images}")
        if self.max_eval_images is not None and self.max_eval_images < 1:
            raise ExportError(f"--max_eval_images must be >= 1; got {self.max_eval_images}")

    def _version_dirs(self, name: str, version: int) -> list[Path]:
        dirs = []
        if "saved_model" in self.formats:
            dirs.append(Path(self.saved_models) / name / str(version))
        if "tflite" in self.formats:
            dirs.append(Path(self.tflite_dir) / name / str(version))
        return dirs

    def next_version(self, name: str) -> int:
        """The next version free in every output directory."""
        newest = 0
        for base in (Path(self.saved_models), Path(self.tflite_dir)):
            model_dir = base / name
            if model_dir.is_dir():
                newest = max([newest] + [int(p.name) for p in model_dir.iterdir()
                                         if _VERSION.match(p.name)])
        return newest + 1


@dataclasses.dataclass
class Artifact:
    """One thing written (or the reference model), with its measured figures."""

    kind: str
    path: str | None
    size_bytes: int | None = None
    gzipped_bytes: int | None = None
    top1: float | None = None
    agreement: float | None = None
    eval_images: int = 0
    notes: str = ""


@dataclasses.dataclass
class ExportReport:
    model_name: str
    version: int
    artifacts: list[Artifact]
    sparsity: dict[str, float] | None = None

    def lines(self) -> list[str]:
        """The printed summary: one row per artifact, then its notes."""
        images = max((a.eval_images for a in self.artifacts), default=0)
        out = [f"export of {self.model_name}, version {self.version}"
               + (f" (top-1 on {images} held-out images; 'agrees': top-1 agreement with "
                  "the Keras model it was made from):" if images else ":")]
        rows = [("artifact", "size", "gzipped", "top-1", "agrees", "path")]
        for a in self.artifacts:
            rows.append((a.kind,
                         _mb(a.size_bytes) if a.size_bytes is not None else "-",
                         _mb(a.gzipped_bytes) if a.gzipped_bytes is not None else "-",
                         f"{a.top1:.2%}" if a.top1 is not None else "-",
                         f"{a.agreement:.2%}" if a.agreement is not None else "-",
                         a.path or ""))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                       + "  " + row[5])
        for a in self.artifacts:
            if a.notes:
                out.append(f"    - {a.kind}: {a.notes}")
        if self.sparsity:
            lo = min(self.sparsity.values())
            out.append(f"  pruned {len(self.sparsity)} layers: kernel sparsity >= {lo:.2%} "
                       "in every one")
        return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# --- the run ------------------------------------------------------------------------------

def _load(config: ExportConfig, log: Callable[[str], None]):
    """(Keras 3 float32 model, class names, image size, variant, source or None)."""
    import keras

    from keras_effnet.builder import build, resolve_variant
    from keras_effnet.variants import Variant

    run = config.run_config()
    source = _source(config, run)
    if config.model_dir:
        path = Path(config.model_dir) / "final_model.keras"
        log(f"loading {path}")
        model = keras.models.load_model(path, compile=False)
        variant = (Variant.from_dict(run["variant"]) if run.get("variant")
                   else resolve_variant(run.get("model") or model.name))
        if any(getattr(layer, "dtype_policy", None) is not None
               and layer.dtype_policy.compute_dtype != "float32" for layer in model.layers):
            # Trained under mixed precision: export float32 (same weights).
            float_model = build(variant, classes=int(model.output_shape[-1]),
                                input_shape=tuple(model.input_shape[1:]))
            float_model.set_weights(model.get_weights())
            model = float_model
        labels_path = Path(config.model_dir) / "labels.txt"
        if labels_path.is_file():
            class_names = [line.rstrip("\n") for line in
                           labels_path.read_text(encoding="utf-8").splitlines()]
        else:
            class_names = list(run.get("class_names") or
                               [str(i) for i in range(int(model.output_shape[-1]))])
        image_size = config.image_size or run.get("eval_image_size")
    else:
        variant = resolve_variant(config.model)
        classes = source.num_classes if source is not None else config.num_classes
        model = build(variant, classes=classes)
        class_names = (list(source.class_names) if source is not None
                       else [str(i) for i in range(classes)])
        image_size = config.image_size
        log(f"built {variant.name} untrained ({classes} classes)")
    image_size = int(image_size or variant.eval_size)
    if len(class_names) != int(model.output_shape[-1]):
        raise ExportError(f"labels.txt has {len(class_names)} names but the model has "
                          f"{model.output_shape[-1]} classes")
    return model, class_names, image_size, variant, source


def _source(config: ExportConfig, run: dict[str, Any]):
    name = config.dataset or run.get("dataset")
    if not name:
        return None
    from keras_effnet import data
    return data.get_source(name=name, data_dir=config.data_dir or run.get("data_dir"))


def _held_out(source, image_size: int, limit: int | None, batch_size: int = 64
              ) -> Iterable[tuple[Any, Any]]:
    """(images, integer labels) numpy batches of the held-out split, up to ``limit``."""
    import numpy as np
    seen = 0
    for images, labels in source.eval_dataset(image_size=image_size, batch_size=batch_size):
        images, labels = images.numpy(), np.argmax(labels.numpy(), -1)
        if limit is not None:
            images, labels = images[:limit - seen], labels[:limit - seen]
        if len(images) == 0:
            return
        seen += len(images)
        yield images, labels
        if limit is not None and seen >= limit:
            return


def _fraction_equal(a: Any, b: Any) -> float | None:
    """Fraction of positions where two label arrays agree (None when empty)."""
    import numpy as np
    return float(np.mean(a == b)) if len(b) else None


def _predict_all(predict: Callable[[Any], Any], batches) -> tuple[Any, Any]:
    import numpy as np
    predictions, labels = [], []
    for images, y in batches:
        predictions.append(np.argmax(predict(images), -1))
        labels.append(y)
    if not predictions:
        return np.zeros((0,), int), np.zeros((0,), int)
    return np.concatenate(predictions), np.concatenate(labels)


def run(config: ExportConfig, log: Callable[[str], None] = print) -> ExportReport:
    """Runs the export described by ``config`` (validated first) and measures it."""
    config.validate()
    import tensorflow as tf

    from keras_effnet.export import saved_model as saved_model_lib
    from keras_effnet.export import tflite as tflite_lib

    started = time.time()
    model, class_names, image_size, variant, source = _load(config, log)
    name = config.resolved_model_name()
    version = config.version or config.next_version(name)
    artifacts: list[Artifact] = []

    def held_out():
        return _held_out(source, image_size, config.max_eval_images) if source else iter(())

    def keras_predict(m):
        return lambda images: m.predict_on_batch(images)

    reference, labels = _predict_all(keras_predict(model), held_out())
    keras_top1 = _fraction_equal(reference, labels)
    artifacts.append(Artifact("keras (reference)", str(config.model_dir or config.model),
                              top1=keras_top1, eval_images=len(labels)))

    pruned = None
    pruned_reference = None
    sparsity = None
    if config.prune:
        from keras_effnet.export import prune as prune_lib
        log(f"pruning to {config.prune:.0%} sparsity and fine-tuning for "
            f"{config.prune_epochs} epochs ...")
        train = source.train_dataset(image_size=image_size, batch_size=32,
                                     randaug_magnitude=None)
        if config.prune_steps:
            train = train.repeat()
        result = prune_lib.prune(
            model, train, prune_lib.PruneConfig(
                target_sparsity=config.prune, epochs=config.prune_epochs,
                steps_per_epoch=config.prune_steps,
                learning_rate=config.prune_learning_rate,
                learning_rate_decay=config.prune_learning_rate_decay,
                prune_end_fraction=config.prune_end_fraction, policy=config.prune_policy),
            variant=variant, image_size=image_size)
        pruned, sparsity = result.model, result.sparsity
        pruned_reference, _ = _predict_all(keras_predict(pruned), held_out())
        artifacts.append(Artifact(
            f"keras pruned {config.prune:.0%}", None,
            top1=_fraction_equal(pruned_reference, labels),
            agreement=_fraction_equal(pruned_reference, reference),
            eval_images=len(labels), notes="agrees = with the unpruned model"))

    if "saved_model" in config.formats:
        served = pruned if (pruned is not None and config.serve_pruned) else model
        export = saved_model_lib.export_saved_model(
            served, config.saved_models, model_name=name, version=version,
            class_names=class_names, image_size=image_size, top_k=config.top_k,
            max_pixels=config.max_pixels, serving_base_path=config.serving_base_path,
            metadata={"source": str(config.model_dir or config.model),
                      "pruned_sparsity": config.prune if served is pruned else 0.0})
        loaded = tf.saved_model.load(str(export.path))
        signature = loaded.signatures["predict_images"]
        predictions, _ = _predict_all(
            lambda images: signature(images=tf.constant(images))["probabilities"].numpy(),
            held_out())
        artifacts.append(Artifact(
            "saved_model" + (" (pruned)" if served is pruned else ""), str(export.path),
            size_bytes=export.size_bytes,
            top1=_fraction_equal(predictions, labels),
            agreement=_fraction_equal(
                predictions, pruned_reference if served is pruned else reference),
            eval_images=len(labels), notes=f"models.config: {export.models_config}"))

    if "tflite" in config.formats:
        tflite_model = pruned if pruned is not None else model
        out_dir = Path(config.tflite_dir) / name / str(version)
        calibration = None
        if "int8" in config.quantize:
            calibration = source.representative_images(n=config.representative_images,
                                                        image_size=image_size)
        out_dir.mkdir(parents=True, exist_ok=False)
        (out_dir / "labels.txt").write_text("".join(f"{c}\n" for c in class_names),
                                            encoding="utf-8")
        for mode in config.quantize:
            suffix = f"-pruned{round(config.prune * 100)}" if pruned is not None else ""
            content = tflite_lib.convert(tflite_model, mode, image_size=image_size,
                                         representative_images=calibration,
                                         sparsity=pruned is not None)
            written = tflite_lib.write_tflite(content, out_dir / f"{name}{suffix}-{mode}.tflite",
                                              mode)
            notes = ""
            if pruned is not None:
                dense_model = (model if config.prune_policy != "xnnpack" else
                               _xnnpack_dense(model, image_size))
                dense = tflite_lib.convert(dense_model, mode, image_size=image_size,
                                           representative_images=calibration)
                ratio = tflite_lib.gzipped_size(dense) / written.gzipped_bytes
                encoding = ("sparse encoding" if written.sparse else
                            "dense encoding (XNNPACK cannot load this one sparse)")
                notes = (f"{encoding}; unpruned gzipped {_mb(tflite_lib.gzipped_size(dense))}:"
                         f" {ratio:.2f}x smaller")
            runner = tflite_lib.LiteRunner(content)
            predictions, _ = _predict_all(runner.predict, held_out())
            artifacts.append(Artifact(
                f"tflite {mode}" + (" pruned" if pruned is not None else ""), str(written.path),
                size_bytes=written.size_bytes, gzipped_bytes=written.gzipped_bytes,
                top1=_fraction_equal(predictions, labels),
                agreement=_fraction_equal(
                    predictions, pruned_reference if pruned is not None else reference),
                eval_images=len(labels), notes=notes))
    report = ExportReport(name, version, artifacts, sparsity)
    for line in report.lines():
        log(line)
    if not source:
        log("  (no dataset known: pass --dataset to measure accuracy)")
    log(f"done in {time.time() - started:.0f}s")
    return report


def _xnnpack_dense(model: Any, image_size: int) -> Any:
    from keras_effnet.export.rewrite import to_xnnpack_form
    return to_xnnpack_form(model, input_size=image_size)


def parse_list(values: Sequence[str] | None) -> tuple[str, ...]:
    """Flag list -> tuple, dropping blanks (``--formats=saved_model,`` is fine)."""
    return tuple(v.strip() for v in (values or ()) if v.strip())
