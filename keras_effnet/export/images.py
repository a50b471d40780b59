"""In-graph decoding for serving: bytes -> checks -> RGB -> centre crop.

Everything here is TensorFlow ops only (no autograph, no Python control flow on
tensors), so it traces into a SavedModel signature that TF-Serving runs as is.

Every image is checked *before* it is decoded, from what the decoder will allocate
(:mod:`keras_effnet.data.headers`: the JPEG frame header, PNG IHDR, BMP DIB header, WebP
frame or canvas, and a GIF's first image descriptor, the only frame decoded), so a
decompression bomb (a few kB that inflate to gigapixels, whatever its outer header
claims) is refused without allocating its pixels. A batch with a bad image fails as a
whole with ``InvalidArgumentError``; when the check finds it, the message names its index
(``image_bytes[3]``) and why. Pixel data that is corrupt past a valid header fails in the
decoder, whose message gives the bad file's size in bytes.
"""

from __future__ import annotations

import tensorflow as tf

from keras_effnet.data import headers

__all__ = ["DEFAULT_MAX_PIXELS", "PARALLEL_DECODES", "image_format", "header_shape", "check",
           "check_batch", "decode_image", "decode_and_center_crop", "decode_batch",
           "check_finite"]

# 50 megapixels: every phone camera's full-resolution output fits (8192 x 6144).
DEFAULT_MAX_PIXELS = 50_000_000
# Images of a batch decoded at once (the decoders are single-threaded).
PARALLEL_DECODES = 16

image_format = headers.image_format
# check() codes beyond headers.inspect()'s.
TOO_LARGE, EMPTY = 10, 11
_FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def check(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS
          ) -> tuple[tf.Tensor, tf.Tensor]:
    """(code, ``[height, width]``): 0 when ``image_bytes`` may be decoded, else why not
    (a :mod:`~keras_effnet.data.headers` status, :data:`TOO_LARGE` or :data:`EMPTY`).
    Never raises and decodes nothing."""
    status, size = headers.inspect(image_bytes)
    return _code(status, size, max_pixels), size


def _code(status: tf.Tensor, size: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """:func:`check`'s code from an :func:`~keras_effnet.data.headers.inspect` status and
    its ``[..., 2]`` size (one image or a batch)."""
    return tf.where(tf.equal(status, headers.OK),
                    tf.where(tf.reduce_any(size <= 0, axis=-1), EMPTY,
                             tf.where(size[..., 0] * size[..., 1] > max_pixels, TOO_LARGE, 0)),
                    status)


def check_batch(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`check` of each of ``[N]`` files: codes ``[N]``, sizes ``[N, 2]``.

    A batch of JPEGs (what serving mostly gets) is inspected in one walk over all their
    headers; a batch with any other format, one file at a time.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)

    def jpegs():
        status, size = headers.inspect_jpegs(image_bytes)
        return _code(status, size, max_pixels), size

    def each():
        return tf.map_fn(lambda b: check(b, max_pixels), image_bytes,
                         fn_output_signature=(tf.int32, tf.int64))

    all_jpeg = tf.reduce_all(tf.equal(image_format(image_bytes), headers.JPEG))
    codes, sizes = tf.cond(all_jpeg, jpegs, each)
    codes.set_shape([None])
    sizes.set_shape([None, 2])
    return codes, sizes


def _reason(what: tf.Tensor, image_bytes: tf.Tensor, code: tf.Tensor, size: tf.Tensor,
            max_pixels: int) -> tf.Tensor:
    """A one-line message: ``what`` (e.g. "image_bytes[3]") and why it is refused."""
    fmt = tf.gather(tf.constant(headers.FORMAT_NAMES), image_format(image_bytes))
    dims = tf.strings.format("{}x{}", (size[1], size[0]))
    head = tf.strings.format("{}", tf.io.decode_raw(
        tf.strings.substr(image_bytes, 0, 8), tf.uint8), summarize=8)
    frame = tf.where(tf.equal(fmt, "GIF"), " (its first frame, the one decoded)", "")
    reasons = tf.stack([
        tf.strings.join([what, " is not a ", _FORMATS, " file (first bytes: ", head, ")"]),
        tf.strings.join([what, " is a malformed or truncated ", fmt, " (its header or "
                         "first frame cannot be read)"]),
        tf.strings.join([what, " is an animated WebP, which is not supported; send a "
                         "still image"]),
        tf.strings.join([what, " is a ", fmt, " of ", dims, " pixels", frame,
                         ", more than max_pixels=", str(max_pixels), "; downscale it "
                         "before sending"]),
        tf.strings.join([what, " has an empty dimension (", dims, " pixels)"])])
    index = tf.constant([-1, 0, 1, 2] + [-1] * 6 + [3, 4])
    return tf.gather(reasons, tf.maximum(tf.gather(index, code), 0))


def header_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) the decoder will allocate, without decoding pixels;
    ``InvalidArgumentError`` for unknown or malformed files."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    status, size = headers.inspect(image_bytes)
    ok = tf.debugging.Assert(tf.equal(status, headers.OK), [_reason(
        tf.constant("image_bytes"), image_bytes, status, size, DEFAULT_MAX_PIXELS)])
    with tf.control_dependencies([ok]):
        return tf.identity(size)


