"""Fine-tuning: a fresh run's starting weights, which layers train in which epoch, and the
learning rate of the unfrozen phase.

The keras fine-tuning guide's recipe (keras.io "Transfer learning & fine-tuning", and its
EfficientNet example): load trained weights, train a new classifier on a frozen backbone,
then unfreeze and train on at a much lower learning rate, BatchNorm kept in inference mode
throughout (its statistics are the pretrained ones; updated from a small dataset's batches
they would wreck what the backbone learnt). ``TrainConfig`` says it as ``init_weights``,
``freeze`` and ``unfreeze_at_epoch`` / ``unfreeze_lr_factor``.

Resume: which layers train is a pure function of the epoch (:func:`freeze_mode`, applied at
the start of every epoch) and the LR factor a pure function of the optimizer's step
(:class:`PhasedSchedule`), so a run resumed anywhere, phase 1 or 2, trains what the
uninterrupted run would. The optimizer is built over every variable before anything is
frozen (``steps.build_state``); each phase's traced step applies gradients to the
variables trainable in it. Keras 3 optimizers keep slots for every variable they were
built with and update only those given to ``apply``, so a checkpoint holds the same
optimizer variables in either phase and restores across the boundary.

BatchNorm is frozen whenever anything is, so precise-BN recalibration (``recalibrate_bn``)
is skipped for such runs. The saved model has every layer trainable again, as any Keras
model loads: export's pruning fine-tune, or a later fine-tune, decides for itself.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

from keras_effnet.errors import ConfigError
from keras_effnet.names import CLASSIFIER_LAYER, HEAD_PREFIX

__all__ = ["freeze", "FREEZE_MODES", "freeze_mode", "set_phase", "start", "lr_phase",
           "UNFROZEN"]

FREEZE_MODES = ("none", "backbone", "bn")
# The layers keras_effnet builds before the classifier: what ``include_top=False`` keeps.
_BACKBONE_LAYER = re.compile(rf"preprocessing|stem_.*|stage\d+_block\d+_.*|{HEAD_PREFIX}.*")

# The second phase: everything trains but BatchNorm.
UNFROZEN = "bn"
_TRAINS = {"none": "every layer",
           "backbone": "the classifier only (backbone frozen, BatchNorm in inference mode)",
           "bn": "every layer but BatchNorm (inference mode, statistics fixed)"}


def freeze(model: Any, mode: str) -> Any:
    """Sets which layers train when fine-tuning; returns ``model`` (changed in place).

    Every layer's ``trainable`` is set, so the result depends on ``mode`` alone, not on
    an earlier call. Compile (again) afterwards: Keras reads ``trainable`` at compile.

    Args:
        model: a keras_effnet model, alone or inside a larger functional model.
        mode: ``"none"``: everything trains. ``"backbone"``: only layers outside the
            backbone train -- the classifier and any layers added around the model; the
            backbone is everything ``include_top=False`` keeps (stem, blocks and the head
            conv and BN, as keras.applications' base model), its BatchNorm in inference
            mode (the keras fine-tuning guide trains the new classifier only). ``"bn"``:
            everything trains except BatchNormalization, which runs in inference mode
            with its statistics fixed (the guide's rule for unfreezing EfficientNet).
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"mode must be one of {FREEZE_MODES}. Received: mode={mode!r}")
    model.trainable = True
    for layer in _all_layers(model):
        if mode == "backbone":
            layer.trainable = not _BACKBONE_LAYER.fullmatch(layer.name)
        elif mode == "bn":
            layer.trainable = type(layer).__name__ != "BatchNormalization"
        else:
            layer.trainable = True
    return model


def _all_layers(model: Any):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer


def weights_variant(config: Any) -> str:
    """The built-in variant whose tags ``config.init_weights`` may name (``--model``)."""
    from keras_effnet.variants import get_variant
    try:
        return get_variant(config.model).name
    except ValueError:
        return config.model


def init_weights_tag(config: Any) -> Any:
    """The pretrained-weights row ``config.init_weights`` names (None for a path or none).

    Raises:
        ConfigError: (field ``init_weights``) a tag the variant does not have.
    """
    from keras_effnet.weights import get_weight_tag, is_tag
    if not is_tag(config.init_weights):
        return None
    try:
        return get_weight_tag(weights_variant(config), config.init_weights)
    except ValueError as e:
        raise ConfigError(str(e), "init_weights") from None


def init_weights_key(init_weights: str | None) -> str | None:
    """``init_weights`` as config.json's ``fine_tune`` records it: a tag as it is, a path
    made absolute (so a resume from another directory compares equal)."""
    from keras_effnet.weights import is_tag
    if not init_weights or is_tag(init_weights):
        return init_weights or None
    return os.path.abspath(init_weights)


def freeze_mode(freeze_: str, unfreeze_at_epoch: int | None, epoch: int) -> str:
    """The :func:`keras_effnet.weights.freeze` mode of 0-based ``epoch``."""
    if unfreeze_at_epoch is not None and epoch >= unfreeze_at_epoch:
        return UNFROZEN
    return freeze_


def set_phase(model: Any, current: str, config: Any, epoch: int,
              log: Callable[[str], None]) -> str:
    """Sets ``model``'s trainable layers for ``epoch`` when they change; returns the mode."""
    mode = freeze_mode(config.freeze, config.unfreeze_at_epoch, epoch)
    if mode != current:
        freeze(model, mode)
        factor = (f", learning rate x{config.unfreeze_lr_factor:g}"
                  if mode == UNFROZEN and config.unfreeze_at_epoch is not None else "")
        log(f"Epoch {epoch + 1} on: training {_TRAINS[mode]}{factor}.")
    return mode


def start(state: Any, config: Any, class_names: Sequence[str],
          log: Callable[[str], None]) -> list[str]:
    """A fresh run's start: ``config.init_weights`` loaded into ``state.model`` (checked
    layer by layer first: another architecture raises :class:`ConfigError` naming
    ``init_weights`` and changes nothing), the EMA restarted from them.

    The classifier stays as initialised when its shape differs or, for a run directory,
    when that run's classes (its labels.txt) are not ``class_names``. Returns the layers
    left new.
    """
    if not config.init_weights:
        if config.freeze != "none":
            log(f"Warning: freeze={config.freeze!r} without init_weights: the frozen layers "
                "keep their random initialisation.")
        return []
    from keras_effnet.weights import WeightsDownloadError, load_weights
    head = state.model.get_layer(CLASSIFIER_LAYER)
    initial = head.get_weights()
    try:
        new = load_weights(state.model, config.init_weights, variant=weights_variant(config),
                           log=log)
    except (ValueError, WeightsDownloadError) as e:
        raise ConfigError(str(e), "init_weights") from None
    theirs = _run_class_names(config.init_weights)
    if not new and theirs is not None and list(theirs) != list(class_names):
        head.set_weights(initial)
        new = [head.name]
    if state.ema is not None:
        state.ema.reset()
    kept = ("classifier new: " + (f"the run's classes are {', '.join(theirs[:5])}"
                                  f"{', ...' if len(theirs) > 5 else ''}" if theirs and new
                                  else "another class count") if new else "classifier too")
    log(f"Starting weights: {config.init_weights} (every layer loaded; {kept}).")
    return new


def _run_class_names(path: str) -> list[str] | None:
    if not os.path.isdir(path):
        return None
    from keras_effnet.run_dir import RunDir
    return RunDir(path).read_labels()


def lr_phase(config: Any, steps_per_epoch: int) -> tuple[int, float] | None:
    """``(first step of the unfrozen phase, LR factor)``, or None without one."""
    if config.unfreeze_at_epoch is None:
        return None
    return config.unfreeze_at_epoch * steps_per_epoch, float(config.unfreeze_lr_factor)
