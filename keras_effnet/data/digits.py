"""The embedded default dataset: scikit-learn's handwritten digits (no download).

1797 real 8x8 grayscale scans (values 0..16) of the digits 0-9, shipped inside
scikit-learn. We scale them to [0, 255] (x 255/16, exactly, kept as float32), repeat the
channel to RGB and add a 2-pixel background margin (12x12): the glyphs touch the 8x8
border, and the margin keeps the whole glyph inside the eval centre crop (which keeps
``size / (size + 32)`` of the side: 8 of 12 pixels at 64 px). The pipeline upscales to the
requested ``image_size``.

Two deliberate departures from the ImageNet recipe, for digits only:

* ``default_flip = False``: a mirrored 2, 3, 5, 7 or 9 is not that digit any more
  (``train_dataset(flip=True)`` still flips).
* ``crop_area_range = (0.25, 1.0)`` instead of (0.05, 1.0): a 5 % crop of an 8x8 glyph is
  two or three pixels, with no digit left in it.

The split is fixed: stratified, 20 % of each class to validation, chosen by a seeded hash
of the sample index (``get_source(seed=...)``; 0 by default), identical on every machine.
``DigitsSource(classes=..., train_per_class=...)`` makes a transfer-learning task of it:
some of the digits only (relabelled 0..k-1 in the given order, named by their digit), and
few labels: that many training images per class, every other image of those classes
held out.

:func:`digits_arrays` is the same data as NumPy arrays for ``keras.Model.fit`` (no margin,
its own fixed 1400 / 397 split): what the pruning studies and the TFLite benchmark use.
"""

from __future__ import annotations

import numpy as np

from typing import Sequence

from keras_effnet.data.seeding import permutation, stratified_split
from keras_effnet.data.base import IndexedSource

__all__ = ["DigitsSource", "digits_pixels", "digits_arrays"]

_MARGIN = 2
VAL_FRACTION = 0.2
ARRAYS_NUM_TRAIN = 1400


def digits_pixels() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images, labels, class names)``: the 1797 scans as float32 ``[N, 8, 8]`` pixels
    in [0, 255] (x 255/16, exactly), int32 labels, and "0".."9"."""
    from sklearn.datasets import load_digits  # the train extra; imported when used

    digits = load_digits()
    images = digits.images.astype(np.float32) * np.float32(255.0 / 16.0)
    return (images, digits.target.astype(np.int32),
            [str(int(c)) for c in digits.target_names])


def digits_arrays(image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train images, train labels, held-out images, held-out labels)``: RGB float32
    pixels in [0, 255], the whole 8x8 scan resized (bilinear) to ``image_size``, and a
    fixed 1400 / 397 split (a permutation seeded 0)."""
    import tensorflow as tf

    pixels, labels, _ = digits_pixels()
    images = tf.image.resize(pixels[..., None], [image_size, image_size],
                             method="bilinear").numpy()
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(images))
    train, held_out = order[:ARRAYS_NUM_TRAIN], order[ARRAYS_NUM_TRAIN:]
    return images[train], labels[train], images[held_out], labels[held_out]


class DigitsSource(IndexedSource):
    """scikit-learn's ``load_digits`` as an in-memory source (10 classes, "0".."9").

    A subclass with another ``load_pixels`` (``[N, H, W]`` float32 in [0, 255], labels,
    class names) is another embedded grayscale set with the same margin, split and
    augmentation rules (:class:`~keras_effnet.data.mnist.Mnist5kSource`)."""

    name = "digits"
    load_pixels = staticmethod(digits_pixels)
    default_flip = False
    crop_area_range = (0.25, 1.0)
    tolerate_decode_errors = False  # pixels in memory: nothing can fail to decode

    def __init__(self, seed: int = 0, classes: Sequence[int] | None = None,
                 train_per_class: int | None = None):
        """
        Args:
            seed: seed of the split (and of the few-label choice).
            classes: the digits to keep (e.g. ``(5, 6, 7, 8, 9)``), relabelled ``0..k-1``
                in this order; None keeps all ten.
            train_per_class: keep this many training images per class (chosen by
                ``seed``) and hold out every other image of the kept classes; None
                keeps the stratified 80 / 20 split.
        """
        super().__init__()
        images, labels, names = self.load_pixels()
        if classes is not None:
            classes = _check_classes(classes, len(names))
            keep = np.isin(labels, classes)
            images, labels = images[keep], labels[keep]
            relabel = np.zeros(len(names), np.int32)
            relabel[classes] = np.arange(len(classes))
            labels = relabel[labels]
            names = [names[c] for c in classes]
        self._labels, self.class_names = labels, names
        images = np.pad(images, ((0, 0), (_MARGIN, _MARGIN), (_MARGIN, _MARGIN)))
        self._items = np.repeat(images[..., None], 3, axis=-1)
        self._train_idx, self._val_idx = stratified_split(self._labels, VAL_FRACTION, seed)
        if train_per_class is not None:
            self._train_idx, self._val_idx = _few_labels(self._labels, self._train_idx,
                                                         train_per_class, seed)
        self._finish_split()

    def split_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(train pixels, train labels, held-out pixels, held-out labels)``: this
        source's split of the scans (float32 in [0, 255], no margin), for baselines
        that must see the same images (scikit-learn, ``keras.Model.fit``)."""
        pixels = self._items[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN, 0]
        return (pixels[self._train_idx], self._labels[self._train_idx],
                pixels[self._val_idx], self._labels[self._val_idx])


def _check_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    classes = [int(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes) or \
            not all(0 <= c < num_classes for c in classes):
        raise ValueError(f"classes must be at least 2 distinct digits in 0..{num_classes - 1}."
                         f" Received: classes={classes!r}")
    return classes


def _few_labels(labels: np.ndarray, train_idx: np.ndarray, per_class: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(``per_class`` training indices of each class, every other index), both sorted."""
    counts = np.bincount(labels[train_idx])
    if isinstance(per_class, bool) or not isinstance(per_class, int) or \
            not 1 <= per_class <= counts.min():
        raise ValueError(f"train_per_class must be an integer in [1, {counts.min()}] (the "
                         f"smallest class's training images). "
                         f"Received: train_per_class={per_class!r}")
    order = train_idx[permutation(len(train_idx), seed, 0xFE11)]
    rank = np.zeros(len(order), np.int64)
    seen: dict[int, int] = {}
    for i, label in enumerate(labels[order]):
        rank[i] = seen.get(int(label), 0)
        seen[int(label)] = rank[i] + 1
    train = np.sort(order[rank < per_class])
    return train, np.setdiff1d(np.arange(len(labels)), train)
