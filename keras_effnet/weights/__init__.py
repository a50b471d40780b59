"""Starting weights for a model: pretrained tags, weight files, official checkpoints and
training runs, all loaded through one checked assignment.

    build("efficientnetv2-s", weights="imagenet21k-ft1k")       # a tag: downloaded once
    build("efficientnet-b0", weights="model.weights.h5")          # a file
    build("efficientnet-lite0", weights="efficientnet-lite0.tar.gz")  # an official tarball

Every source becomes ``{our layer name: arrays}`` (:mod:`.files`, :mod:`.checkpoint`,
through the names of :mod:`.mapping`); :func:`assign` then checks every layer's shapes,
the source's leftovers and the values (finite, BatchNorm variances >= 0) before it sets
anything, so weights of another architecture, or broken ones, change nothing.

Tags (:func:`list_weights`) are fetched into keras' cache by :mod:`.download`, verified;
official checkpoints are converted once and cached beside the download as a Keras
``.weights.h5`` with its sha256 recorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from keras_effnet.names import CLASSIFIER_LAYER, HEAD_PREFIX
from keras_effnet.weights import checkpoint, download, files
from keras_effnet.weights.download import WeightsDownloadError
from keras_effnet.weights.mapping import weighted_layers
from keras_effnet.weights.table import (WEIGHTS, WeightTag, get_weight_tag, is_tag,
                                        list_weights, weight_tags)

__all__ = ["load_weights", "assign", "check_weights", "list_weights", "weight_tags",
           "get_weight_tag", "fetch_pretrained", "official_cache_path", "converted_path",
           "WeightTag", "WEIGHTS", "WeightsDownloadError", "is_tag"]

STEM_LAYER = "stem_conv"


def load_weights(model: Any, weights: str | os.PathLike, *, variant: str | None = None,
                 log: Callable[[str], None] | None = None) -> list[str]:
    """Loads ``weights`` into ``model`` (in place), checked layer by layer.

    Args:
        model: a keras_effnet model (Keras 3 or tf_keras).
        weights: a tag of ``variant`` (``keras_effnet.list_weights()``), a keras_effnet
            or keras.applications ``.weights.h5`` / ``.keras`` / ``.h5`` file, an official
            checkpoint (``.tar.gz`` / ``.tgz``, a directory holding one, or its prefix),
            or a training run directory.
        variant: the built-in variant a tag is of (default: ``model.name``).
        log: where download progress and warnings go (default: stderr).

    Returns:
        The layers left as initialised: ``[]``, or the classifier's name when the source
        has another class count or none.

    Raises:
        ValueError: an unknown tag (listing the variant's tags), a file that is not
            weights, or weights that do not fit (one line naming the first layer).
            Nothing is assigned then.
        WeightsDownloadError: a tag could not be fetched or verified.

    Example:
        >>> model = keras_effnet.build("efficientnet-b0", weights=None, classes=10)
        >>> load_weights(model, "imagenet")   # a new 10-way classifier
        ['predictions']
    """
    layers = weighted_layers(model)
    if is_tag(weights):
        row = get_weight_tag(variant or model.name, weights)
        check_preprocessing(model, row)
        path = fetch_pretrained(row, notop=not _takes_top(model, row), log=log)
        mapped, unused = files.read_file(path, layers)
        shown = f"{row.tag} ({path})"
    elif checkpoint.is_checkpoint(weights):
        shown = os.fspath(weights)
        if not os.path.exists(shown) and not os.path.isfile(shown + ".index"):
            raise ValueError(f"{shown!r} does not exist. Received: weights={shown!r}")
        with checkpoint.open_checkpoint(shown) as prefix:
            mapped, unused = checkpoint.read_checkpoint(prefix, layers, shown)
    else:
        shown = os.fspath(weights)
        mapped, unused = files.read_file(weights, layers)
    return assign(model, mapped, unused, shown)


def _takes_top(model: Any, row: WeightTag) -> bool:
    classifier = _layer(model, CLASSIFIER_LAYER)
    return classifier is not None and int(classifier.units) == row.classes


def _layer(model: Any, name: str):
    return next((layer for layer in model.layers if layer.name == name), None)


def assign(model: Any, mapped: dict[str, tuple[str, tuple]], unused: list[str],
           shown: str) -> list[str]:
    """Sets ``mapped`` (our layer name -> (source label, arrays)) into ``model`` after
    checking all of it; returns the layers left new (the classifier, when the source has
    another class count or none).

    Raises:
        ValueError: a layer the source lacks or has with other shapes (another
            architecture), source layers nothing took (a deeper one), or values that are
            not finite / negative BatchNorm variances. Nothing is assigned then.
    """
    pairs, new = [], []
    has = {layer.name for layer in model.layers}
    for layer in model.layers:
        if not layer.weights or hasattr(layer, "layers"):
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        label, arrays = mapped.get(layer.name, (None, None))
        if layer.name == STEM_LAYER and arrays is not None:
            arrays = adapt_stem(arrays, shapes[0][2])
        theirs = [tuple(a.shape) for a in arrays] if arrays is not None else None
        if theirs == shapes:
            pairs.append((layer, arrays, label))
        elif layer.name == CLASSIFIER_LAYER:
            new.append(layer.name)
        else:
            what = (f"the source's {label} has {theirs}" if arrays is not None else
                    "the source has no such layer")
            raise ValueError(f"The weights do not fit {model.name!r} at layer {layer.name!r}"
                             f" ({type(layer).__name__}, {shapes}; {what}): they hold "
                             f"another architecture. Received: weights={shown!r}")
    extra = _optional_leftovers(unused, has)
    if extra:
        raise ValueError(f"The weights do not fit {model.name!r}: the source has "
                         f"{len(extra)} layer(s) the model lacks (first: {extra[0]}); it "
                         f"holds a deeper architecture. Received: weights={shown!r}")
    for layer, arrays, label in pairs:
        _check_values(layer, arrays, label, shown)
    for layer, arrays, _ in pairs:
        layer.set_weights(list(arrays))
    return new


def adapt_stem(arrays: tuple, channels: int) -> tuple:
    """The stem kernel of an RGB source for ``channels`` input channels, as timm's
    ``in_chans``: summed over RGB for 1 channel; RGB repeated cyclically and scaled by
    3 / channels for more, so a C-channel image made of repeated RGB gives the same
    activations. Other shapes are returned unchanged (the shape check then decides)."""
    kernel = np.asarray(arrays[0])
    if kernel.ndim != 4 or kernel.shape[2] != 3 or channels == 3:
        return arrays
    if channels == 1:
        adapted = kernel.sum(axis=2, keepdims=True)
    else:
        adapted = kernel[:, :, [i % 3 for i in range(channels)], :] * (3.0 / channels)
    return (adapted.astype(kernel.dtype), *arrays[1:])


def _optional_leftovers(unused: list[str], has: set[str]) -> list[str]:
    """The entries of ``unused`` that no model layer explains: at most one classifier
    (a model without top) and one conv and BN (a model without the head conv) are."""
    spare = {"dense": int(CLASSIFIER_LAYER not in has),
             "conv": int(f"{HEAD_PREFIX}conv" not in has),
             "bn": int(f"{HEAD_PREFIX}bn" not in has)}
    extra = []
    for label in unused:
        kind = _label_kind(label)
        if kind in spare and spare[kind] > 0 and "block" not in label:
            spare[kind] -= 1
        else:
            extra.append(label)
    return extra


def _label_kind(label: str) -> str | None:
    leaf = label.rsplit("/", 1)[-1].lower()
    if leaf.startswith("dense") or leaf in (CLASSIFIER_LAYER, "probs"):
        return "dense"
    if leaf.startswith("conv2d") or leaf.endswith("_conv"):
        return "conv"
    if leaf.startswith(("batch_normalization", "tpu_batch_normalization")) or \
            leaf.endswith("_bn"):
        return "bn"
    return None


def _check_values(layer: Any, arrays: tuple, label: str, shown: str) -> None:
    for array in arrays:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"The weights hold non-finite values (NaN or inf) at "
                             f"{label} (layer {layer.name!r}): a corrupt or diverged file, "
                             f"refused. Received: weights={shown!r}")
    if type(layer).__name__ == "BatchNormalization" and np.any(np.asarray(arrays[-1]) < 0):
        raise ValueError(f"The weights hold a negative BatchNorm variance at {label} (layer "
                         f"{layer.name!r}): a corrupt file, refused. Received: "
                         f"weights={shown!r}")


def check_preprocessing(model: Any, row: WeightTag) -> None:
    """Raises ValueError unless ``model`` normalises its inputs as ``row``'s weights
    expect (or has no preprocessing layer: the caller normalises)."""
    from keras_effnet.builder import channel_constants
    layer = _layer(model, "preprocessing")
    if layer is None:
        return
    scale, offset = channel_constants(row.preprocessing, int(model.input_shape[-1]))
    config = layer.get_config()
    ok = (np.allclose(np.ravel(config["scale"]), scale, rtol=1e-6)
          and np.allclose(np.ravel(config["offset"]), offset, rtol=1e-6, atol=1e-7))
    if not ok:
        raise ValueError(f"{row.variant} {row.tag!r} weights expect {row.preprocessing!r} "
                         f"input normalisation, but {model.name!r} normalises otherwise: "
                         f"build it with keras_effnet.build({row.variant!r}, "
                         f"weights={row.tag!r}), which sets it. Received: weights={row.tag!r}")


def fetch_pretrained(row: WeightTag, *, notop: bool = False,
                     log: Callable[[str], None] | None = None) -> Path:
    """The local Keras weights file of ``row``: keras.applications' file (with or without
    its classifier), or an official checkpoint converted to ``.weights.h5`` (done once;
    later calls make no request)."""
    cache = download.cache_dir()
    if row.source == "keras":
        origin = row.origin_notop if notop else row.origin
        name = origin.rsplit("/", 1)[-1]
        return download.fetch(origin, cache / name, expected_hash=row.md5[1 if notop else 0],
                              hash_algorithm="md5", what=f"{row.variant} {row.tag!r}",
                              log=log)
    return _converted(row, cache, log)


def _cached(row: WeightTag) -> bool:
    if row.source == "keras":
        cache = download.cache_dir()
        return any((cache / o.rsplit("/", 1)[-1]).is_file()
                   for o in (row.origin, row.origin_notop))
    return converted_path(row).is_file() or official_cache_path(row).is_file()


def official_cache_path(row: WeightTag) -> Path:
    """Where an official tarball is cached: below ``keras_effnet/`` in keras' cache, with
    the origin's path (the tpu and automl files share names across tags)."""
    from urllib.parse import urlsplit
    return download.cache_dir() / "keras_effnet" / urlsplit(row.origin).path.lstrip("/")


