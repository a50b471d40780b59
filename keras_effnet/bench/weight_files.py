"""Weight files in each publisher's layout, written from a model's (random) weights: what
the weights benchmark serves and the tests' mirror serves, with no internet.

* keras.applications: legacy (Keras 2) weights-only ``.h5`` under keras' layer names; V1
  with its ``Normalization`` state as keras' released files hold it (ImageNet mean, and the
  std where the variance belongs: tensorflow#49930).
* Google's checkpoints: a TF1 name-based bundle in a tarball whose top directory is the
  archive's name. The variable names are derived here on their own terms, not through
  :mod:`keras_effnet.weights.mapping`: TensorFlow numbers a scope's layers per class in
  call order (``conv2d``, ``conv2d_1``; ``se/`` apart), so walking a model's layers in
  order and counting gives them. Each variable gets an ``/ExponentialMovingAverage``
  shadow holding the real values while the variable itself holds noise (the official
  evaluation restores the shadows), plus RMSProp slots and ``global_step``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["md5", "keras_md5_slot", "write_keras_h5", "official_variables", "write_checkpoint",
           "write_tarball", "keras_pair", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LEAVES = {"Conv2D": ("kernel", "bias"), "DepthwiseConv2D": ("depthwise_kernel",),
           "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
           "Dense": ("kernel", "bias")}
_BASES = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
          "BatchNormalization": "tpu_batch_normalization", "Dense": "dense"}


def md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_keras_h5(model: Any, path: Path) -> Path:
    """``model`` (a keras.applications model) as keras' released weights-only ``.h5``."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    norm = next((layer for layer in model.layers
                 if type(layer).__name__ == "Normalization" and len(layer.weights) == 3), None)
    if norm is not None:  # keras' V1 files: ImageNet mean, and the std as the variance
        count = norm.get_weights()[2]
        norm.set_weights([np.array(IMAGENET_MEAN, "float32"),
                          np.array(IMAGENET_STD, "float32"), count])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def keras_md5_slot(variant: str) -> tuple[dict, str]:
    """``(keras' WEIGHTS_HASHES dict, key)`` of ``variant``'s imagenet files (keras keys
    them ``"b0"`` for V1 and V2-B0, ``"-s"`` for V2-S): where a run that writes its own
    files puts their md5s, so keras' ``weights="imagenet"`` accepts them from the cache."""
    import keras.src.applications.efficientnet as v1
    import keras.src.applications.efficientnet_v2 as v2
    size = variant.rsplit("-", 1)[-1]
    if "v2" in variant:
        return v2.WEIGHTS_HASHES, size if size.startswith("b") else "-" + size
    return v1.WEIGHTS_HASHES, size


def keras_pair(variant: str, top_path: Path, notop_path: Path) -> Any:
    """keras.applications' top and notop files of ``variant`` (the notop file the top
    model's backbone, as keras' released pair is); returns the top model (logits)."""
    from keras_effnet.port import keras_applications_model
    top = keras_applications_model(variant, classifier_activation=None)
    notop = keras_applications_model(variant, include_top=False)
    for a, b in zip([x for x in top.layers if x.weights], [x for x in notop.layers if x.weights]):
        b.set_weights(a.get_weights())
    write_keras_h5(top, top_path)
    write_keras_h5(notop, notop_path)
    return top


def official_variables(model: Any, scope: str) -> dict[str, np.ndarray]:
    """Official variable name -> value, for a keras_effnet ``model``: numbered per block
    scope by class in call (= model) order."""
    out: dict[str, np.ndarray] = {}
    blocks: dict[str, int] = {}
    counts: dict[tuple[str, str], int] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        match = re.match(r"(stage\d+_block\d+_)", layer.name)
        if match:
            where = f"blocks_{blocks.setdefault(match[1], len(blocks))}"
        else:
            where = "stem" if layer.name.startswith("stem_") else "head"
        if "_se_" in layer.name:
            where += "/se"
        n = counts.get((where, _BASES[kind]), 0)
        counts[(where, _BASES[kind])] = n + 1
        name = f"{scope}/{where}/{_BASES[kind]}{'' if n == 0 else f'_{n}'}"
        for leaf, value in zip(_LEAVES[kind], layer.get_weights()):
            out[f"{name}/{leaf}"] = value
    return out


def write_checkpoint(variables: dict[str, np.ndarray], prefix: Path, ema: bool = True,
                     seed: int = 0) -> None:
    """A TF1 name-based checkpoint bundle at ``prefix``; with ``ema`` every value goes to
    its ``/ExponentialMovingAverage`` shadow and the variable holds noise."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, value in variables.items():
        if ema:
            tensors[name + "/ExponentialMovingAverage"] = value
            tensors[name] = (value + rng.normal(size=value.shape)).astype(value.dtype)
            if name.endswith(("kernel", "gamma")):
                tensors[name + "/RMSProp"] = np.ones_like(value)
        else:
            tensors[name] = value
    tensors["global_step"] = np.array(218750, "int64")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def write_tarball(variables: dict[str, np.ndarray], path: Path, ema: bool = True) -> Path:
    """``variables`` as an official tarball: ``<name>/model.ckpt.*`` inside ``path``."""
    name = path.name.split(".")[0]
    work = path.parent / f".{name}-work"
    write_checkpoint(variables, work / name / "model.ckpt", ema=ema)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(work / name, arcname=name)
    shutil.rmtree(work)
    return path
