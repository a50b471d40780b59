"""Starting weights for a model (a file or a training run) and freezing for fine-tuning.

Weights are read from the file itself, with no model deserialised and nothing
downloaded: each weighted layer's arrays, grouped by kind (conv, depthwise, bn, dense)
in the order the model creates them. keras_effnet and keras.applications create the same
weighted layers in the same order (see ``port.py``), so the k-th conv of a file is the
k-th conv of the model whichever of the two wrote it; Keras 3's own loader pairs layers
so too (by class and order: its ``.weights.h5`` names them ``conv2d_17``, not by layer
name). Every pair is checked before anything is assigned, so a file of another
architecture changes nothing.

Readable: Keras 3 ``.weights.h5`` and ``.keras`` (its ``model.weights.h5``), legacy
``.h5`` (keras.applications' weight files, or a whole model saved as ``.h5``), and a
training run directory (its ``final_model.keras``, through :class:`RunDir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import zipfile
from typing import Any

from keras_effnet.names import HEAD_PREFIX

__all__ = ["load_weights", "read_weights", "check_readable", "freeze", "FREEZE_MODES",
           "WeightEntry"]

KINDS = ("conv", "depthwise", "bn", "dense")
_LAYER_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise",
                "BatchNormalization": "bn", "Dense": "dense"}
# Keras 3 stores a functional model's layers under layers/<snake_case class>[_<n>].
_KERAS3_GROUP = re.compile(r"(conv2d|depthwise_conv2d|batch_normalization|dense)(?:_(\d+))?")
_KERAS3_KINDS = {"conv2d": "conv", "depthwise_conv2d": "depthwise",
                 "batch_normalization": "bn", "dense": "dense"}
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
FREEZE_MODES = ("none", "backbone", "bn")
# The layers keras_effnet builds before the classifier: what ``include_top=False`` keeps.
_BACKBONE_LAYER = re.compile(rf"preprocessing|stem_.*|stage\d+_block\d+_.*|{HEAD_PREFIX}.*")


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One weighted layer of a file: its label there and its arrays, in layer order."""

    label: str
    arrays: tuple[Any, ...]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(a.shape) for a in self.arrays]


def load_weights(model: Any, path: str | os.PathLike) -> list[str]:
    """Loads the weights at ``path`` into ``model`` (in place), checked layer by layer.

    ``path`` is a keras_effnet or keras.applications ``.weights.h5``, ``.keras`` or
    ``.h5`` file of the same architecture, or a training run directory. A classifier
    whose shape differs (another class count) or that the file lacks is left as
    initialised; a classifier or head conv the model lacks (``include_top=False``,
    ``pyramid_outputs=True``) is skipped.

    Returns:
        The names of the layers left as initialised (``[]`` or the classifier's).

    Raises:
        ValueError: one line naming the first layer of ``model`` the file does not fit
            (another architecture), or a file that holds no Keras weights. Nothing is
            assigned then.
    """
    source = read_weights(path)
    used = dict.fromkeys(KINDS, 0)
    pairs, new = [], []
    for layer in model.layers:
        kind = _LAYER_KINDS.get(type(layer).__name__)
        if kind is None:
            continue
        entries, index = source[kind], used[kind]
        used[kind] += 1
        entry = entries[index] if index < len(entries) else None
        shapes = [tuple(w.shape) for w in layer.weights]
        if entry is not None and entry.shapes == shapes:
            pairs.append((layer, entry.arrays))
        elif kind == "dense":
            new.append(layer.name)
        else:
            theirs = (f"the file's {entry.label} has {entry.shapes}" if entry else
                      f"the file has only {len(entries)} {kind} layers")
            raise ValueError(f"The weights do not fit {model.name!r} at layer {layer.name!r} "
                             f"({kind}, {shapes}; {theirs}): the file holds another "
                             f"architecture. Received: weights={os.fspath(path)!r}")
    _check_leftovers(model, source, used, path)
    for layer, arrays in pairs:
        layer.set_weights(list(arrays))
    return new


def _check_leftovers(model, source, used, path) -> None:
    # A model without the head conv (pyramid outputs) leaves the file's last conv and BN.
    has_head = any(layer.name == f"{HEAD_PREFIX}conv" for layer in model.layers)
    for kind in ("conv", "depthwise", "bn"):
        spare = 1 if kind in ("conv", "bn") and not has_head else 0
        extra = source[kind][used[kind]:]
        if len(extra) > spare:
            raise ValueError(f"The weights do not fit {model.name!r}: the file has "
                             f"{len(source[kind])} {kind} layers, the model "
                             f"{used[kind]} (first extra: {extra[0].label}); it holds a "
                             f"deeper architecture. Received: weights={os.fspath(path)!r}")


