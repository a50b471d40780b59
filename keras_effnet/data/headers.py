"""What an encoded image says about itself, read in-graph before any pixel is decoded.

TensorFlow's decoders allocate from sizes the container declares, and not always the
ones a quick look at the header suggests:

* JPEG: the SOF marker (``tf.image.extract_jpeg_shape``, libjpeg's own header parse).
* PNG: the IHDR chunk (always the first chunk). BMP: the DIB header.
* WebP: the VP8 / VP8L frame header, or the VP8X canvas. TensorFlow decodes an animated
  WebP only as RGBA, so the RGB pipelines here refuse it.
* GIF: **every frame descriptor**, not the logical screen: TensorFlow decodes all frames
  (one raster each) into a canvas of the largest frame, however small the screen says it
  is. :func:`first_frame` therefore cuts a GIF after its first image (plus a trailer), and
  :func:`inspect` reports that image's own size: what the decoder then allocates.

Everything is TensorFlow ops (no autograph, no Python control flow on tensors), so it
traces into tf.data pipelines and SavedModel signatures alike. :func:`inspect` never
raises: it returns a status code, so a caller can say which image of a batch is bad.
JPEG EXIF orientation (:func:`exif_orientation`, :func:`orient`) is read the same way.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["UNKNOWN", "JPEG", "PNG", "GIF", "BMP", "WEBP", "FORMAT_NAMES", "OK",
           "UNKNOWN_FORMAT", "MALFORMED", "ANIMATED", "image_format", "inspect", "inspect_jpegs",
           "first_frame", "webp_alpha", "exif_orientation", "oriented_shape", "stored_window",
           "orient"]

UNKNOWN, JPEG, PNG, GIF, BMP, WEBP = range(6)
FORMAT_NAMES = ("unknown", "JPEG", "PNG", "GIF", "BMP", "WebP")
# inspect() status codes.
OK, UNKNOWN_FORMAT, MALFORMED, ANIMATED = range(4)

_HEADER_BYTES = 32
# A GIF's first image is found by walking its blocks. Encoders write data sub-blocks of
# one size (255), so one step of the walk jumps over a run of up to _GIF_RUN equal-sized
# sub-blocks. A walk longer than _GIF_BASE_STEPS + size / _GIF_BYTES_PER_STEP steps (a
# file of tiny, uneven sub-blocks made to keep it busy) is refused as malformed: that
# bounds its time by the file's size.
_GIF_RUN, _GIF_BASE_STEPS, _GIF_BYTES_PER_STEP = 256, 1024, 1024
# JPEG: segments before the frame header (real files have a dozen or so), and how far
# past a segment's end libjpeg-style resynchronisation looks for the next marker.
_JPEG_MAX_SEGMENTS, _JPEG_RESYNC = 1024, 256
# EXIF: the APP1 segment must be among the first few segments; IFD0 entries read.
_EXIF_SEGMENTS, _EXIF_ENTRIES = 3, 32

# Bytes are read in windows (``tf.strings.substr``), never the whole file at once: a
# multi-megabyte photo costs what its headers cost.


def _window(image_bytes: tf.Tensor, n: tf.Tensor, start, size) -> tf.Tensor:
    """The ``size`` bytes from ``start`` as int64, 0 past the end of the file."""
    start = tf.clip_by_value(tf.cast(start, tf.int64), 0, n)
    size = tf.cast(size, tf.int64)
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, start, size), tf.uint8),
                  tf.int64)
    return tf.pad(raw, [[0, size - tf.shape(raw, out_type=tf.int64)[0]]])


def _windows(image_bytes: tf.Tensor, n: tf.Tensor, start, size: int) -> tf.Tensor:
    """:func:`_window` for a fixed ``size`` and files of any shape: ``[..., size]``."""
    start = tf.minimum(tf.maximum(tf.cast(start, tf.int64), 0), n)  # broadcast to n
    part = tf.strings.substr(image_bytes, start, tf.fill(tf.shape(start), tf.constant(
        size, tf.int64)))
    return tf.cast(tf.io.decode_raw(part, tf.uint8, fixed_length=size), tf.int64)


def _bytes(image_bytes: tf.Tensor, size: int = _HEADER_BYTES
           ) -> tuple[tf.Tensor, tf.Tensor]:
    """(the first ``size`` bytes as int64, zero-padded; the file's length)."""
    n = tf.cast(tf.strings.length(image_bytes), tf.int64)
    return _window(image_bytes, n, 0, size), n


def _int(data: tf.Tensor, start, size: int, big_endian: bool | tf.Tensor) -> tf.Tensor:
    """The unsigned integer of ``size`` bytes at ``start`` of ``data``."""
    part = data[..., start:start + size] if isinstance(start, int) else tf.gather(
        data, tf.cast(start, tf.int64) + tf.range(size, dtype=tf.int64))
    weights = tf.constant([256 ** i for i in range(size)], tf.int64)
    little = tf.reduce_sum(part * weights, axis=-1)
    big = tf.reduce_sum(part * weights[::-1], axis=-1)
    return tf.where(tf.convert_to_tensor(big_endian), big, little)


def _at(image_bytes: tf.Tensor, n: tf.Tensor, start, size: int,
        big_endian: bool | tf.Tensor) -> tf.Tensor:
    """The unsigned integer of ``size`` bytes at ``start`` of the file (0 past its end)."""
    return _int(_window(image_bytes, n, start, size), 0, size, big_endian)


def _matches(data: tf.Tensor, start: int, magic: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(data[..., start:start + len(magic)],
                                  tf.constant(list(magic), tf.int64)), axis=-1)


def image_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """:data:`JPEG`, :data:`PNG`, :data:`GIF`, :data:`BMP`, :data:`WEBP` or
    :data:`UNKNOWN`, from the magic bytes (int32, the shape of ``image_bytes``)."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    head = _windows(image_bytes, tf.cast(tf.strings.length(image_bytes), tf.int64), 0,
                    _HEADER_BYTES)
    fmt = tf.constant(UNKNOWN)
    for code, test in ((BMP, _matches(head, 0, b"BM")), (GIF, _matches(head, 0, b"GIF8")),
                       (WEBP, tf.logical_and(_matches(head, 0, b"RIFF"),
                                             _matches(head, 8, b"WEBP"))),
                       (PNG, _matches(head, 0, b"\x89PNG\r\n\x1a\n")),
                       (JPEG, _matches(head, 0, b"\xff\xd8\xff"))):
        fmt = tf.where(test, code, fmt)
    return fmt


# --- JPEG ------------------------------------------------------------------------------

_JPEG_SOF = [m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)]


def _jpeg_frames(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(found ``[N]``, ``[N, 2]`` heights and widths) of the frame headers (SOF) of ``[N]``
    JPEGs, walking their segments as libjpeg does: fill bytes and stray bytes between
    markers are skipped (up to _JPEG_RESYNC of them), standalone markers have no length,
    SOS or EOI before a SOF means there is none. One walk steps every file at once (a
    file stops where its SOF is, or is not): a batch costs what its longest header costs,
    not the sum of them."""
    n = tf.cast(tf.strings.length(image_bytes), tf.int64)
    sof = tf.constant(_JPEG_SOF, tf.int64)
    reach = tf.range(_JPEG_RESYNC, dtype=tf.int64)

    def body(pos, steps, state, size):
        # Where the next marker's 0xFF is (libjpeg discards other bytes before it).
        ahead = _windows(image_bytes, n, pos, _JPEG_RESYNC)
        is_ff = tf.logical_and(tf.equal(ahead, 0xFF), pos[:, None] + reach < n[:, None])
        at = pos + tf.argmax(tf.cast(is_ff, tf.int32), axis=1, output_type=tf.int64)
        data = _windows(image_bytes, n, at, 9)
        marker = data[:, 1]
        standalone = tf.logical_or(tf.logical_or(tf.equal(marker, 0xD8), tf.equal(marker, 0x01)),
                                   tf.logical_and(marker >= 0xD0, marker <= 0xD7))
        skip = tf.logical_or(tf.logical_or(tf.equal(marker, 0xFF), tf.equal(marker, 0)),
                             standalone)  # 0xFF 0xFF: fill; 0xFF 0x00: stuffed zero
        is_sof = tf.reduce_any(tf.equal(marker[:, None], sof), axis=1)
        stop = tf.logical_or(tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9)),
                             tf.logical_not(tf.reduce_any(is_ff, axis=1)))
        length = _int(data, 2, 2, True)
        new_pos = tf.where(tf.equal(marker, 0xFF), at + 1,
                           tf.where(skip, at + 2, at + 2 + length))
        new_state = tf.where(at + 9 > n, 2, tf.where(is_sof, 1, tf.where(stop, 2, 0)))
        new_size = tf.stack([_int(data, 5, 2, True), _int(data, 7, 2, True)], axis=1)
        walking = tf.equal(state, 0)  # a file that has stopped keeps its result
        return (tf.where(walking, new_pos, pos), steps + 1,
                tf.where(walking, new_state, state),
                tf.where(tf.logical_and(walking, is_sof)[:, None], new_size, size))

    # state: 0 walking, 1 found, 2 none.
    count = tf.shape(image_bytes)[:1]
    _, _, state, size = tf.while_loop(
        lambda pos, steps, state, size: tf.logical_and(tf.reduce_any(tf.equal(state, 0)),
                                                       steps < _JPEG_MAX_SEGMENTS),
        body, (tf.fill(count, tf.constant(2, tf.int64)), tf.constant(0),
               tf.zeros(count, tf.int32), tf.fill(tf.concat([count, [2]], 0),
                                                  tf.constant(-1, tf.int64))))
    return tf.equal(state, 1), size


