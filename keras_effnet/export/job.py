"""The export of a training run (or an untrained build): what ``scripts/export.py`` runs.

    run dir (final_model.keras, labels.txt, config.json)
      -> [prune + fine-tune on the training split]
      -> saved_models/<name>/<version>/  (TF-Serving; dense unless serve_pruned)
      -> tflite/<name>/<version>/<name>[-pruned50]-<quantize>.tflite  (+ labels.txt)
      -> top-1 of every artifact on the held-out split, sizes, paths

Each format is a module with ``export(model, context) -> list[Artifact]`` and one line
in :data:`~keras_effnet.export.formats.FORMATS`. The request is checked (:meth:`ExportConfig.validate`) before
TensorFlow is imported, so a mistake costs a second.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from keras_effnet.export.config import ExportConfig, ExportError
from keras_effnet.export.context import ExportContext
from keras_effnet.export.formats import FORMATS, Format
from keras_effnet.export.report import Artifact, ExportReport

__all__ = ["ExportConfig", "ExportError", "ExportContext", "ExportReport", "Artifact",
           "Format", "FORMATS", "run"]


def run(config: ExportConfig, log: Callable[[str], None] = print) -> ExportReport:
    """Runs the export described by ``config`` (validated first) and measures it."""
    config.validate()
    started = time.time()
    # The version is taken before the work starts and held until it is written: a
    # second export started meanwhile gets the next one, not a late "version exists".
    with config.reserve_version(config.resolved_model_name()) as version:
        return _run(config, log, version, started)


def _run(config: ExportConfig, log: Callable[[str], None], version: int,
         started: float) -> ExportReport:
    context = _load(config, log, version)
    artifacts = [Artifact("keras (reference)", context.origin, **context.measure_model())]
    sparsity = None
    if config.prune is not None:
        result = _prune(context)
        sparsity = result.sparsity
        artifacts.append(Artifact(f"keras pruned {config.prune.target_sparsity:.0%}", None,
                                  notes="agrees = with the unpruned model",
                                  **context.measure_pruned(result.model)))
    for name, fmt in FORMATS.items():
        if name in config.formats:
            use_pruned = context.pruned is not None and fmt.writes_pruned(config)
            artifacts += fmt.export(context.pruned if use_pruned else context.model, context)
    report = ExportReport(context.name, context.version, artifacts, sparsity)
    for line in report.lines():
        log(line)
    if context.source is None:
        log("  (no dataset known: name one to measure accuracy)")
    log(f"done in {time.time() - started:.0f}s")
    return report


def _load(config: ExportConfig, log: Callable[[str], None], version: int) -> ExportContext:
    """The context of a validated request: the float32 model, its classes, evaluation
    size and variant, the data source, and the name and version to write."""
    from keras_effnet.builder import build, model_image_size, resolve_variant

    run_dir, run_config = config.run_dir(), config.run_config()
    source = _source(config, run_config)
    if run_dir is not None:
        log(f"loading {run_dir.final_model_path}")
        model = run_dir.load_model()
        variant = _run_variant(run_dir, run_config, model)
        _check_model(model, variant, run_dir, run_config)
        if any(getattr(layer, "dtype_policy", None) is not None
               and layer.dtype_policy.compute_dtype != "float32" for layer in model.layers):
            # Trained under mixed precision: export float32 (same weights).
            float_model = build(variant, classes=int(model.output_shape[-1]),
                                input_shape=tuple(model.input_shape[1:]))
            float_model.set_weights(model.get_weights())
            model = float_model
        class_names = run_dir.class_names(int(model.output_shape[-1]))
        image_size = run_dir.eval_image_size(config.image_size)
    else:
        variant = resolve_variant(config.model)
        classes = source.num_classes if source is not None else config.num_classes
        model = build(variant, classes=classes)
        class_names = (list(source.class_names) if source is not None
                       else [str(i) for i in range(classes)])
        image_size = model_image_size(model, config.image_size, variant=variant)
        log(f"built {variant.name} untrained ({classes} classes)")
    if len(class_names) != int(model.output_shape[-1]):
        raise ExportError(f"labels.txt has {len(class_names)} names but the model has "
                          f"{model.output_shape[-1]} classes")
    name = config.resolved_model_name()
    return ExportContext(config=config, model=model, class_names=class_names,
                         image_size=image_size, variant=variant, source=source, name=name,
                         version=version, log=log)


def _run_variant(run_dir: Any, run_config: Any, model: Any) -> Any:
    """The network ``config.json`` describes (an edited one that is none: ExportError)."""
    from keras_effnet.builder import resolve_variant

    try:
        return (run_config.variant_record() if run_config.variant
                else resolve_variant(run_config.model or model.name))
    except (ValueError, TypeError, KeyError) as e:
        raise ExportError(f"{run_dir.config_path} describes no network ({type(e).__name__}: "
                          f"{e}); restore it from the training run.", "model_dir") from None


def _check_model(model: Any, variant: Any, run_dir: Any, run_config: Any) -> None:
    """Raises ExportError unless ``model`` is the network ``config.json`` describes: a
    swapped ``final_model.keras`` or an edited variant would be served under a name
    that is not its own."""
    from keras_effnet.profile import profile

    classes = int(model.output_shape[-1])
    problems = []
    if model.name != variant.name:
        problems.append(f"it is named {model.name!r}, config.json's variant "
                        f"{variant.name!r}")
    if classes != run_config.num_classes:
        problems.append(f"it has {classes} classes, config.json {run_config.num_classes}")
    try:
        expected = profile(variant, image_size=run_dir.eval_image_size(),
                           classes=classes).params
    except ValueError as e:  # ConfigError too: a variant past the size limits
        problems.append(f"config.json's variant cannot be built ({e})")
    else:
        if model.count_params() != expected:
            problems.append(f"it has {model.count_params():,} parameters, config.json's "
                            f"variant {expected:,}")
    if problems:
        raise ExportError(f"{run_dir.final_model_path} is not the network "
                          f"{run_dir.config_path} describes: {'; '.join(problems)}. Export "
                          "the run that trained it, or rerun the training command.",
                          "model_dir")


def _source(config: ExportConfig, run_config: Any) -> Any:
    """The data source of the held-out split (None when no dataset is known)."""
    name = config.dataset or (run_config.dataset if run_config else None)
    if not name:
        return None
    from keras_effnet import data
    return data.get_source(name=name, data_dir=config.data_dir or (
        run_config.data_dir if run_config else None))


def _prune(context: ExportContext) -> Any:
    """Prunes ``context.model`` while fine-tuning on the training split, unaugmented."""
    from keras_effnet.data.augment import Augment
    from keras_effnet.export import prune as prune_lib

    prune_config = context.config.prune
    context.log(f"pruning to {prune_config.target_sparsity:.0%} sparsity and fine-tuning "
                f"for {prune_config.epochs} epochs ...")
    # The last, partial batch kept: a folder of fewer than 32 training images is still
    # one step. prune() takes an epoch's steps from the dataset's length.
    train = context.source.train_dataset(image_size=context.image_size, batch_size=32,
                                         augment=Augment.none(), drop_remainder=False)
    return prune_lib.prune(context.model, train, prune_config, variant=context.variant,
                           image_size=context.image_size)
