"""Shared pieces for the hostile-input tests (issue 16): a deadline that turns a hang
into a failure, and small image files built byte by byte or with Pillow."""

from __future__ import annotations

import contextlib
import io
import signal
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fails the test (TimeoutError) if the block runs longer than ``seconds``: code
    that used to hang on a hostile input fails instead of stalling the suite."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    """``array`` (uint8 HxWx3) as a ``fmt`` file, through Pillow."""
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **kwargs)
    return out.getvalue()


def jpeg_with_orientation(array: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose EXIF orientation tag says how to turn the stored pixels (6: a phone
    held upright, stored sideways)."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(array, "JPEG", quality=95, exif=exif)


def landmark_image(height: int = 40, width: int = 64) -> np.ndarray:
    """An asymmetric picture (a white left band, a green top band): any turn or flip of
    it is a different array."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 3] = 255
    image[: height // 4, :, 1] = 200
    return image
