"""Keras weight files: Keras 3 ``.weights.h5`` and ``.keras``, legacy ``.h5``
(keras.applications' files, tf_keras saves), and training run directories.

Read from the file itself, with no model deserialised:

* Keras 3 files pair layers by class and order (its ``.weights.h5`` calls them
  ``conv2d_17``, not by layer name), so the k-th conv of a file is the k-th conv of the
  model; keras_effnet and keras.applications create the same weighted layers in the
  same order.
* Legacy files name each layer: ours (``stage2_block01_expand_conv``) or
  keras.applications' (``block2a_expand_conv``), mapped by
  :func:`keras_effnet.weights.mapping.keras_applications_names`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from typing import Sequence

from keras_effnet.names import CLASSIFIER_LAYER
from keras_effnet.weights.mapping import LayerRef, keras_applications_names

__all__ = ["read_file", "check_readable", "KINDS"]

KINDS = ("conv", "depthwise", "bn", "dense")
LAYER_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise",
               "BatchNormalization": "bn", "Dense": "dense"}
# Keras 3 stores a functional model's layers under layers/<snake_case class>[_<n>].
_KERAS3_GROUP = re.compile(r"(conv2d|depthwise_conv2d|batch_normalization|dense)(?:_(\d+))?")
_KERAS3_KINDS = {"conv2d": "conv", "depthwise_conv2d": "depthwise",
                 "batch_normalization": "bn", "dense": "dense"}
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
# keras.applications V1's Normalization (mean, variance, count): keras_effnet has the
# ImageNet constants instead.
_PREPROCESSING_LAYER = re.compile(r"normalization(_\d+)?")

Mapped = dict  # our layer name -> (the source's label, arrays)


def read_file(path: str | os.PathLike, layers: Sequence[LayerRef]
              ) -> tuple[Mapped, list[str]]:
    """``({our layer: (label, arrays)}, the file's entries no layer takes)`` of a weights
    file or run directory, for our weighted ``layers`` in model order."""
    with _open(path) as (f, resolved):
        if "layers" in f:
            return _keras3(f["layers"], layers)
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in group.attrs:
            return _legacy(group, layers)
    raise ValueError(f"{resolved!r} holds no Keras model weights. Received: weights={resolved!r}")


def check_readable(path: str | os.PathLike) -> None:
    """Raises the ValueError :func:`read_file` would (no such file, not a weights file,
    an unfinished run), reading the file's layout but none of its arrays."""
    with _open(path) as (f, resolved):
        if "layers" not in f and "layer_names" not in (
                f["model_weights"] if "model_weights" in f else f).attrs:
            raise ValueError(f"{resolved!r} holds no Keras model weights. "
                             f"Received: weights={resolved!r}")


def _keras3(group, layers: Sequence[LayerRef]) -> tuple[Mapped, list[str]]:
    numbered: dict[str, list[tuple[int, str, tuple]]] = {kind: [] for kind in KINDS}
    for name, entry in group.items():
        match = _KERAS3_GROUP.fullmatch(name)
        if match is None or "vars" not in entry or not len(entry["vars"]):
            continue
        variables = entry["vars"]
        arrays = tuple(variables[str(i)][()] for i in range(len(variables)))
        numbered[_KERAS3_KINDS[match[1]]].append((int(match[2] or 0), name, arrays))
    queues = {kind: sorted(entries, key=lambda e: e[0]) for kind, entries in numbered.items()}
    mapped: Mapped = {}
    for layer in layers:
        queue = queues.get(LAYER_KINDS.get(layer.kind, ""))
        if queue:
            _, label, arrays = queue.pop(0)
            mapped[layer.name] = (label, arrays)
    unused = [label for queue in queues.values() for _, label, _ in queue]
    return mapped, unused


def _legacy(group, layers: Sequence[LayerRef]) -> tuple[Mapped, list[str]]:
    # Keras 2 (tf_keras) h5: layer_names in model order, each layer's weight_names in order.
    entries: dict[str, tuple] = {}
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else name
        layer = group[name]
        names = [n.decode() if isinstance(n, bytes) else n for n in layer.attrs["weight_names"]]
        if names and not _PREPROCESSING_LAYER.fullmatch(name):
            entries[name] = tuple(layer[n][()] for n in names)
    ours = [layer.name for layer in layers]
    # stem_conv, top_conv, ... are named alike in both; the blocks tell them apart.
    if not any(name in entries for name in ours if name.startswith("stage")):
        # keras.applications' names; V2 calls the depthwise conv dwconv2.
        family = "v2" if any(n.endswith("_dwconv2") for n in entries) else "v1"
        names = keras_applications_names(ours, family)
    else:
        names = {name: name for name in ours}
    mapped: Mapped = {}
    for layer in layers:
        label = names[layer.name]
        if label not in entries and layer.name == CLASSIFIER_LAYER:
            label = _the_dense(entries, set(names.values()))
        if label in entries:
            mapped[layer.name] = (label, entries[label])
    taken = {label for label, _ in mapped.values()}
    return mapped, [name for name in entries if name not in taken]


def _the_dense(entries: dict[str, tuple], known: set[str]) -> str | None:
    # An older file may call the classifier otherwise ("probs"): its one 2-D kernel.
    dense = [n for n, arrays in entries.items()
             if n not in known and len(arrays) == 2 and arrays[0].ndim == 2]
    return dense[0] if len(dense) == 1 else None


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
            raise ValueError("weights must be a .weights.h5, .keras or .h5 file, an "
                             "official checkpoint (.tar.gz, directory or prefix) or a run "
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
        raise ValueError(f"{path!r} does not exist; weights are a tag (keras_effnet."
                         "list_weights()), a .weights.h5, .keras or .h5 file, an official "
                         "checkpoint or a training run directory. Received: "
                         f"weights={path!r}")
    if not os.path.isdir(path):
        return path
    from keras_effnet.run_dir import RunDir
    final = RunDir(path).final_model_path
    if not final.is_file():
        raise ValueError(f"{path!r} is a directory without {final.name}: not a finished "
                         f"training run. Received: weights={path!r}")
    return str(final)

