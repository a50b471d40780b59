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
"""

from __future__ import annotations

import numpy as np

from keras_effnet.data._seeding import stratified_split
from keras_effnet.data.base import IndexedSource

__all__ = ["DigitsSource"]

_MARGIN = 2
VAL_FRACTION = 0.2


class DigitsSource(IndexedSource):
    """scikit-learn's ``load_digits`` as an in-memory source (10 classes, "0".."9")."""

    name = "digits"
    default_flip = False
    crop_area_range = (0.25, 1.0)
    tolerate_decode_errors = False  # pixels in memory: nothing can fail to decode

    def __init__(self, seed: int = 0):
        super().__init__()
        from sklearn.datasets import load_digits  # core dependency; imported when used

        digits = load_digits()
        images = digits.images.astype(np.float32) * np.float32(255.0 / 16.0)
        images = np.pad(images, ((0, 0), (_MARGIN, _MARGIN), (_MARGIN, _MARGIN)))
        self._items = np.repeat(images[..., None], 3, axis=-1)
        self._labels = digits.target.astype(np.int32)
        self.class_names = [str(int(c)) for c in digits.target_names]
        self._train_idx, self._val_idx = stratified_split(self._labels, VAL_FRACTION, seed)
        self._finish_split()
