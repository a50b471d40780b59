"""In-graph image decoding for serving: bytes -> size check -> RGB -> centre crop.

Everything here is TensorFlow ops only (no autograph, no Python control flow on
tensors), so it traces into a SavedModel signature that TF-Serving runs as is.

The pixel budget is checked from the file header *before* the full decode, so a
decompression bomb (a few kB of PNG that inflates to gigapixels) is refused without
allocating its pixels. Anything malformed surfaces as ``InvalidArgumentError``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["DEFAULT_MAX_PIXELS", "image_format", "header_shape", "decode_image",
           "decode_and_center_crop"]

# 50 megapixels: every phone camera's full-resolution output fits (8192 x 6144).
DEFAULT_MAX_PIXELS = 50_000_000

_UNKNOWN, _JPEG, _PNG, _GIF, _BMP = 0, 1, 2, 3, 4
_HEADER_BYTES = 32


def _header(image_bytes: tf.Tensor) -> tf.Tensor:
    """The first 32 bytes as int64, zero-padded when the file is shorter."""
    head = tf.io.decode_raw(tf.strings.substr(image_bytes, 0, _HEADER_BYTES), tf.uint8)
    head = tf.pad(head, [[0, _HEADER_BYTES - tf.shape(head)[0]]])
    return tf.cast(head, tf.int64)


def _matches(head: tf.Tensor, magic: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(head[:len(magic)], tf.constant(list(magic), tf.int64)))


def image_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """0 unknown, 1 JPEG, 2 PNG, 3 GIF, 4 BMP, from the magic bytes (int32 scalar)."""
    head = _header(image_bytes)
    return tf.cast(
        tf.where(_matches(head, b"\xff\xd8\xff"), _JPEG,
                 tf.where(_matches(head, b"\x89PNG\r\n\x1a\n"), _PNG,
                          tf.where(_matches(head, b"GIF8"), _GIF,
                                   tf.where(_matches(head, b"BM"), _BMP, _UNKNOWN)))),
        tf.int32)


def _be(head: tf.Tensor, start: int, size: int) -> tf.Tensor:
    value = tf.constant(0, tf.int64)
    for i in range(size):
        value = value * 256 + head[start + i]
    return value


def _le(head: tf.Tensor, start: int, size: int) -> tf.Tensor:
    value = tf.constant(0, tf.int64)
    for i in reversed(range(size)):
        value = value * 256 + head[start + i]
    return value


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def header_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) read from the header alone, without decoding pixels.

    JPEG: ``tf.image.extract_jpeg_shape`` (parses markers up to SOF). PNG: the IHDR
    chunk. GIF: the logical screen descriptor. BMP: the DIB header (height may be
    negative for top-down bitmaps). Unknown formats raise ``InvalidArgumentError``.
    """
    fmt = image_format(image_bytes)
    head = _header(image_bytes)
    known = tf.debugging.Assert(
        fmt > _UNKNOWN,
        # The first bytes as numbers: raw bytes in an error message need not be UTF-8,
        # and TensorFlow's Python layer then fails to decode the message itself.
        ["image_bytes is not a JPEG, PNG, GIF or BMP file (first bytes:", head[:8], ")"])
    with tf.control_dependencies([known]):
        fmt = tf.identity(fmt)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def png():
        return tf.stack([_be(head, 20, 4), _be(head, 16, 4)])

    def gif():
        return tf.stack([_le(head, 8, 2), _le(head, 6, 2)])

    def bmp():
        return tf.stack([tf.abs(_signed32(_le(head, 22, 4))), _signed32(_le(head, 18, 4))])

    # tf.switch_case only runs the chosen branch: extract_jpeg_shape never sees a PNG.
    return tf.switch_case(fmt - 1, [jpeg, png, gif, bmp])


def _checked(image_bytes: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """``image_bytes``, once its header says it is a known format within the pixel budget."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    shape = header_shape(image_bytes)
    checks = [
        tf.debugging.assert_positive(shape, message="image has an empty dimension"),
        tf.debugging.Assert(
            shape[0] * shape[1] <= max_pixels,
            [f"image has more pixels than the limit of {max_pixels}; downscale it before "
             "sending. [height, width] from its header:", shape]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(image_bytes)


def decode_image(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """One encoded JPEG / PNG / GIF (first frame) / BMP -> uint8 RGB ``[H, W, 3]``.

    Raises ``InvalidArgumentError`` (at run time) for unknown formats, corrupt or
    truncated data, and images of more than ``max_pixels`` pixels; the size check
    runs on the header, before any pixel is decoded.
    """
    image = tf.io.decode_image(_checked(image_bytes, max_pixels), channels=3, dtype=tf.uint8,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int,
                           max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """Encoded bytes -> float32 ``[image_size, image_size, 3]`` pixels in [0, 255].

    The size check of :func:`decode_image`, then exactly the evaluation preprocessing
    of the training pipeline (``keras_effnet.data.decode_and_center_crop``: centre crop
    of ``size / (size + 32)`` of the shorter side, JPEGs decoded inside the crop window
    only, antialiased bilinear resize), so served predictions match the measured
    held-out accuracy.
    """
    from keras_effnet.data import decode_and_center_crop as eval_preprocess
    return eval_preprocess(_checked(image_bytes, max_pixels), image_size)