def read_weights(path: str | os.PathLike) -> dict[str, list[WeightEntry]]:
    """The weighted layers of a file or run directory: kind -> entries in model order.

    Layers of other kinds (keras.applications V1's ``Normalization``, whose 7 numbers
    keras_effnet holds as fixed constants) are left out.
    """
    with _open(path) as (f, resolved):
        return _read_h5(f, resolved)


def check_readable(path: str | os.PathLike) -> None:
    """Raises the ValueError :func:`read_weights` would (no such file, not a weights file,
    an unfinished run), reading the file's layout but none of its arrays: a request's
    ``weights=`` checked in a moment."""
    with _open(path) as (f, resolved):
        if "layers" not in f and "layer_names" not in (
                f["model_weights"] if "model_weights" in f else f).attrs:
            raise ValueError(f"{resolved!r} holds no Keras model weights. "
                             f"Received: weights={resolved!r}")


@contextlib.contextmanager
def _open(path: str | os.PathLike):
    """``(open h5py.File, resolved path)`` of a weights file, ``.keras`` or run directory."""
    import h5py
    path = _resolve(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if _KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
                    raise ValueError(f"{path!r} is a zip file without "
                                     f"{_KERAS_ARCHIVE_WEIGHTS}: not a .keras model. "
                                     f"Received: weights={path!r}")
                data = io.BytesIO(archive.read(_KERAS_ARCHIVE_WEIGHTS))
            with h5py.File(data, "r") as f:
                yield f, path
            return
        if not h5py.is_hdf5(path):
            raise ValueError("weights must be a .weights.h5, .keras or .h5 file or a run "
                             f"directory; {path!r} is none of them. Received: weights={path!r}")
        with h5py.File(path, "r") as f:
            yield f, path
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"Cannot read weights from {path!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}). "
                         f"Received: weights={path!r}") from None


def _resolve(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist; weights are a .weights.h5, .keras or "
                         f".h5 file or a training run directory. Received: weights={path!r}")
    if not os.path.isdir(path):
        return path
    from keras_effnet.run_dir import RunDir
    final = RunDir(path).final_model_path
    if not final.is_file():
        raise ValueError(f"{path!r} is a directory without {final.name}: not a finished "
                         f"training run. Received: weights={path!r}")
    return str(final)


def _read_h5(f, path: str) -> dict[str, list[WeightEntry]]:
    if "layers" in f:
        return _read_keras3(f["layers"])
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in group.attrs:
        return _read_legacy(group, _legacy_classes(f))
    raise ValueError(f"{path!r} holds no Keras model weights. Received: weights={path!r}")


def _read_keras3(layers) -> dict[str, list[WeightEntry]]:
    numbered: dict[str, list[tuple[int, WeightEntry]]] = {kind: [] for kind in KINDS}
    for name, group in layers.items():
        match = _KERAS3_GROUP.fullmatch(name)
        if match is None or "vars" not in group or not len(group["vars"]):
            continue
        variables = group["vars"]
        arrays = tuple(variables[str(i)][()] for i in range(len(variables)))
        numbered[_KERAS3_KINDS[match[1]]].append((int(match[2] or 0),
                                                  WeightEntry(name, arrays)))
    return {kind: [entry for _, entry in sorted(entries, key=lambda e: e[0])]
            for kind, entries in numbered.items()}


def _legacy_classes(f) -> dict[str, str]:
    # A whole model saved as .h5 says each layer's class; a weights-only file does not.
    config = f.attrs.get("model_config")
    if config is None:
        return {}
    config = json.loads(config.decode() if isinstance(config, bytes) else config)
    return {layer["config"]["name"]: layer["class_name"]
            for layer in config.get("config", {}).get("layers", [])}


def _read_legacy(group, classes: dict[str, str]) -> dict[str, list[WeightEntry]]:
    # Keras 2 (tf_keras) h5: layer_names in model order, each layer's weight_names in layer order.
    result: dict[str, list[WeightEntry]] = {kind: [] for kind in KINDS}
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else name
        layer = group[name]
        names = [n.decode() if isinstance(n, bytes) else n for n in layer.attrs["weight_names"]]
        arrays = tuple(layer[n][()] for n in names)
        kind = (_LAYER_KINDS.get(classes[name]) if name in classes
                else _legacy_kind(names, arrays))
        if kind is not None:
            result[kind].append(WeightEntry(name, arrays))
    return result


def _legacy_kind(names: list[str], arrays: tuple) -> str | None:
    # Keras 2 (tf_keras) weight names: depthwise_kernel, gamma / beta / moving_mean, kernel.
    leaves = {n.rsplit("/", 1)[-1].split(":")[0] for n in names}
    if "depthwise_kernel" in leaves:
        return "depthwise"
    if "moving_mean" in leaves:
        return "bn"
    if "kernel" in leaves:
        return "dense" if arrays[0].ndim == 2 else "conv"
    return None


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
            layer.trainable = _LAYER_KINDS.get(type(layer).__name__) != "bn"
        else:
            layer.trainable = True
    return model


def _all_layers(model: Any):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        else:
            yield layer