def _checked(image_bytes: tf.Tensor, max_pixels: int, what: str = "image_bytes"
             ) -> tf.Tensor:
    """``image_bytes``, once :func:`check` passes (``InvalidArgumentError`` otherwise)."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    code, size = check(image_bytes, max_pixels)
    ok = tf.debugging.Assert(tf.equal(code, 0), [_reason(
        tf.constant(what), image_bytes, code, size, max_pixels)])
    with tf.control_dependencies([ok]):
        return tf.identity(image_bytes)


def decode_image(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """One encoded JPEG / PNG / GIF (first frame) / BMP / WebP -> uint8 RGB ``[H, W, 3]``
    as displayed (EXIF orientation applied).

    Raises ``InvalidArgumentError`` (at run time) for unknown formats, corrupt or
    truncated data, and images of more than ``max_pixels`` pixels; the size check runs
    before any pixel is decoded.
    """
    from keras_effnet.data.transforms import decode_rgb
    return decode_rgb(_checked(image_bytes, max_pixels))


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int,
                           max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """Encoded bytes -> float32 ``[image_size, image_size, 3]`` pixels in [0, 255].

    The checks of :func:`decode_image`, then exactly the evaluation preprocessing of the
    training pipeline (``keras_effnet.data.decode_and_center_crop``: centre crop of
    ``size / (size + 32)`` of the shorter side, JPEGs decoded inside the crop window
    only, antialiased bilinear resize), so served predictions match the measured
    held-out accuracy.
    """
    from keras_effnet.data import decode_and_center_crop as eval_preprocess
    return eval_preprocess(_checked(image_bytes, max_pixels), image_size)


def decode_batch(image_bytes: tf.Tensor, image_size: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """``[N]`` encoded images -> float32 ``[N, image_size, image_size, 3]``.

    Every image is checked before any is decoded; the first bad one fails the batch
    with ``InvalidArgumentError`` naming it (``image_bytes[i] is ...``).
    """
    from keras_effnet.data import transforms

    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    codes, sizes = check_batch(image_bytes, max_pixels)
    bad = tf.argmax(tf.cast(tf.not_equal(codes, 0), tf.int32), output_type=tf.int32)
    first = tf.minimum(bad, tf.maximum(tf.size(codes) - 1, 0))
    ok = tf.debugging.Assert(tf.reduce_all(tf.equal(codes, 0)), [_reason(
        tf.strings.format("image_bytes[{}]", first), image_bytes[first], codes[first],
        sizes[first], max_pixels)])
    with tf.control_dependencies([ok]):
        image_bytes = tf.identity(image_bytes)
    # The EXIF orientations are read for the whole batch at once; then each image is
    # decoded, cropped and resized on its own (sizes differ), several at a time.
    orientations = headers.exif_orientation(image_bytes)
    shape = [image_size, image_size, 3]

    def each(fn, dtype):
        return tf.map_fn(lambda x: fn(x[0], image_size, x[1]), (image_bytes, orientations),
                         parallel_iterations=PARALLEL_DECODES,
                         fn_output_signature=tf.TensorSpec(shape, dtype))

    def crops():  # already image_size: uint8 crops, cast to float32 once for the batch
        crop = lambda *args: tf.ensure_shape(  # noqa: E731
            transforms.decode_center_crop(*args), shape)
        return tf.cast(each(crop, tf.uint8), tf.float32)

    # JPEGs sent at the eval size (short side image_size + 32: what clients that resize
    # before sending send) need no resize; the header sizes of a JPEG are the decoder's.
    sent_at_size = tf.logical_and(
        tf.reduce_all(tf.equal(image_format(image_bytes), headers.JPEG)),
        tf.reduce_all(tf.equal(transforms.center_crop_side(
            tf.cast(sizes[:, 0], tf.int32), tf.cast(sizes[:, 1], tf.int32), image_size),
            image_size)))
    return tf.cond(sent_at_size, crops,
                   lambda: each(transforms.decode_and_center_crop, tf.float32))


def check_finite(images: tf.Tensor, what: str = "images") -> tf.Tensor:
    """``images`` (``[N, H, W, C]``), once every pixel is finite; else
    ``InvalidArgumentError`` naming the first image with a NaN or infinity."""
    finite = tf.reduce_all(tf.math.is_finite(images), axis=[1, 2, 3])
    first = tf.argmin(tf.cast(finite, tf.int32), output_type=tf.int32)
    ok = tf.debugging.Assert(tf.reduce_all(finite), [tf.strings.format(
        what + "[{}] holds NaN or infinite pixels; send finite values in [0, 255]", first)])
    with tf.control_dependencies([ok]):
        return tf.identity(images)
