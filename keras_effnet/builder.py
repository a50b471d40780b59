"""Architecture -> functional Keras model, for Keras 3 and (for pruning) tf_keras."""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
from typing import Any, Sequence

from keras_effnet import spec as spec_lib
from keras_effnet.blocks import Ops, dense_initializer, fused_mbconv, mbconv
# Stable layer names that other modules look layers up by (the trainer sets the head's
# dropout per stage; porting, pruning, loading weights and the trainer find the classifier).
from keras_effnet.names import (CLASSIFIER_LAYER, DROPOUT_LAYER, HEAD_PREFIX, INPUT_LAYER,
                                PYRAMID_STRIDES, pyramid_key)
from keras_effnet.profile import check_buildable
from keras_effnet.variants import Variant, resolve_variant

__all__ = ["build", "resolve_variant", "preprocessing_constants", "DROPOUT_LAYER",
           "CLASSIFIER_LAYER", "INPUT_LAYER", "model_image_size", "pyramid_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Functional graphs of 1000+ layers (V2-XL) recurse deeper than Python's default 1000.
_RECURSION_LIMIT = 20_000


@contextlib.contextmanager
def _recursion_limit(limit: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def preprocessing_constants(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (scale, offset) with ``y = x * scale + offset`` for pixels in [0, 255].

    imagenet: ``(x / 255 - mean) / std``; symmetric: ``(x - 128) / 128``;
    lite: ``(x - 127) / 128``; inception: ``x / 127.5 - 1`` (AdvProp's weights); none:
    identity.
    """
    if kind == "imagenet":
        scale = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)
        offset = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    elif kind == "symmetric":
        scale, offset = (1.0 / 128.0,) * 3, (-1.0,) * 3
    elif kind == "lite":
        scale, offset = (1.0 / 128.0,) * 3, (-127.0 / 128.0,) * 3
    elif kind == "inception":
        scale, offset = (1.0 / 127.5,) * 3, (-1.0,) * 3
    elif kind == "none":
        scale, offset = (1.0,) * 3, (0.0,) * 3
    else:
        raise ValueError(f"Unknown preprocessing {kind!r}")
    return scale, offset


def build(name_or_arch: str | Variant | Sequence[str] | None = None, *,
          arch: str | Sequence[str | spec_lib.BlockSpec] | None = None,
          include_top: bool = True,
          weights: str | None = None,
          input_shape: tuple[int | None, int | None, int] | None = None,
          input_tensor: Any = None,
          pooling: str | None = None,
          classes: int | None = None,
          classifier_activation: str | None = "softmax",
          include_preprocessing: bool = True,
          dropout: float | None = None,
          drop_path_rate: float | None = None,
          width: float | None = None,
          depth: float | None = None,
          name: str | None = None,
          base: str | Variant | None = None,
          keras_module: Any = None,
          pyramid_outputs: bool = False):
    """Builds an EfficientNet (V1, lite or V2) as a functional Keras model.

    Args:
        name_or_arch: a variant name (``keras_effnet.list_models()``), a
            :class:`Variant`, or a custom architecture (block strings).
        arch: a custom architecture, as an alternative to ``name_or_arch``.
        include_top: end with pooling, dropout and the ``classes``-way classifier.
        weights: None (random init); a pretrained tag of the variant
            (``"imagenet"``, ``"imagenet21k-ft1k"``, ...: :func:`keras_effnet.list_weights`),
            downloaded once into keras' cache and verified; or a path: a ``.weights.h5``,
            ``.keras`` or ``.h5`` file saved from keras_effnet or keras.applications, an
            official checkpoint (``.tar.gz`` / ``.tgz``, its directory or prefix), or a
            training run directory. The input normalisation follows the tag's (AdvProp's
            differs). A classifier of another class count is left new; see
            :func:`keras_effnet.weights.load_weights`.
        input_shape: ``(height, width, channels)``; default ``(None, None, 3)`` so one
            model runs at every image size (progressive learning). Any channel count:
            pretrained weights adapt the stem as timm's ``in_chans`` does (1 channel: the
            kernel summed over RGB; C > 3: RGB repeated cyclically and scaled by 3 / C),
            and the normalisation constants follow (their mean for 1 channel, repeated
            for C > 3).
        input_tensor: a Keras tensor (``keras.Input(...)``, or another layer's output)
            to build the model on, as keras.applications; the model's inputs are its
            source inputs.
        pooling: without top, ``None`` (feature map), ``"avg"`` or ``"max"``.
        classes: the classifier's classes: default the tag's (21,843 for
            ``imagenet21k``), else 1000; another count keeps a new classifier.
        classifier_activation: as keras.applications.
        include_preprocessing: inputs are pixels in [0, 255], normalised inside the
            model with the variant's fixed constants.
        dropout, drop_path_rate, width, depth: override the variant's values.
        name: model name (default: the variant name).
        base: for a custom ``arch``, the variant whose settings it inherits.
        keras_module: ``keras`` (default) or ``tf_keras`` for a tf_keras twin.
        pyramid_outputs: with ``include_top=False``, output a dict of feature maps
            ``{"P1": ..., "P5": ...}`` at strides 2 to 32, each the output of the last
            block at its stride (P5: the last block's projection, before the head conv:
            tensorflow/tpu's ``reduction_5`` endpoint, as EfficientDet reads it; keras-hub
            takes P5 after the head conv); channels: :func:`pyramid_channels`. The maps
            stay in the compute dtype under mixed precision, for the layers that follow.
    """
    variant = resolve_variant(name_or_arch, arch=arch, base=base, dropout=dropout,
                              drop_path_rate=drop_path_rate, width=width, depth=depth)
    tag = _weight_tag(variant, weights, name_or_arch, arch)
    if tag is not None:
        variant = variant.replace(preprocessing=tag.preprocessing)
    if classes is None:
        classes = tag.classes if tag is not None else 1000
    elif isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = int(classes)  # numpy integers (len(np.unique(labels))) included
    _check_arguments(include_top, weights if tag is None else None, pooling, classes,
                     input_shape, pyramid_outputs)
    # Sizes that cannot be built in memory are refused from the arithmetic, in
    # milliseconds, before Keras starts allocating (or hangs on a million blocks).
    check_buildable(variant, classes=classes, include_top=include_top)
    taps = _pyramid_taps(variant) if pyramid_outputs else {}
    if tag is not None:
        # Fetched (or found in the cache) before anything is built: offline or failed
        # downloads are refused in a moment.
        from keras_effnet.weights import fetch_pretrained
        weights = fetch_pretrained(tag, notop=not (include_top and classes == tag.classes))
    # Everything above is arithmetic and files: a bad request fails before Keras loads.
    keras_module = _keras_module(keras_module)
    layers = keras_module.layers
    input_shape = _input_shape(input_shape, input_tensor)

    ops = Ops(layers, variant.activation, variant.bn_momentum, variant.bn_epsilon)
    with _recursion_limit(_RECURSION_LIMIT):
        if input_tensor is None:
            inputs = x = layers.Input(shape=input_shape, name=INPUT_LAYER)
        else:
            x = input_tensor
            inputs = keras_module.utils.get_source_inputs(input_tensor)
        if include_preprocessing and variant.preprocessing != "none":
            scale, offset = channel_constants(variant.preprocessing, input_shape[-1])
            x = layers.Rescaling(scale=list(scale), offset=list(offset),
                                 name="preprocessing")(x)
        x = ops.conv_bn_act(x, variant.stem(), 3, 2, "stem_")
        tapped = {-1: x}
        for i, (block, rate) in enumerate(zip(variant.scaled_blocks(),
                                              variant.drop_path_rates())):
            make = fused_mbconv if block.fused else mbconv
            x = tapped[i] = make(ops, block, rate)(x)
        if pyramid_outputs:
            x = {key: tapped[index] for key, (index, _) in taps.items()}
        else:
            x = _head(ops, variant, x, include_top, pooling, classes, classifier_activation,
                      keras_module)
        model = keras_module.Model(inputs, x, name=name or variant.name)
    if weights is not None:
        from keras_effnet.weights import load_weights
        load_weights(model, weights, variant=variant.name)
    return model


def _weight_tag(variant: Variant, weights, name_or_arch, arch):
    """The table row of ``weights`` when it is a tag (None for a path or no weights)."""
    from keras_effnet.weights.table import get_weight_tag, is_tag
    if not is_tag(weights):
        return None
    if arch is not None or not isinstance(name_or_arch, (str, Variant)) or \
            variant.family == "custom":
        raise ValueError(f"weights={weights!r} is a pretrained tag of a built-in variant; "
                         "a custom architecture has none (pass a weights file of it). "
                         f"Received: weights={weights!r}")
    return get_weight_tag(variant.name, weights)


def channel_constants(kind: str, channels: int) -> tuple[list[float], list[float]]:
    """:func:`preprocessing_constants` for ``channels`` input channels: the RGB ones for
    3, their mean for 1, repeated cyclically for more (as the stem's kernel is adapted)."""
    scale, offset = preprocessing_constants(kind)
    if channels == 1:
        return [sum(scale) / 3], [sum(offset) / 3]
    return [scale[i % 3] for i in range(channels)], [offset[i % 3] for i in range(channels)]


def _input_shape(input_shape, input_tensor) -> tuple:
    if input_tensor is None:
        return tuple(input_shape) if input_shape is not None else (None, None, 3)
    shape = getattr(input_tensor, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError("input_tensor must be a Keras tensor of rank 4 (batch, height, "
                         f"width, channels). Received: input_tensor={input_tensor!r}")
    shape = tuple(None if d is None else int(d) for d in shape[1:])
    if input_shape is not None and tuple(input_shape) != shape:
        raise ValueError(f"input_shape {tuple(input_shape)} disagrees with input_tensor's "
                         f"shape {shape}: pass one of them. Received: "
                         f"input_shape={input_shape!r}")
    if shape[-1] is None:
        raise ValueError("input_tensor needs a known channel count. Received: "
                         f"input_tensor shape {shape}")
    return shape


def _head(ops, variant, x, include_top, pooling, classes, classifier_activation,
          keras_module):
    layers = ops.layers
    x = ops.conv_bn_act(x, variant.head(), 1, 1, HEAD_PREFIX)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if variant.dropout > 0:
            x = layers.Dropout(variant.dropout, name=DROPOUT_LAYER)(x)
        # float32 logits and probabilities under mixed precision.
        return layers.Dense(classes, activation=classifier_activation,
                            kernel_initializer=dense_initializer(), dtype="float32",
                            name=CLASSIFIER_LAYER)(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    if _compute_dtype(keras_module) != "float32":
        x = layers.Activation("linear", dtype="float32", name="float32_output")(x)
    return x


def pyramid_channels(name_or_arch: str | Variant | Sequence[str], **kwargs: Any
                     ) -> dict[str, int]:
    """Channels of each feature map of ``build(..., pyramid_outputs=True)``, from the
    architecture alone: ``{"P1": 16, "P2": 24, ...}``. ``kwargs`` as
    :func:`keras_effnet.resolve_variant` (``width``, ``depth``, ``arch``, ...)."""
    variant = resolve_variant(name_or_arch, **kwargs)
    return {key: channels for key, (_, channels) in _pyramid_taps(variant).items()}


def _pyramid_taps(variant: Variant) -> dict[str, tuple[int, int]]:
    """Pyramid key -> (index of the block whose output it is, -1 for the stem; channels).
    The last block at each stride wins: stages of stride 1 extend the level before."""
    stride, taps = 2, {2: (-1, variant.stem())}
    for i, block in enumerate(variant.scaled_blocks()):
        stride *= block.strides
        taps[stride] = (i, block.output_filters)
    if tuple(taps) != PYRAMID_STRIDES:
        raise ValueError(
            f"pyramid_outputs needs blocks reaching strides {PYRAMID_STRIDES}; "
            f"{variant.name!r} reaches {tuple(taps)}. Received: pyramid_outputs=True")
    return {pyramid_key(s): tap for s, tap in taps.items()}


def _keras_module(keras_module):
    if keras_module is None:
        import keras
        return keras
    if isinstance(keras_module, str):
        if keras_module not in ("keras", "tf_keras"):
            raise ValueError("keras_module must be keras or tf_keras. "
                             f"Received: keras_module={keras_module!r}")
        import importlib
        try:
            return importlib.import_module(keras_module)
        except ImportError as e:
            raise ImportError(f"{keras_module} is not installed: "
                              "pip install 'keras_effnet[prune]'") from e
    return keras_module


def _compute_dtype(keras_module) -> str:
    policy = keras_module.mixed_precision.global_policy()
    return getattr(policy, "compute_dtype", "float32")


def _check_arguments(include_top, weights, pooling, classes, input_shape,
                     pyramid_outputs) -> None:
    if weights is not None:
        from keras_effnet.weights.checkpoint import is_checkpoint
        if not isinstance(weights, (str, os.PathLike)) or not (
                os.path.exists(weights) or is_checkpoint(weights)):
            raise ValueError("weights must be None, a pretrained tag (keras_effnet."
                             "list_weights()) or the path of an existing weights file, "
                             f"checkpoint or run directory. Received: weights={weights!r}")
    if pyramid_outputs and (include_top or pooling is not None):
        raise ValueError("pyramid_outputs=True returns feature maps: it needs "
                         "include_top=False and pooling=None. Received: "
                         f"include_top={include_top}, pooling={pooling!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and pooling is not None:
        raise ValueError("pooling applies only with include_top=False (the top pools "
                         f"already). Received: pooling={pooling!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes <= 0:
        raise ValueError(f"classes must be a positive integer. Received: classes={classes!r}")
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or any(
                d is not None and (not isinstance(d, int) or isinstance(d, bool) or d < 1)
                for d in shape[:2]) or not isinstance(shape[-1], int) or \
                isinstance(shape[-1], bool) or shape[-1] < 1:
            raise ValueError("input_shape must be (height, width, channels) with positive "
                             "sizes or None (height, width) and a positive channel count. "
                             f"Received: input_shape={input_shape!r}")


def model_image_size(model: Any, default: int | None = None, variant: Any = None) -> int:
    """The evaluation size of a bare model (a run's is ``RunDir.eval_image_size``): its
    static input size, else ``default``, else the eval size of ``variant`` (default: the
    built-in variant named like the model)."""
    shape = model.input_shape
    if shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    if default is not None:
        return int(default)
    if variant is not None:
        return int(variant.eval_size)
    from keras_effnet.variants import get_variant
    try:
        return get_variant(model.name).eval_size
    except ValueError:
        raise ValueError(f"Model {model.name!r} takes any image size and is not a built-in "
                         "variant: pass image_size= (the evaluation size it was trained "
                         "for).") from None