def inspect_jpegs(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`inspect` of ``[N]`` files that are all JPEGs (:func:`image_format`), in one
    walk over their headers: status ``[N]``, ``[N, 2]`` heights and widths."""
    found, size = _jpeg_frames(tf.convert_to_tensor(image_bytes, tf.string))
    return tf.where(found, OK, MALFORMED), size


# --- GIF -------------------------------------------------------------------------------

def _gif_first_image(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(ok, end, [height, width]) of a GIF's first image: ``end`` is the offset just past
    its data. Not ok when the blocks before it are malformed, truncated or too many."""
    head, n = _bytes(image_bytes, 16)
    screen_flags = head[10]
    table = tf.where(screen_flags >= 128,
                     3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), screen_flags % 8),
                     0)
    max_steps = _GIF_BASE_STEPS + n // _GIF_BYTES_PER_STEP
    # mode: 0 at a block introducer, 1 in an extension's sub-blocks, 2 in the image's
    # sub-blocks, 3 done (past the image), 4 malformed.
    start = (13 + table, tf.constant(0, tf.int64), tf.constant(0), tf.zeros([2], tf.int64))

    def body(pos, steps, mode, size):
        valid = pos < n
        data = _window(image_bytes, n, pos, 10)
        marker = data[0]
        is_extension, is_image = tf.equal(marker, 0x21), tf.equal(marker, 0x2C)
        packed = data[9]
        local = tf.where(packed >= 128,
                         3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8), 0)
        block_pos = tf.where(is_extension, pos + 2, pos + 11 + local)
        block_mode = tf.where(is_extension, 1, tf.where(is_image, 2, 4))
        image_size = tf.stack([_int(data, 7, 2, False), _int(data, 5, 2, False)])
        # In sub-blocks: a length byte, then that many bytes; 0 ends the chain. One step
        # jumps over the run of sub-blocks of this one's length that starts here.
        stride = marker + 1
        offsets = stride * tf.range(_GIF_RUN, dtype=tf.int64)
        run_bytes = tf.gather(_window(image_bytes, n, pos, stride * _GIF_RUN), offsets)
        same = tf.logical_and(tf.equal(run_bytes, marker), pos + offsets < n)
        run = tf.reduce_sum(tf.math.cumprod(tf.cast(same, tf.int64)))
        chain_pos = pos + tf.where(tf.equal(marker, 0), tf.constant(1, tf.int64),
                                     stride * tf.maximum(run, 1))
        chain_mode = tf.where(tf.equal(marker, 0), tf.where(tf.equal(mode, 2), 3, 0), mode)
        at_block = tf.equal(mode, 0)
        new_mode = tf.where(valid, tf.where(at_block, block_mode, chain_mode), 4)
        new_size = tf.where(tf.logical_and(at_block, is_image), image_size, size)
        return (tf.where(at_block, block_pos, chain_pos), steps + 1, new_mode, new_size)

    pos, steps, mode, size = tf.while_loop(
        lambda pos, steps, mode, size: tf.logical_and(mode < 3, steps < max_steps),
        body, start, maximum_iterations=None)
    return tf.logical_and(tf.equal(mode, 3), pos <= n), pos, size


