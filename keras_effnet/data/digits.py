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

:func:`digits_arrays` is the same data as NumPy arrays for ``keras.Model.fit`` (no margin,
its own fixed 1400 / 397 split): what the pruning studies and the TFLite benchmark use.
"""

from __future__ import annotations

import numpy as np

from keras_effnet.data.seeding import stratified_split
from keras_effnet.data.base import IndexedSource

__all__ = ["DigitsSource", "digits_pixels", "digits_arrays"]

_MARGIN = 2
VAL_FRACTION = 0.2
ARRAYS_NUM_TRAIN = 1400


def digits_pixels() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images, labels, class names)``: the 1797 scans as float32 ``[N, 8, 8]`` pixels
    in [0, 255] (x 255/16, exactly), int32 labels, and "0".."9"."""
    from sklearn.datasets import load_digits  # core dependency; imported when used

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

    def __init__(self, seed: int = 0):
        super().__init__()
        images, self._labels, self.class_names = self.load_pixels()
        images = np.pad(images, ((0, 0), (_MARGIN, _MARGIN), (_MARGIN, _MARGIN)))
        self._items = np.repeat(images[..., None], 3, axis=-1)
        self._train_idx, self._val_idx = stratified_split(self._labels, VAL_FRACTION, seed)
        self._finish_split()

    def split_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(train pixels, train labels, held-out pixels, held-out labels)``: this
        source's split of the scans (float32 in [0, 255], no margin), for baselines
        that must see the same images (scikit-learn, ``keras.Model.fit``)."""
        pixels = self._items[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN, 0]
        return (pixels[self._train_idx], self._labels[self._train_idx],
                pixels[self._val_idx], self._labels[self._val_idx])
