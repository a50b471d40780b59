"""Progressive learning around a user's own ``model.fit`` (notebooks, Keras habits).

    plan = keras_effnet.progressive_plan("efficientnetv2-s", epochs=350)
    history = keras_effnet.fit_progressive(
        model, lambda stage: make_dataset(stage.image_size, stage.augment), plan,
        validation_fn=lambda stage: make_val(stage.image_size))

Each stage sets the model's head dropout to the stage's rate and its blocks' drop-path
rates to their built rates times :func:`~keras_effnet.train.progressive.drop_path_scale`
(as the trainer does: constant in automl mode, ramping with dropout in paper mode), forces
Keras to retrace its train function when a rate changed (a rate is a Python float baked
into the graph ``model.fit`` traces; the trainer's own step reads its rates from
variables instead, :mod:`keras_effnet.train.dropout_rates`, and is not traced again), and
fits epochs ``[stage.start_epoch, stage.end_epoch)`` with
``initial_epoch``, so epoch numbers, callbacks and the optimizer's LR schedule run on
continuously. The built drop-path rates are the ones a layer had when
:func:`fit_progressive` first saw it; to resume in a new process, build the model afresh
and load its weights (a model saved mid-run carries the stage's scaled rates).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from keras_effnet.builder import DROPOUT_LAYER
from keras_effnet.train.dropout_rates import (DROP_PATH_SUFFIX, dropout_layers,
                                              scaled_drop_path_rate)
from keras_effnet.train.progressive import Stage, drop_path_scale

__all__ = ["fit_progressive", "set_dropout", "set_drop_path_scale"]

_BUILT_RATE = "_keras_effnet_built_rate"  # a drop path's rate before any stage scaled it


def set_dropout(model: Any, rate: float, layer_name: str = DROPOUT_LAYER) -> bool:
    """Set the rate of the model's head ``Dropout`` layer; True when it changed.

    A function Keras traced keeps the old rate until it is traced again
    (:func:`fit_progressive` retraces; the trainer's step reads the rate from a variable,
    :class:`~keras_effnet.train.dropout_rates.DropoutRates`, so it needs no new trace,
    and this sets the layer so a saved model says its rate). Raises ValueError when ``rate > 0`` and the model
    has no such layer (keras_effnet builds it only when dropout > 0).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: rate={rate!r}")
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        if rate > 0:
            raise ValueError(
                f"The model has no {layer_name!r} Dropout layer, so the plan's dropout "
                f"{rate} cannot be applied; build it with dropout > 0 (keras_effnet.build("
                "..., dropout=0.1)) or use a plan without dropout.") from None
        return False
    if float(layer.rate) == float(rate):
        return False
    layer.rate = float(rate)
    return True


def set_drop_path_scale(model: Any, scale: float) -> bool:
    """Set every block's drop-path rate (the ``Dropout`` layers named ``*drop_path``) to
    its built rate times ``scale`` (below 1); True when a rate changed. The built rate is
    the layer's rate the first time this function saw it."""
    scaled_drop_path_rate(0.0, scale)  # checks the scale before any layer changes
    changed = False
    for layer in dropout_layers(model):
        if not layer.name.endswith(DROP_PATH_SUFFIX):
            continue
        if getattr(layer, _BUILT_RATE, None) is None:
            setattr(layer, _BUILT_RATE, float(layer.rate))
        rate = scaled_drop_path_rate(getattr(layer, _BUILT_RATE), scale)
        if float(layer.rate) != rate:
            layer.rate = rate
            changed = True
    return changed


def _reset_compiled_functions(model: Any) -> None:
    # Keras 3 caches the traced train step on the model; None makes fit() trace again.
    for attr in ("train_function", "test_function", "predict_function"):
        if hasattr(model, attr):
            setattr(model, attr, None)


def fit_progressive(model: Any, dataset_fn: Callable[[Stage], Any], plan: Sequence[Stage], *,
                    validation_fn: Callable[[Stage], Any] | None = None,
                    initial_epoch: int = 0, verbose: Any = "auto",
                    **fit_kwargs: Any) -> Any:
    """Train a compiled Keras model through a progressive plan with ``model.fit``.

    Args:
        model: a compiled Keras model (from ``keras_effnet.build``: its head Dropout is
            named ``keras_effnet.builder.DROPOUT_LAYER``).
        dataset_fn: ``stage -> training data`` for ``model.fit`` (a ``tf.data.Dataset``
            at ``stage.image_size`` with ``stage.augment``, e.g.
            ``source.train_dataset(stage.image_size, 64, augment=stage.augment)``).
        plan: stages from :func:`keras_effnet.progressive_plan`.
        validation_fn: optional ``stage -> validation_data``.
        initial_epoch: resume at this epoch (stages before it are skipped).
        verbose, fit_kwargs: passed to ``model.fit`` (``callbacks``, ``steps_per_epoch``,
            ...; not ``epochs``/``initial_epoch``/``validation_data``, which come from the
            plan).

    Returns:
        One ``keras.callbacks.History`` for the whole run: ``history.history`` holds every
        epoch's metrics in order, plus ``image_size``, ``dropout`` and
        ``drop_path_scale`` per epoch;
        ``history.epoch`` the epoch numbers; ``history.stages`` the plan.
    """
    import keras

    for key in ("epochs", "initial_epoch", "validation_data", "x", "y"):
        if key in fit_kwargs:
            raise ValueError(f"fit_progressive sets {key!r} from the plan; do not pass it.")
    if not plan:
        raise ValueError("plan is empty: build one with keras_effnet.progressive_plan(...).")
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.history, merged.epoch, merged.stages = {}, [], list(plan)
    for stage in plan:
        if stage.end_epoch <= initial_epoch:
            continue
        scale = drop_path_scale(list(plan), stage)
        # both, always: `or` would skip the drop paths when the head's rate changed
        if any([set_dropout(model, stage.dropout), set_drop_path_scale(model, scale)]):
            _reset_compiled_functions(model)
        validation = validation_fn(stage) if validation_fn is not None else None
        history = model.fit(dataset_fn(stage), validation_data=validation,
                            initial_epoch=max(stage.start_epoch, initial_epoch),
                            epochs=stage.end_epoch, verbose=verbose, **fit_kwargs)
        merged.epoch.extend(history.epoch)
        count = len(history.epoch)
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.history.setdefault("image_size", []).extend([stage.image_size] * count)
        merged.history.setdefault("dropout", []).extend([stage.dropout] * count)
        merged.history.setdefault("drop_path_scale", []).extend([scale] * count)
        if getattr(model, "stop_training", False):
            break
    return merged
