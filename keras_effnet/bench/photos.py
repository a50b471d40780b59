"""Stand-in photographs for the benchmark: random crops of scikit-learn's two sample
photos (real image statistics, no download), encoded as files or request bodies."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

__all__ = ["photo_crop", "encode", "write_jpeg_folder", "jpeg_bytes"]

_PHOTOS: list = []


def _photos() -> list:
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images
        _PHOTOS.extend(load_sample_images().images)
    return _PHOTOS


def photo_crop(rng: random.Random, width: int, height: int) -> Any:
    """A random crop of one of scikit-learn's two photographs, resized to
    ``width x height``, as a PIL image."""
    from PIL import Image

    photos = _photos()
    array = photos[rng.randrange(len(photos))]
    h, w = array.shape[:2]
    ch, cw = rng.randint(h // 4, h), rng.randint(w // 4, w)
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    return Image.fromarray(array[top:top + ch, left:left + cw]).resize((width, height))


def encode(image: Any, fmt: str, **kwargs: Any) -> bytes:
    """A PIL image encoded as ``fmt`` ("JPEG", "PNG", "GIF", "BMP")."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write_jpeg_folder(root: Path, n: int, seed: int) -> Path:
    """``n`` JPEG photos (240-400 px a side) in two class folders under ``root``: a
    stand-in for an ImageNet-like folder."""
    rng = random.Random(seed)
    for i in range(n):
        image = photo_crop(rng, rng.randint(240, 400), rng.randint(240, 400))
        path = root / ("a" if i % 2 else "b") / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(image, "JPEG", quality=90))
    return root


def jpeg_bytes(n: int, short_side: int, seed: int) -> list[bytes]:
    """``n`` JPEG request bodies, ``short_side`` px high and up to 1.5 times as wide."""
    rng = random.Random(seed)
    return [encode(photo_crop(rng, int(short_side * rng.uniform(1.0, 1.5)), short_side),
                   "JPEG", quality=90) for _ in range(n)]
