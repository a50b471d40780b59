"""Magnitude pruning with tensorflow-model-optimization, for Keras 3 models.

tensorflow-model-optimization only wraps tf_keras layers, so pruning runs on the
model's tf_keras twin (same builder, same weights order):

    Keras 3 model --weights--> tf_keras twin --wrap selected layers--> fine-tune with
    PolynomialDecay + UpdatePruningStep --strip_pruning--> weights back into Keras 3

The result is an ordinary Keras 3 model whose pruned kernels are mostly zeros: export
it as a SavedModel, or as a TFLite with ``sparsity=True`` (sparse encoding).

tensorflow_model_optimization and tf_keras are imported only inside these functions.
Importing tensorflow_model_optimization sets ``TF_USE_LEGACY_KERAS=1`` in the process
environment; :func:`_tfmot` restores the previous value, so later code (and
subprocesses) keep using Keras 3.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

import numpy as np

from keras_effnet.builder import CLASSIFIER_LAYER
from keras_effnet.cli import option
from keras_effnet.errors import ConfigError

__all__ = ["PruneConfig", "PruneResult", "prune", "tf_keras_twin", "select_layers",
           "kernel_sparsity", "fine_tuning_learning_rate", "POLICIES", "LEARNING_RATE_DECAYS"]

POLICIES = ("magnitude", "xnnpack")
LEARNING_RATE_DECAYS = ("cosine", "constant")
# Batch size of the fine-tuning when train_data is (images, labels) arrays.
ARRAY_BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """How to prune and fine-tune; checked when built (:class:`ConfigError` naming the
    field).

    Attributes:
        target_sparsity: fraction of zeros reached in every pruned kernel.
        epochs, steps_per_epoch: fine-tuning length (steps default: one pass over
            finite data).
        learning_rate: Adam learning rate for fine-tuning.
        learning_rate_decay: ``cosine`` holds ``learning_rate`` while the sparsity grows,
            then decays it to 0 along a cosine once the target is reached, so the
            weights settle (training gets this from its schedule and EMA);
            ``constant`` keeps it throughout.
        prune_end_fraction: the sparsity schedule reaches the target after this
            fraction of the steps; the rest fine-tunes at the target.
        frequency: steps between mask updates (default: about 16 updates).
        prune_stem, prune_se, prune_classifier: also prune the stem convolution,
            squeeze-excite convolutions, classifier dense (kept dense by default:
            small, and where accuracy is most sensitive).
        block_size: pruning unit of 1x1 convolutions and dense layers, as (input
            channels, output channels). The default (4, 1) zeroes runs of 4 input
            channels, which are contiguous in TFLite's (out, in) weight layout: gzip then
            compresses a 50 %-sparse EfficientNet-lite0 1.81x instead of 1.67x
            element-wise, at the same sparsity. kxk kernels are pruned element-wise.
        seed: seeds the fine-tuning (dropout, drop path, shuffling) with
            ``tf_keras.utils.set_random_seed`` just before it, so the same model and data
            give the same pruned weights whatever ran before in the process (this
            resets Python's, NumPy's and TensorFlow's global seeds).
        policy: ``magnitude`` (every selected 1x1 / kxk convolution and dense), or
            ``xnnpack`` (1x1 convolutions only, model rewritten by
            :func:`keras_effnet.export.rewrite.to_xnnpack_form` and checked by
            ``PruneForLatencyOnXNNPack``, for XNNPACK's sparse inference).

    The fields declared with a help text are the flags ``--prune``, ``--prune_epochs``,
    ... of the configs that hold a PruneConfig (``ExportConfig.prune``).
    """

    target_sparsity: float = option(
        0.5, primary=True, help="Target sparsity (e.g. 0.5): prune + fine-tune, then "
        "write sparse TFLite files")
    epochs: int = option(8, help="Fine-tuning epochs while pruning.")
    steps_per_epoch: int | None = option(
        None, flag="steps", help="Fine-tuning steps per epoch (default: one pass over the "
        "training split).")
    learning_rate: float = option(5e-4, help="Fine-tuning learning rate (Adam).")
    learning_rate_decay: str = option(
        "cosine", choices=LEARNING_RATE_DECAYS, help="cosine: decay to 0 once the target "
        "sparsity is reached; constant: keep --prune_learning_rate.")
    prune_end_fraction: float = option(
        0.6, flag="end_fraction", help="The sparsity schedule reaches --prune after this "
        "fraction of the fine-tuning; the rest fine-tunes at the target.")
    frequency: int | None = None
    prune_stem: bool = False
    prune_se: bool = False
    prune_classifier: bool = False
    block_size: tuple[int, int] = (4, 1)
    policy: str = option("magnitude", flag="policy", choices=POLICIES,
                         help="xnnpack: 1x1 convolutions only, model in XNNPACK "
                         "sparse-inference form.")
    seed: int = 0

    def __post_init__(self):
        def check(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{field} {rule}. Received: {field}="
                                  f"{getattr(self, field)!r}", field)

        check(0.0 < self.target_sparsity < 1.0, "target_sparsity",
              "must be in (0, 1) (e.g. 0.5)")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch",
              "must be >= 1 (or None: one pass over the training data)")
        check(self.learning_rate > 0.0, "learning_rate", "must be > 0")
        check(self.learning_rate_decay in LEARNING_RATE_DECAYS, "learning_rate_decay",
              f"must be one of {', '.join(LEARNING_RATE_DECAYS)}")
        check(0.0 < self.prune_end_fraction <= 1.0, "prune_end_fraction",
              "must be in (0, 1] (the sparsity schedule reaches the target after this "
              "fraction of the fine-tuning)")
        check(self.frequency is None or self.frequency >= 1, "frequency", "must be >= 1")
        check(len(self.block_size) == 2 and min(self.block_size) >= 1, "block_size",
              "must be two positive integers")
        check(self.policy in POLICIES, "policy", f"must be one of {', '.join(POLICIES)}")


@dataclasses.dataclass
class PruneResult:
    """The pruned Keras 3 model and what was measured on it."""

    model: Any
    sparsity: dict[str, float]
    target_sparsity: float
    history: dict[str, list[float]]

    @property
    def min_sparsity(self) -> float:
        return min(self.sparsity.values()) if self.sparsity else 0.0


def _tfmot():
    """Imports tensorflow_model_optimization without leaving TF_USE_LEGACY_KERAS set."""
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras  # noqa: F401
    except ImportError as e:
        raise ImportError("Pruning needs tensorflow-model-optimization and tf_keras: "
                          "pip install 'keras_effnet[prune]'") from e
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot


def tf_keras_twin(model: Any, variant: Any = None, input_shape: tuple | None = None) -> Any:
    """The tf_keras copy of a keras_effnet Keras 3 model, weights included.

    ``variant``: a name, a :class:`~keras_effnet.Variant` or block strings (default:
    ``model.name``, which is the variant name for built-in variants). Raises if the
    rebuilt model's weights do not line up with ``model``'s.
    """
    import tf_keras

    from keras_effnet.builder import build, resolve_variant
    if variant is None:
        try:
            variant = resolve_variant(model.name)
        except ValueError:
            raise ValueError(f"Cannot tell which architecture model {model.name!r} is: pass "
                             "variant= (a model name or block strings).") from None
    elif not hasattr(variant, "blocks"):
        variant = resolve_variant(variant)
    names = {layer.name for layer in model.layers}
    twin = build(variant, classes=int(model.output_shape[-1]),
                 input_shape=input_shape or tuple(model.input_shape[1:]),
                 include_preprocessing="preprocessing" in names,
                 include_top=CLASSIFIER_LAYER in names, keras_module=tf_keras, name=model.name)
    source, target = model.get_weights(), twin.get_weights()
    if [w.shape for w in source] != [w.shape for w in target]:
        raise ValueError(f"The tf_keras rebuild of {variant.name!r} does not match the model's "
                         "weights; pass the variant the model was built from.")
    twin.set_weights(source)
    return twin


def select_layers(model: Any, config: PruneConfig) -> list[str]:
    """Names of the layers ``config`` prunes (works on Keras 3 and tf_keras models)."""
    from keras_effnet.export.rewrite import keras_module_of
    layers = keras_module_of(model).layers
    chosen = []
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers.DepthwiseConv2D):
            continue  # tensorflow-model-optimization has no depthwise kernel pruning
        if isinstance(layer, layers.Conv2D):
            if config.policy == "xnnpack" and tuple(layer.kernel_size) != (1, 1):
                continue
            if name.startswith("stem_") and not config.prune_stem:
                continue
            if ("se_reduce" in name or "se_expand" in name) and not config.prune_se:
                continue
            chosen.append(name)
        elif isinstance(layer, layers.Dense):
            if config.policy == "xnnpack":
                continue
            if name == CLASSIFIER_LAYER and not config.prune_classifier:
                continue
            chosen.append(name)
    return chosen


def kernel_sparsity(model: Any, layer_names: Sequence[str]) -> dict[str, float]:
    """Fraction of exact zeros in each named layer's kernel."""
    result = {}
    for name in layer_names:
        kernel = np.asarray(model.get_layer(name).get_weights()[0])
        result[name] = float(np.mean(kernel == 0.0))
    return result


def _layer_target(size: int, target: float) -> float:
    # tfmot keeps round(size * (1 - s)) units; asking for exactly floor(size * (1 -
    # target)) kept makes the measured sparsity >= target for every kernel size.
    kept = math.floor(size * (1.0 - target) + 1e-9)
    return 1.0 - kept / size


def _block_for(kernel_shape: Sequence[int], block_size: tuple[int, int]) -> tuple[int, int]:
    """``block_size`` where tfmot can use it (a 2-D kernel divisible by the block), else
    element-wise."""
    if (len(kernel_shape) == 2 and kernel_shape[0] % block_size[0] == 0
            and kernel_shape[1] % block_size[1] == 0):
        return tuple(block_size)
    return (1, 1)


def _labels_are_sparse(train_data: Any) -> bool:
    if isinstance(train_data, tuple):
        return np.asarray(train_data[1]).ndim == 1
    spec = train_data.element_spec
    return len(spec[1].shape) == 1


def _dataset_steps(dataset: Any, steps_per_epoch: int | None) -> tuple[Any, int]:
    """(the dataset to fit on, steps per epoch): ``steps_per_epoch``, else one pass over
    the data, its length counted once when it has none (a pass of the input pipeline).
    The dataset comes back repeated whenever an epoch is not exactly one pass, since
    tf_keras then keeps one iterator across epochs and a finite one would run out."""
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        if steps_per_epoch is None:
            raise ConfigError("train_data repeats forever, so one pass over it is no "
                              "epoch: set steps_per_epoch (e.g. 100).", "steps_per_epoch")
        return dataset, steps_per_epoch
    if cardinality == tf.data.UNKNOWN_CARDINALITY and steps_per_epoch is None:
        cardinality = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    if cardinality == 0 and steps_per_epoch is None:
        raise ValueError("train_data holds no batches; pruning needs training data.")
    steps_per_epoch = steps_per_epoch or cardinality
    if steps_per_epoch != int(dataset.cardinality()):
        dataset = dataset.repeat()
    return dataset, steps_per_epoch


def _sparsity_steps(config: PruneConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(mask update frequency, step at which the target sparsity is reached)."""
    reached = int(steps_per_epoch * config.epochs * config.prune_end_fraction)
    frequency = config.frequency or max(1, reached // 16)
    return frequency, max(frequency, (reached // frequency) * frequency)


def fine_tuning_learning_rate(config: PruneConfig, steps_per_epoch: int,
                              keras_module: Any) -> Any:
    """The fine-tuning's learning rate: a float, or a ``keras_module`` (Keras 3 or
    tf_keras) schedule flat at ``config.learning_rate`` until the target sparsity is
    reached, then a cosine down to 0 (``learning_rate_decay="cosine"``)."""
    total = steps_per_epoch * config.epochs
    _, end_step = _sparsity_steps(config, steps_per_epoch)
    if config.learning_rate_decay == "constant" or total <= end_step:
        return config.learning_rate
    return keras_module.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=total - end_step,
        warmup_target=config.learning_rate, warmup_steps=end_step)


def prune(model: Any, train_data: Any, config: PruneConfig = PruneConfig(), *,
          variant: Any = None, image_size: int | None = None,
          validation_data: Any = None, verbose: int = 0) -> PruneResult:
    """Prunes ``model`` to ``config.target_sparsity`` while fine-tuning on ``train_data``.

    Args:
        model: a keras_effnet Keras 3 classifier (softmax output).
        train_data: ``(images, labels)`` arrays, or a ``tf.data.Dataset`` of batches;
            images float32 in [0, 255], labels integer or one-hot. An epoch is one pass
            unless ``config.steps_per_epoch`` says (a dataset of unknown length is
            counted once; one that repeats forever needs it).
        config: :class:`PruneConfig`.
        variant: the model's architecture when ``model.name`` is not a built-in variant.
        image_size: fixed input size for the ``xnnpack`` policy (default: model's
            static size or variant eval size).
        validation_data: passed to ``fit`` (same forms as ``train_data``).

    Returns:
        :class:`PruneResult` with the pruned Keras 3 model (in XNNPACK form for that
        policy) and the measured kernel sparsity of every pruned layer.
    """
    tfmot = _tfmot()
    import tf_keras

    from keras_effnet.export.rewrite import copy_weights, pointwise_as_dense, to_xnnpack_form

    sparsity_api = tfmot.sparsity.keras
    keras_model = model
    if config.policy == "xnnpack":
        from keras_effnet.builder import model_image_size
        size = model_image_size(model, image_size)
        twin = to_xnnpack_form(tf_keras_twin(model, variant, (size, size, 3)), input_size=size)
        sparsity_api.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(twin)
        keras_model = to_xnnpack_form(model, input_size=size)
    else:
        twin = tf_keras_twin(model, variant)
    names = select_layers(twin, config)
    if not names:
        raise ValueError("No layer is selected for pruning under this configuration.")
    # tfmot prunes blocks of 2-D kernels only: train the 1x1 convolutions as the
    # equivalent Dense layers, and reshape their kernels back at the end.
    twin = pointwise_as_dense(twin, set(names))

    if isinstance(train_data, tuple):
        images, labels = train_data
        batch_size = ARRAY_BATCH_SIZE
        steps_per_epoch = config.steps_per_epoch or math.ceil(len(images) / batch_size)
    else:
        train_data, steps_per_epoch = _dataset_steps(train_data, config.steps_per_epoch)
    frequency, end_step = _sparsity_steps(config, steps_per_epoch)

    def wrap(layer):
        # Returning the twin's own layers (wrapped or not) keeps their weights.
        if layer.name not in names:
            return layer
        shape = layer.get_weights()[0].shape
        block = _block_for(shape, config.block_size)
        units = int(np.prod(shape)) // (block[0] * block[1])
        schedule = sparsity_api.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=_layer_target(units, config.target_sparsity),
            begin_step=0, end_step=end_step, frequency=frequency)
        return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule,
                                                block_size=block)

    wrapped = tf_keras.models.clone_model(twin, clone_function=wrap)
    loss = ("sparse_categorical_crossentropy" if _labels_are_sparse(train_data)
            else "categorical_crossentropy")
    learning_rate = fine_tuning_learning_rate(config, steps_per_epoch, tf_keras)
    wrapped.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss,
                    metrics=["accuracy"])
    fit_kwargs = dict(epochs=config.epochs, callbacks=[sparsity_api.UpdatePruningStep()],
                      validation_data=validation_data, verbose=verbose)
    tf_keras.utils.set_random_seed(config.seed)
    if isinstance(train_data, tuple):
        history = wrapped.fit(images, labels, batch_size=batch_size,
                              steps_per_epoch=config.steps_per_epoch, **fit_kwargs)
    else:
        history = wrapped.fit(train_data, steps_per_epoch=steps_per_epoch, **fit_kwargs)
    stripped = sparsity_api.strip_pruning(wrapped)

    import keras
    pruned = keras.models.clone_model(keras_model)
    copy_weights(stripped, pruned)
    return PruneResult(model=pruned, sparsity=kernel_sparsity(pruned, names),
                       target_sparsity=config.target_sparsity,
                       history={k: [float(v) for v in vs] for k, vs in history.history.items()})
