"""``get_source``: a dataset by name."""

from __future__ import annotations

from keras_effnet.data.base import Source
from keras_effnet.data.digits import DigitsSource
from keras_effnet.data.folder import FolderSource
from keras_effnet.data.mnist import Mnist5kSource
from keras_effnet.data.tfds import TFDSSource  # imports tensorflow_datasets only when used
from keras_effnet.data.tfrecord import TFRecordSource

__all__ = ["SOURCE_NAMES", "EMBEDDED", "get_source"]

SOURCE_NAMES = ("mnist5k", "digits", "folder", "tfrecord", "tfds:<name>")
EMBEDDED = {"mnist5k": Mnist5kSource, "digits": DigitsSource}  # shipped in a wheel: no data_dir


def get_source(name: str = "mnist5k", data_dir: str | None = None, label_offset: int = 0,
               seed: int = 0) -> Source:
    """A labelled image dataset with a fixed train / validation split.

    Args:
        name: "mnist5k" (5,000 MNIST scans) or "digits" (scikit-learn's 8x8 digits),
            both embedded (no download), "folder" (``data_dir/<class>/<images>``),
            "tfrecord" (ImageNet-layout shards in ``data_dir``) or "tfds:<name>"
            (TensorFlow Datasets, optional package; ``data_dir`` is TFDS' data dir).
        data_dir: required by "folder" and "tfrecord".
        label_offset: subtracted from stored labels ("tfrecord", "tfds:"): 1 for the
            1-based ImageNet TFRecords, 0 otherwise. Must be 0 for the embedded sets and "folder".
        seed: seed of the train / validation split where this package makes one
            (the embedded sets, "folder" without train/ and validation/ sub-folders).
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, one of {SOURCE_NAMES}. Received: {name!r}")
    if (name in EMBEDDED or name == "folder") and label_offset:
        raise ValueError(f"label_offset applies to 'tfrecord' and 'tfds:' sources only; "
                         f"{name!r} assigns labels 0..C-1 itself. "
                         f"Received: label_offset={label_offset}")
    if name in ("folder", "tfrecord") and not data_dir:
        raise ValueError(f"get_source(name={name!r}) needs data_dir=<path to the "
                         f"{'image folder' if name == 'folder' else 'TFRecord shards'}>.")
    if name in EMBEDDED:
        return EMBEDDED[name](seed=seed)
    if name == "folder":
        return FolderSource(data_dir, seed=seed)
    if name == "tfrecord":
        return TFRecordSource(data_dir, label_offset=label_offset)
    if name.startswith("tfds:") and len(name) > len("tfds:"):
        return TFDSSource(name[len("tfds:"):], data_dir=data_dir, label_offset=label_offset)
    raise ValueError(f"Unknown data source {name!r}. Expected one of {SOURCE_NAMES}.")
