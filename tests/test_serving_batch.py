"""The batched serving decode (issue 15, item 5) gives what decoding one image at a time
gives: the one-walk header check of a batch of JPEGs, EXIF orientations read for a batch,
and the skipped resize when a crop is already the served size."""

import random

import numpy as np
import pytest
import tensorflow as tf
from test_hostile_support import encode, jpeg_with_orientation, landmark_image

from keras_effnet.data import headers, transforms
from keras_effnet.export import images

BUDGET = 10_000  # pixels: a 100 x 100 image fits
_BATCH = [tf.TensorSpec([None], tf.string)]
_ONE = [tf.TensorSpec([], tf.string)]

CHECK_BATCH = tf.function(lambda b: images.check_batch(b, BUDGET), input_signature=_BATCH,
                          autograph=False)
CHECK_ONE = tf.function(lambda b: images.check(b, BUDGET), input_signature=_ONE,
                        autograph=False)
ORIENT_BATCH = tf.function(headers.exif_orientation, input_signature=_BATCH, autograph=False)
ORIENT_ONE = tf.function(headers.exif_orientation, input_signature=_ONE, autograph=False)
DECODE_BATCH = tf.function(lambda b: images.decode_batch(b, 24, BUDGET),
                           input_signature=_BATCH, autograph=False)
CROP_ONE = tf.function(lambda b: transforms.decode_and_center_crop(b, 24),
                       input_signature=_ONE, autograph=False)


def _jpeg(height: int, width: int, seed: int = 0, **kwargs) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (height, width, 3), np.uint8), "JPEG", **kwargs)


def _with_sof_size(data: bytes, height: int, width: int) -> bytes:
    """``data`` with its baseline frame header claiming ``height`` x ``width``."""
    at = data.index(b"\xff\xc0")
    return (data[:at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + data[at + 9:])


def _jpeg_corpus() -> list[bytes]:
    """JPEG-signed files the header walk must judge as the one-image check does: valid
    (EXIF, progressive, fill bytes before a marker), truncated, bit-flipped, oversized,
    empty claimed dimensions."""
    rng = random.Random(0)
    valid = [_jpeg(20, 30), _jpeg(56, 24, 1, progressive=True),
             jpeg_with_orientation(landmark_image(), 6), _jpeg(90, 100, 2, quality=40)]
    fill = valid[0].replace(b"\xff\xc0", b"\xff\xff\xff\xc0", 1)
    corpus = valid + [fill, _with_sof_size(valid[0], 200, 300),
                      _with_sof_size(valid[0], 0, 30), b"\xff\xd8\xff", b"\xff\xd8\xff\xd9"]
    for data in valid:
        corpus += [data[:rng.randrange(3, 400)] for _ in range(4)]
        for _ in range(4):
            raw = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(2, 200)] = rng.getrandbits(8)
            corpus.append(bytes(raw))
    return corpus


def _per_image(data: list[bytes]) -> tuple[list[int], list[list[int]]]:
    codes, sizes = zip(*[CHECK_ONE(tf.constant(d)) for d in data])
    return [int(c) for c in codes], [s.numpy().tolist() for s in sizes]


def test_one_walk_over_a_batch_of_jpegs_equals_checking_each():
    corpus = _jpeg_corpus()
    codes, sizes = CHECK_BATCH(tf.constant(corpus))
    expected_codes, expected_sizes = _per_image(corpus)
    assert codes.numpy().tolist() == expected_codes
    found = [i for i, c in enumerate(expected_codes) if c == 0]
    assert len(found) >= 5 and {images.TOO_LARGE, images.EMPTY} <= set(expected_codes)
    ok_or_sized = [i for i, c in enumerate(expected_codes) if c in (0, images.TOO_LARGE,
                                                                     images.EMPTY)]
    assert ([sizes.numpy().tolist()[i] for i in ok_or_sized]
            == [expected_sizes[i] for i in ok_or_sized])


def test_a_batch_with_other_formats_is_checked_one_at_a_time():
    mixed = [_jpeg(20, 30), encode(landmark_image(), "PNG"), b"not an image",
             encode(landmark_image(200, 200), "GIF")]
    codes, sizes = CHECK_BATCH(tf.constant(mixed))
    expected_codes, expected_sizes = _per_image(mixed)
    assert codes.numpy().tolist() == expected_codes == [0, 0, 1, images.TOO_LARGE]
    assert sizes.numpy().tolist()[:2] == expected_sizes[:2] == [[20, 30], [40, 64]]


def test_orientations_of_a_batch_equal_each_files():
    stored = np.ascontiguousarray(landmark_image())
    files = [jpeg_with_orientation(stored, k) for k in range(1, 9)]
    files += [_jpeg(20, 30), encode(landmark_image(), "PNG"), b"", b"\xff\xd8\xff\xe1"]
    batch = ORIENT_BATCH(tf.constant(files)).numpy().tolist()
    assert batch == [int(ORIENT_ONE(tf.constant(f))) for f in files]
    assert batch[:8] == list(range(1, 9)) and batch[8:] == [1, 1, 1, 1]
    no_exif = ORIENT_BATCH(tf.constant(files[8:])).numpy().tolist()
    assert no_exif == [1, 1, 1, 1]


def _turned_phone_photo(height: int, width: int) -> bytes:
    return jpeg_with_orientation(
        np.ascontiguousarray(np.rot90(landmark_image(height, width), 1)), 6)


@pytest.mark.parametrize("files", [
    # JPEGs sent at the eval size (short side 24 + 32): uint8 crops, no resize; one is a
    # phone photo stored sideways, cropped upright.
    [_jpeg(56, 80), _jpeg(56, 56, 1), _turned_phone_photo(56, 72), _jpeg(70, 56, 2)],
    # Other sizes and formats: each image resized as it is for training.
    [_jpeg(56, 80), _jpeg(90, 70, 2), _turned_phone_photo(40, 64),
     encode(landmark_image(56, 60), "PNG")],
], ids=["jpegs_at_size", "mixed"])
def test_a_decoded_batch_equals_each_image_decoded_for_training(files):
    batch = DECODE_BATCH(tf.constant(files)).numpy()
    expected = np.stack([CROP_ONE(tf.constant(f)).numpy() for f in files])
    np.testing.assert_array_equal(batch, expected)
    assert batch.shape == (4, 24, 24, 3) and batch.dtype == np.float32


@pytest.mark.parametrize("size", [1, 7, 24])
def test_a_crop_already_at_the_size_is_the_resize_it_skips(size):
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, (size + 32, size + 32, 3), np.uint8)
    crop = int(size / (size + 32) * (size + 32))
    top = (size + 32 - crop + 1) // 2
    window = tf.cast(pixels[top:top + crop, top:top + crop], tf.float32)
    resized = tf.clip_by_value(tf.image.resize(window, [size, size], antialias=True), 0, 255)
    out = transforms.center_crop_and_resize(tf.constant(pixels), size)
    np.testing.assert_array_equal(out.numpy(), resized.numpy())
    # Float pixels out of [0, 255] are still clipped when there is no resize.
    wild = tf.constant(pixels, tf.float32) * 2.0 - 100.0
    out = transforms.center_crop_and_resize(wild, size).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
