"""Which source a data directory holds, read from its contents without TensorFlow.

``scripts/train.py --data_dir=photos`` (no ``--dataset``) trains on what ``photos`` holds:

* ``*.tfrecord*`` files (directly inside) -> ``"tfrecord"``;
* sub-folders holding image files (``<class>/...``, or ``train/<class>/...``) ->
  ``"folder"``;
* anything else is refused, saying what was found and what to pass.

A directory on a remote file system (``gs://...``) cannot be listed without TensorFlow:
name its source with ``dataset=``.
"""

from __future__ import annotations

import os

from keras_effnet.errors import ConfigError

__all__ = ["IMAGE_EXTENSIONS", "detect_source", "check_data_dir"]

# The extensions the folder source reads (any case).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


def check_data_dir(data_dir: str) -> None:
    """ConfigError (field ``data_dir``) unless ``data_dir`` is an existing local directory
    (remote ``scheme://`` paths are left to the source)."""
    if "://" in data_dir:
        return
    if not os.path.exists(data_dir):
        raise ConfigError(f"data_dir {data_dir} does not exist. Received: "
                          f"data_dir={data_dir!r}", "data_dir")
    if not os.path.isdir(data_dir):
        raise ConfigError(f"data_dir {data_dir} is a file, not a directory: pass the folder "
                          f"that holds the images or TFRecord shards. Received: "
                          f"data_dir={data_dir!r}", "data_dir")


def _has_images(folder: str, limit: int = 10_000) -> bool:
    """Whether ``folder`` holds an image file at any depth (stops after ``limit``
    entries; symbolic links to folders are not followed)."""
    seen = 0
    for _, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                return True
            seen += 1
            if seen >= limit:
                return False
    return False


def detect_source(data_dir: str) -> str:
    """``"folder"`` or ``"tfrecord"``, from what ``data_dir`` holds.

    Raises:
        ConfigError: naming ``data_dir`` when it is missing, not a directory, remote, or
            holds neither layout.
    """
    check_data_dir(data_dir)
    if "://" in data_dir:
        raise ConfigError(f"cannot tell the source of remote data_dir {data_dir} without "
                          "reading it: pass dataset=tfrecord (or folder, tfds:<name>).",
                          "data_dir")
    entries = sorted(e for e in os.listdir(data_dir) if not e.startswith("."))
    if any(".tfrecord" in e and os.path.isfile(os.path.join(data_dir, e)) for e in entries):
        return "tfrecord"
    folders = [e for e in entries if os.path.isdir(os.path.join(data_dir, e))]
    if "train" in folders:
        folders = ["train"]
    if any(_has_images(os.path.join(data_dir, f)) for f in folders):
        return "folder"
    found = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "") or "nothing"
    raise ConfigError(
        f"data_dir {data_dir} holds neither class sub-folders of images "
        f"({', '.join(IMAGE_EXTENSIONS)}) nor *.tfrecord* files (found: {found}); pass "
        f"dataset= to say what it is. Received: data_dir={data_dir!r}", "data_dir")