def first_frame(image_bytes: tf.Tensor) -> tf.Tensor:
    """A GIF cut after its first image and closed with a trailer, so the decoder reads
    (and allocates) one frame; other bytes unchanged. A GIF whose first image cannot be
    found is returned as it is (and :func:`inspect` calls it malformed)."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)

    def cut():
        ok, end, _ = _gif_first_image(image_bytes)
        return tf.where(ok, tf.strings.substr(image_bytes, 0, tf.cast(end, tf.int32)) + ";",
                        image_bytes)

    return tf.cond(tf.equal(image_format(image_bytes), GIF), cut, lambda: image_bytes)


# --- WebP ------------------------------------------------------------------------------

def webp_alpha(image_bytes: tf.Tensor) -> tf.Tensor:
    """Whether ``image_bytes`` is a WebP with an alpha channel (the VP8X flag or the VP8L
    header bit): TensorFlow decodes those only as RGBA, the others only as RGB."""
    head, _ = _bytes(image_bytes)
    extended = tf.logical_and(_matches(head, 12, b"VP8X"),
                              tf.equal(tf.bitwise.bitwise_and(head[20], 0x10), 0x10))
    lossless = tf.logical_and(_matches(head, 12, b"VP8L"),
                              tf.equal((_int(head, 21, 4, False) // 2 ** 28) % 2, 1))
    return tf.logical_and(tf.equal(image_format(image_bytes), WEBP),
                          tf.logical_or(extended, lossless))


# --- every format -----------------------------------------------------------------------

def inspect(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(status, ``[height, width]`` int64) the decoder will allocate for, without
    decoding and without raising.

    status: :data:`OK`, :data:`UNKNOWN_FORMAT`, :data:`MALFORMED` (a header the decoder
    cannot read, a GIF without a complete first image) or :data:`ANIMATED` (an animated
    WebP). A GIF's size is its first image's (see :func:`first_frame`).
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    fmt = image_format(image_bytes)
    head, n = _bytes(image_bytes)
    none = tf.constant([-1, -1], tf.int64)

    def unknown():
        return tf.constant(UNKNOWN_FORMAT), none

    def jpeg():
        status, size = inspect_jpegs(image_bytes[None])
        return status[0], size[0]

    def png():
        complete = tf.logical_and(n >= 24, _matches(head, 12, b"IHDR"))
        size = tf.stack([_int(head, 20, 4, True), _int(head, 16, 4, True)])
        return tf.where(complete, OK, MALFORMED), size

    def gif():
        found, _, size = _gif_first_image(image_bytes)
        return tf.where(found, OK, MALFORMED), size

    def bmp():
        signed = lambda v: tf.where(v >= 2 ** 31, v - 2 ** 32, v)  # noqa: E731
        size = tf.stack([tf.abs(signed(_int(head, 22, 4, False))),
                         signed(_int(head, 18, 4, False))])
        return tf.where(n >= 26, OK, MALFORMED), size

    def webp():
        lossy = _matches(head, 12, b"VP8 ")
        lossless = tf.logical_and(_matches(head, 12, b"VP8L"), tf.equal(head[20], 0x2F))
        extended = _matches(head, 12, b"VP8X")
        bits = _int(head, 21, 4, False)
        size = tf.where(lossy, tf.stack([_int(head, 28, 2, False) % 16384,
                                         _int(head, 26, 2, False) % 16384]),
                        tf.where(lossless, tf.stack([(bits // 16384) % 16384 + 1,
                                                     bits % 16384 + 1]),
                                 tf.stack([_int(head, 27, 3, False) + 1,
                                           _int(head, 24, 3, False) + 1])))
        known = tf.logical_and(n >= 30, tf.reduce_any([lossy, lossless, extended]))
        animated = tf.logical_and(extended, tf.equal(tf.bitwise.bitwise_and(head[20], 2), 2))
        return tf.where(known, tf.where(animated, ANIMATED, OK), MALFORMED), size

    status, size = tf.switch_case(fmt, [unknown, jpeg, png, gif, bmp, webp])
    status.set_shape([])
    size.set_shape([2])
    return status, size


# --- EXIF orientation -------------------------------------------------------------------

def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8, int32) of a JPEG; 1 (as stored) for anything else,
    without EXIF, or with a value out of range. ``image_bytes`` may be one file or a batch
    (the result has its shape)."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    n = tf.cast(tf.strings.length(image_bytes), tf.int64)
    shape = tf.shape(image_bytes)
    pos, tiff = tf.fill(shape, tf.constant(2, tf.int64)), tf.fill(shape, tf.constant(-1, tf.int64))
    for _ in range(_EXIF_SEGMENTS):  # APPn segments follow SOI; Exif is APP1
        segment = _windows(image_bytes, n, pos, 10)
        marker = _int(segment, 0, 2, True)
        is_exif = tf.logical_and(tf.equal(marker, 0xFFE1), _matches(segment, 4, b"Exif\0\0"))
        tiff = tf.where(tf.logical_and(tiff < 0, is_exif), pos + 10, tiff)
        is_app = tf.logical_and(marker >= 0xFFE0, marker <= 0xFFEF)
        pos = tf.where(is_app, pos + 2 + _int(segment, 2, 2, True), n)

    def orientation():  # IFD0's entries: tag 0x0112, a SHORT in the value field
        header = _windows(image_bytes, n, tiff, 8)
        big = tf.equal(_int(header, 0, 2, True), 0x4D4D)
        ifd = tiff + _int(header, 4, 4, big)
        table = _windows(image_bytes, n, ifd, 2 + 12 * _EXIF_ENTRIES)
        count = tf.minimum(_int(table, 0, 2, big), _EXIF_ENTRIES)
        entries = tf.reshape(table[..., 2:], tf.concat([shape, [_EXIF_ENTRIES, 12]], 0))
        weights = tf.where(big[..., None, None], tf.constant([256, 1], tf.int64),
                           tf.constant([1, 256], tf.int64))
        tags = tf.reduce_sum(entries[..., 0:2] * weights, axis=-1)
        values = tf.reduce_sum(entries[..., 8:10] * weights, axis=-1)
        wanted = tf.logical_and(tf.equal(tags, 0x0112),
                                tf.range(_EXIF_ENTRIES, dtype=tf.int64) < count[..., None])
        value = tf.reduce_max(tf.where(wanted, values, 0), axis=-1)
        return tf.cast(tf.where(tf.logical_and(value >= 1, value <= 8), value, 1), tf.int32)

    has_exif = tf.logical_and(tiff >= 0, tf.equal(image_format(image_bytes), JPEG))
    # IFD0 is read only when there is one.
    if image_bytes.shape.rank == 0:
        return tf.cond(has_exif, orientation, lambda: tf.constant(1, tf.int32))
    return tf.cond(tf.reduce_any(has_exif), lambda: tf.where(has_exif, orientation(), 1),
                   lambda: tf.ones(shape, tf.int32))


def oriented_shape(shape: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """``[height, width, ...]`` of the image once oriented (5-8 swap the axes)."""
    shape = tf.convert_to_tensor(shape)
    swapped = tf.concat([tf.stack([shape[1], shape[0]]), shape[2:]], 0)
    return tf.where(orientation >= 5, swapped, shape)


def stored_window(window, stored_shape: tf.Tensor, orientation: tf.Tensor):
    """A crop window ``(top, left, height, width)`` of the oriented image, as the window
    of the stored pixels that :func:`orient` turns into it."""
    top, left, height, width = window
    rows, cols = stored_shape[0], stored_shape[1]
    options = [  # orientation 1 .. 8 (EXIF): the stored rows/cols the crop comes from
        (top, left, height, width), (top, cols - left - width, height, width),
        (rows - top - height, cols - left - width, height, width),
        (rows - top - height, left, height, width), (left, top, width, height),
        (rows - left - width, top, width, height),
        (rows - left - width, cols - top - height, width, height),
        (left, cols - top - height, width, height)]
    index = tf.clip_by_value(orientation, 1, 8) - 1
    return tuple(tf.gather(tf.stack([o[i] for o in options]), index) for i in range(4))


def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Stored ``[H, W, C]`` pixels as displayed under EXIF ``orientation`` (1-8)."""
    t = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [lambda: image, lambda: image[:, ::-1], lambda: image[::-1, ::-1],
                lambda: image[::-1], lambda: t(image), lambda: t(image)[:, ::-1],
                lambda: t(image)[::-1, ::-1], lambda: t(image)[::-1]]
    out = tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)
    out.set_shape([None, None, image.shape[-1]])
    return out