def converted_path(row: WeightTag) -> Path:
    tarball = official_cache_path(row)
    stem = tarball.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    return tarball.with_name(stem + ".weights.h5")


def _converted(row: WeightTag, cache: Path, log) -> Path:
    converted = converted_path(row)
    if converted.is_file() and download.verified(converted, None, "sha256"):
        return converted
    tarball = official_cache_path(row)
    what = f"{row.variant} {row.tag!r}"
    path = download.fetch(row.origin, tarball, what=what, log=log)
    try:
        _convert(row, path, converted)
    except ValueError as e:
        # A tarball that does not convert is not the published file: drop it, so the
        # next call downloads it again instead of failing on it for good.
        for stale in (path, Path(str(path) + ".sha256")):
            stale.unlink(missing_ok=True)
        raise WeightsDownloadError(f"The downloaded {what} checkpoint is not usable and "
                                   f"was removed: {e}") from None
    download.record(path)
    download.record(converted)
    return converted


def _convert(row: WeightTag, tarball: Path, converted: Path) -> None:
    from keras_effnet.builder import build
    from keras_effnet.run_dir import atomic_path
    # The full model of the checkpoint (its top and class count): every variable used,
    # every layer filled; cached in Keras' own format, for any top or class count.
    reference = build(row.variant, classes=row.classes)
    with checkpoint.open_checkpoint(tarball, scratch=tarball.parent) as prefix:
        mapped, unused = checkpoint.read_checkpoint(prefix, weighted_layers(reference),
                                                    str(tarball))
    new = assign(reference, mapped, unused, str(tarball))
    if new:
        raise ValueError(f"it has no {row.classes}-way classifier")
    with atomic_path(converted) as tmp:
        # Keras 3 insists on the .weights.h5 suffix; atomic_path's name ends in .h5.
        reference.save_weights(tmp + ".weights.h5")
        os.replace(tmp + ".weights.h5", tmp)


def check_weights(weights: str | os.PathLike, variant: str | None = None) -> None:
    """Raises the ValueError loading ``weights`` would raise before any model exists: an
    unknown tag of ``variant``, or a path that is missing or not weights (its layout
    read, none of its arrays). A tag needs no download for this."""
    if is_tag(weights):
        if variant is None:
            raise ValueError(f"weights={weights!r} is a tag: it needs the variant")
        row = get_weight_tag(variant, weights)
        if download.offline() and not _cached(row):
            target = official_cache_path(row) if row.source == "official" else \
                download.cache_dir() / row.file_name
            raise ValueError(f"{row.variant} {row.tag!r} weights are not in the cache and "
                             f"{download.OFFLINE_ENV} is set: download {row.origin} on a "
                             f"machine with internet and put it at {target}.")
        return
    if checkpoint.is_checkpoint(weights):
        if not os.path.exists(os.fspath(weights)) and \
                not os.path.isfile(os.fspath(weights) + ".index"):
            raise ValueError(f"{os.fspath(weights)!r} does not exist. "
                             f"Received: weights={os.fspath(weights)!r}")
        return
    files.check_readable(weights)
