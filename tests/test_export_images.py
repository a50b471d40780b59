"""In-graph decoding for serving: formats, header sizes, bombs and bad bytes."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from test_export_support import png_header_only

from keras_effnet.export import images
from keras_effnet.export.saved_model import sample_image_bytes


def _encode(array: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


_SCALAR = [tf.TensorSpec([], tf.string)]


def _traced(fn):
    return tf.function(fn, input_signature=_SCALAR, autograph=False)


# Traced once for the module: tracing, not running, is what costs here.
HEADER_SHAPE = _traced(images.header_shape)
DECODE = _traced(images.decode_image)
DECODE_CROP_32 = _traced(lambda b: images.decode_and_center_crop(b, 32))


def _run(fn, data):
    fn = fn if hasattr(fn, "get_concrete_function") else _traced(fn)
    return fn(tf.constant(data))


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "JPEG"])
def test_header_shape_and_decode_for_every_format(photo, fmt):
    data = _encode(photo, fmt)
    assert _run(HEADER_SHAPE, data).numpy().tolist() == [37, 53]
    decoded = _run(DECODE, data).numpy()
    assert decoded.shape == (37, 53, 3) and decoded.dtype == np.uint8
    if fmt in ("PNG", "BMP"):  # lossless
        np.testing.assert_array_equal(decoded, photo)


def test_grayscale_png_becomes_rgb(photo):
    gray = _encode(photo[..., 0], "PNG")
    decoded = _run(DECODE, gray).numpy()
    assert decoded.shape == (37, 53, 3)
    np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_decode_and_center_crop_matches_the_training_eval_pipeline():
    from keras_effnet import data
    jpeg = sample_image_bytes()
    ours = _run(lambda b: images.decode_and_center_crop(b, 64), jpeg).numpy()
    theirs = _run(lambda b: data.decode_and_center_crop(b, 64), jpeg).numpy()
    assert ours.shape == (64, 64, 3) and ours.dtype == np.float32
    assert 0.0 <= ours.min() and ours.max() <= 255.0
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name,data", [
    ("garbage", b"this is not an image"),
    ("empty", b""),
    ("jpeg_magic_only", b"\xff\xd8\xff"),
    ("png_magic_only", b"\x89PNG\r\n\x1a\n"),
    ("not_utf8", b"\xfe\xfa\x80\x81\xc3\x28 random bytes"),  # unknown format, invalid UTF-8
])
def test_bad_bytes_raise_invalid_argument(name, data):
    with pytest.raises(tf.errors.InvalidArgumentError):
        _run(DECODE_CROP_32, data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_files_raise_invalid_argument(photo, fmt):
    big = np.tile(photo, (4, 4, 1))
    data = _encode(big, fmt)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _run(DECODE_CROP_32, data[:len(data) // 2])


def test_decompression_bomb_is_refused_from_its_header():
    # 100k x 100k pixels claimed in a ~60-byte file: refused before any decoding.
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    assert _run(HEADER_SHAPE, bomb).numpy().tolist() == [100_000, 100_000]
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_pixels=50000000"):
        _run(DECODE_CROP_32, bomb)


def test_pixel_limit_is_configurable(photo):
    data = _encode(photo, "PNG")  # 37 x 53 = 1961 pixels
    assert _run(lambda b: images.decode_image(b, max_pixels=1961), data).shape == (37, 53, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_pixels=1960"):
        _run(lambda b: images.decode_image(b, max_pixels=1960), data)
    gif = _encode(photo, "GIF")
    with pytest.raises(tf.errors.InvalidArgumentError):
        _run(lambda b: images.decode_image(b, max_pixels=1000), gif)
