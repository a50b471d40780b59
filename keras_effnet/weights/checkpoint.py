"""Google's official EfficientNet checkpoints (tensorflow/tpu V1 and lite, google/automl
V2), read by variable name.

A checkpoint is a TF1 name-based bundle (``model.ckpt.index`` + ``.data-*``), shipped as
a tarball whose top directory holds it. Its variables are the official code's
(``efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel``; the names are derived in
:mod:`keras_effnet.weights.mapping`), next to each an ``/ExponentialMovingAverage``
shadow that the official evaluation restores, and optimizer slots (``.../RMSProp``) and
``global_step``, which are no model's. The shadows are preferred where present.

Every model variable of the checkpoint must be used once and every layer of ours filled
with the same shape (:func:`keras_effnet.weights.assign` checks the second), so a
checkpoint of another variant is refused, never half-loaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from keras_effnet.weights.mapping import LayerRef, official_variables

__all__ = ["is_checkpoint", "is_tarball", "open_checkpoint", "read_checkpoint",
           "EMA_SUFFIX"]

EMA_SUFFIX = "/ExponentialMovingAverage"
_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_STEM = "/stem/conv2d/kernel"
# Variables of training, not of the model.
_NOT_MODEL = ("global_step",)
_SLOT_WORDS = ("RMSProp", "/RMS", "Momentum", "/Adam", "ExponentialMovingAverage")


def is_tarball(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(_TARBALL_SUFFIXES)


def _prefixes(directory: Path) -> list[str]:
    return sorted(str(p)[:-len(".index")] for p in directory.rglob("*.index"))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A tarball, a directory holding a checkpoint, or a checkpoint prefix."""
    path = os.fspath(path)
    if is_tarball(path):
        return True
    if os.path.isdir(path):
        # A training run directory holds checkpoints too: it is read as a run.
        from keras_effnet.run_dir import CONFIG_FILE, RunDir
        run = RunDir(path)
        if run.final_model_path.exists() or (Path(path) / CONFIG_FILE).exists():
            return False
        return bool(_prefixes(Path(path)))
    return os.path.isfile(path + ".index")


@contextlib.contextmanager
def open_checkpoint(path: str | os.PathLike, scratch: str | os.PathLike | None = None
                    ) -> Iterator[str]:
    """The checkpoint prefix inside ``path`` (a tarball, extracted into a temporary
    directory under ``scratch`` that is removed afterwards; a directory; a prefix)."""
    path = os.fspath(path)
    if not is_tarball(path):
        yield _single_prefix(path)
        return
    temp = tempfile.mkdtemp(prefix=".extract-", dir=scratch or os.path.dirname(path) or ".")
    try:
        try:
            with tarfile.open(path) as archive:
                # The "data" filter refuses absolute paths, links out and device files.
                archive.extractall(temp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{path!r} is not a readable checkpoint tarball ({type(e).__name__}"
                             f": {e}). Delete it to download it again. "
                             f"Received: weights={path!r}") from None
        yield _single_prefix(temp, shown=path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _single_prefix(path: str, shown: str | None = None) -> str:
    shown = shown or path
    if os.path.isfile(path + ".index"):
        return path
    prefixes = _prefixes(Path(path)) if os.path.isdir(path) else []
    if len(prefixes) != 1:
        found = "no checkpoint" if not prefixes else f"{len(prefixes)} checkpoints"
        raise ValueError(f"{shown!r} holds {found} (a TensorFlow checkpoint is a "
                         "<prefix>.index file with its .data-* shards); pass one checkpoint "
                         f"prefix. Received: weights={shown!r}")
    return prefixes[0]


def read_checkpoint(prefix: str, layers: Sequence[LayerRef], shown: str
                    ) -> tuple[dict[str, tuple[str, tuple]], list[str]]:
    """``({our layer: (official scope, arrays)}, scopes of unused model variables)`` of the
    checkpoint at ``prefix``, for our weighted ``layers``. Layers whose variables the
    checkpoint lacks are left out (the caller decides whether that is an error)."""
    import tensorflow as tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"Cannot read the checkpoint {shown!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0]}). Received: weights={shown!r}") from None
    scope = _scope(shapes, shown)
    wanted = official_variables(layers, scope)
    mapped, used = {}, set()
    for name, variables in wanted.items():
        if not all(v in shapes for v in variables):
            continue
        arrays = []
        for v in variables:
            shadow = v + EMA_SUFFIX
            arrays.append(reader.get_tensor(shadow if shadow in shapes else v))
            used.add(v)
        mapped[name] = (variables[0].rsplit("/", 1)[0], tuple(arrays))
    # Reported per layer scope (``.../head/dense``), as the other sources report layers.
    unused = sorted({v.rsplit("/", 1)[0] for v in shapes
                     if v not in used and _is_model_variable(v)})
    return mapped, unused


def _scope(shapes: dict, shown: str) -> str:
    scopes = sorted({v[:-len(_STEM)] for v in shapes if v.endswith(_STEM)})
    if len(scopes) != 1:
        raise ValueError(
            f"{shown!r} is not an official EfficientNet checkpoint: it has "
            f"{'no' if not scopes else len(scopes)} '<model>{_STEM}' variable"
            f"{'s' if len(scopes) > 1 else ''} ({', '.join(scopes[:3])}). "
            f"Received: weights={shown!r}")
    return scopes[0]


def _is_model_variable(name: str) -> bool:
    return name not in _NOT_MODEL and not any(word in name for word in _SLOT_WORDS)
