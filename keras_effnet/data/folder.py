"""Image folders: ``data_dir/<class_name>/<image files>``, one sub-folder per class.

Layouts:

* ``data_dir/<class>/...``: split into train / validation here, stratified, 20 % of each
  class to validation, by a seeded hash of each file's path relative to ``data_dir`` (so
  the split does not depend on listing order or machine).
* ``data_dir/train/<class>/...`` with ``data_dir/validation/<class>/...`` (or ``val/``):
  the given split is used as is. Class names come from ``train/``.

Class names are the sorted sub-folder names; a name holding a line break is refused
(labels are written one per line). Files are found recursively inside each class folder.
JPEG, PNG, BMP, GIF (first frame) and still WebP are read by extension (``.jpg .jpeg
.png .bmp .gif .webp``, any case); grayscale, palette and RGBA images become RGB (alpha
is dropped), and JPEGs are turned upright by their EXIF orientation.

Symbolic links are followed, each real file and folder once: a link to a folder already
scanned (``loop -> .``, or a second link to one folder) is skipped, and a file reached
twice counts once (the first path, in sorted order), so no image is in both the training
and the validation split. A class folder that is a link to ``data_dir`` or to another
class folder is not a class.

Every candidate file is decoded once at load time (``tf.io.decode_image``, the decoder the
pipeline uses, on a thread pool). Files that are empty, unreadable, truncated, not images,
in an unsupported format or outside a class folder are left out and listed in
``source.skipped`` as ``(path, reason)``, and a warning gives the counts. Hidden files
(names starting with ".") are ignored. The scan costs one full decode per image: seconds
for thousands of images, much longer for ImageNet-sized folders (prefer TFRecords there).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re

import numpy as np
import tensorflow as tf

from keras_effnet.data import transforms
from keras_effnet.data.base import IndexedSource, logger
from keras_effnet.data.seeding import string_key, stratified_split

__all__ = ["FolderSource", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
VAL_FRACTION = 0.2
_SPLIT_DIRS = ("validation", "val")
_MAX_LISTED = 10


def _clean_error(error: Exception) -> str:
    """The human part of a TF op error ("{{function_node ...}} msg [Op:X]" -> "msg")."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:\w+\]", "", message)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def check_image_file(path: str) -> str | None:
    """Why ``path`` cannot be trained on, or None when it decodes as an RGB image."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except (OSError, tf.errors.OpError) as error:
        return f"unreadable: {_clean_error(error)}"
    if not data:
        return "empty file (0 bytes)"
    try:
        image = _decode(tf.constant(data))
    except tf.errors.OpError as error:
        return f"cannot decode: {_clean_error(error)}"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f"image has no pixels (shape {tuple(image.shape)})"
    return None


# The decode training uses (first GIF frame, EXIF orientation), traced once.
_decode = tf.function(transforms.decode_rgb, input_signature=[tf.TensorSpec([], tf.string)],
                      autograph=False)


def _list_dir(path: str) -> tuple[list[str], list[str]]:
    """(sorted sub-folder names, sorted file names), hidden entries left out."""
    dirs, files = [], []
    for name in sorted(tf.io.gfile.listdir(path)):
        name = name.rstrip("/")
        if name.startswith("."):
            continue
        (dirs if tf.io.gfile.isdir(os.path.join(path, name)) else files).append(name)
    return dirs, files


def _real(path: str) -> str:
    """The path with every symlink resolved (remote paths have none)."""
    return path if "://" in path else os.path.realpath(path)


class _Seen:
    """Real paths of the folders and files one scan has visited, each used once, and of
    the folders that are not scanned through a link (the data folder, its split folders
    and every class folder)."""

    def __init__(self, roots: list[str]) -> None:
        self.dirs: dict[str, str] = {}
        self.files: dict[str, str] = {}
        self.roots = {_real(r) for r in roots}


def _class_files(class_dir: str, seen: _Seen, skipped: list) -> list[str]:
    """Files under ``class_dir`` in sorted depth-first order, each real folder and file
    once (repeats, loops included, are listed in ``skipped``)."""
    found, stack = [], [class_dir]
    while stack:
        folder = stack.pop()
        real = _real(folder)
        if folder != class_dir and real in seen.roots:
            skipped.append((folder, "a symbolic link to the data folder or a class "
                                    "folder; not scanned"))
            continue
        if real in seen.dirs:
            skipped.append((folder, f"folder already scanned as {seen.dirs[real]} (a "
                                    "symbolic link to it); not scanned again"))
            continue
        seen.dirs[real] = folder
        dirs, files = _list_dir(folder)
        for name in files:
            path = os.path.join(folder, name)
            real_file = _real(path)
            if real_file in seen.files:
                skipped.append((path, f"same file as {seen.files[real_file]} (a symbolic "
                                      "link); counted once"))
                continue
            seen.files[real_file] = path
            found.append(path)
        stack.extend(os.path.join(folder, d) for d in reversed(dirs))
    return found


def _class_names(root: str, skipped: list) -> list[str]:
    """The class folders of ``root``: sorted sub-folders, less those that are links to
    ``root`` itself or to an earlier class folder. Line breaks in a name are refused."""
    names, reals = [], {_real(root)}
    for name in _list_dir(root)[0]:
        real = _real(os.path.join(root, name))
        if real in reals:
            skipped.append((os.path.join(root, name), "a symbolic link to the data folder "
                                                      "or to another class folder; not a class"))
            continue
        if name.splitlines() != [name]:
            raise ValueError(f"Class folder {os.path.join(root, name)!r} has a line break "
                             "in its name; rename it (class names are written one per line "
                             "in labels.txt and read so by TF-Serving).")
        reals.add(real)
        names.append(name)
    return names


class FolderSource(IndexedSource):
    """A class-per-folder image directory (see the module docstring for layouts)."""

    name = "folder"

    def __init__(self, data_dir: str, seed: int = 0, num_workers: int | None = None):
        super().__init__()
        self.data_dir = str(data_dir)
        if not tf.io.gfile.isdir(self.data_dir):
            raise FileNotFoundError(
                f"Image folder {self.data_dir!r} does not exist or is not a directory. "
                "Pass data_dir=<folder> with one sub-folder of images per class, e.g. "
                "<folder>/cat/1.jpg, <folder>/dog/2.png.")
        subdirs, loose = _list_dir(self.data_dir)
        skipped = [(os.path.join(self.data_dir, f), "not inside a class sub-folder")
                   for f in loose]
        split_dir = next((d for d in _SPLIT_DIRS if d in subdirs), None)
        split_layout = bool("train" in subdirs and split_dir is not None and
                            _list_dir(os.path.join(self.data_dir, "train"))[0])
        if split_layout:
            train_root = os.path.join(self.data_dir, "train")
            val_root = os.path.join(self.data_dir, split_dir)
            self.class_names = _class_names(train_root, skipped)
            val_classes, val_loose = _list_dir(val_root)
            seen = _Seen([self.data_dir, train_root, val_root]
                         + [os.path.join(r, c) for r, names in ((train_root, self.class_names),
                                                                (val_root, val_classes))
                            for c in names])
            candidates = self._candidates(train_root, skipped, "train", seen)
            skipped += [(os.path.join(val_root, f), "not inside a class sub-folder")
                        for f in val_loose]
            for name in val_classes:
                if name not in self.class_names:
                    skipped += [(p, f"class folder {name!r} is not in train/")
                                for p in _class_files(os.path.join(val_root, name), seen,
                                                      skipped)]
            candidates += self._candidates(val_root, skipped, "val", seen)
        else:
            self.class_names = _class_names(self.data_dir, skipped)
            seen = _Seen([self.data_dir] + [os.path.join(self.data_dir, c)
                                            for c in self.class_names])
            candidates = self._candidates(self.data_dir, skipped, None, seen)
        if not self.class_names:
            raise ValueError(
                f"No class sub-folders in {self.data_dir!r}. Expected one folder of images "
                f"per class: {self.data_dir}/<class_name>/<image>.jpg (or "
                f"{', '.join(IMAGE_EXTENSIONS)}).")

        good = self._validate(candidates, skipped, num_workers)
        self.skipped = skipped
        if not good:
            raise ValueError(
                f"No readable images in {self.data_dir!r} ({len(skipped)} files skipped; "
                f"first: {skipped[:3]}). Put JPEG/PNG/BMP/GIF/WebP images in "
                f"{self.data_dir}/<class_name>/.")
        paths = [p for p, _, _ in good]
        # UTF-8 bytes, not numpy's ASCII str->bytes cast: paths may be non-ASCII.
        self._items = np.array([p.encode("utf-8") for p in paths], dtype=object)
        self._labels = np.array([label for _, label, _ in good], dtype=np.int32)
        if split_layout:
            is_val = np.array([split == "val" for _, _, split in good])
            self._train_idx = np.flatnonzero(~is_val).astype(np.int64)
            self._val_idx = np.flatnonzero(is_val).astype(np.int64)
        else:
            rel = [os.path.relpath(p, self.data_dir) for p in paths]
            self._train_idx, self._val_idx = stratified_split(
                self._labels, VAL_FRACTION, seed, [string_key(r) for r in rel])
        self._finish_split()
        self._report()

    def _candidates(self, root: str, skipped: list, split: str | None, seen: _Seen
                    ) -> list[tuple[str, int, str | None]]:
        out = []
        for label, name in enumerate(self.class_names):
            class_dir = os.path.join(root, name)
            if not tf.io.gfile.isdir(class_dir):
                continue
            for path in _class_files(class_dir, seen, skipped):
                ext = os.path.splitext(path)[1].lower()
                if ext in IMAGE_EXTENSIONS:
                    out.append((path, label, split))
                else:
                    skipped.append((path, f"unsupported file extension {ext or '(none)'!r} "
                                          f"(expected one of {', '.join(IMAGE_EXTENSIONS)})"))
        return out

    @staticmethod
    def _validate(candidates, skipped, num_workers):
        workers = num_workers or min(32, 2 * (os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(lambda c: check_image_file(c[0]), candidates))
        good = []
        for candidate, reason in zip(candidates, reasons):
            if reason is None:
                good.append(candidate)
            else:
                skipped.append((candidate[0], reason))
        return good

    def _report(self) -> None:
        counts = np.bincount(self._labels, minlength=self.num_classes)
        empty = [self.class_names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            logger.warning("%s: class folder(s) %s have no readable images; the classes are "
                           "kept (the model still has an output for them).",
                           self.data_dir, empty)
        if self.num_val == 0:
            logger.warning("%s: no validation images (classes need >= 2 images to give one "
                           "to validation).", self.data_dir)
        if self.skipped:
            by_reason = collections.Counter(reason.split(":")[0].split(" (")[0]
                                            for _, reason in self.skipped)
            listed = "\n".join(f"  {p}: {r}" for p, r in self.skipped[:_MAX_LISTED])
            more = len(self.skipped) - _MAX_LISTED
            logger.warning(
                "%s: skipped %d file(s), using %d images (%d train, %d validation). "
                "By reason: %s.\n%s%s\n(all in source.skipped)",
                self.data_dir, len(self.skipped), self.num_train + self.num_val,
                self.num_train, self.num_val, dict(by_reason), listed,
                f"\n  ... and {more} more" if more > 0 else "")

    def _load(self, item: tf.Tensor) -> tf.Tensor:
        return tf.io.read_file(item)
