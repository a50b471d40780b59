"""Serving under hostile requests (issue 16, findings 1 and 13): the pixel budget holds
whatever a GIF's screen claims, only the first frame is decoded, WebP is served, a bad
image in a batch is named, NaN pixels are refused, EXIF orientation is honoured."""

import struct

import numpy as np
import pytest
import tensorflow as tf
from test_export_support import tiny_model
from test_hostile_support import (deadline, encode, jpeg_with_orientation,
                                  landmark_image)

from keras_effnet.bench.fuzz import gif_bytes, gif_comment
from keras_effnet.data import headers, transforms
from keras_effnet.export import images, saved_model

BUDGET = 10_000  # pixels: a 100 x 100 image fits


def _traced(fn):
    return tf.function(fn, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


DECODE = _traced(lambda b: images.decode_image(b, max_pixels=BUDGET))
CROP = _traced(lambda b: images.decode_and_center_crop(b, 24, max_pixels=BUDGET))


def test_a_gif_frame_larger_than_its_screen_is_refused_before_decoding():
    # The logical screen says 1 x 1; the frame inside is 400 x 400 (160k pixels, 16x
    # the budget). TensorFlow sizes the decode from the frame, so the frame is checked.
    bomb = gif_bytes((1, 1), [(0, 0, 400, 400, 1)])
    assert len(bomb) < 1000
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="GIF of 400x400 pixels \\(its first frame"):
        CROP(tf.constant(bomb))
    # 65535 x 65535 declared in a frame descriptor: refused from the descriptor alone.
    huge = gif_bytes((8, 8), [(0, 0, 65535, 65535, None)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="65535x65535"):
        DECODE(tf.constant(huge))


def test_a_gif_screen_larger_than_its_frame_is_served():
    # The reverse: a screen of 65535 x 65535 around an 8 x 8 frame decodes as 8 x 8.
    small = gif_bytes((65535, 65535), [(0, 0, 8, 8, 1)])
    image = DECODE(tf.constant(small)).numpy()
    assert image.shape == (8, 8, 3) and image.min() == 255
    assert CROP(tf.constant(small)).shape == (24, 24, 3)


def test_only_the_first_gif_frame_is_decoded():
    # Frame 2 (600 x 600) is over the budget and larger than frame 1 (10 x 10):
    # TensorFlow would decode it too and size the canvas by it.
    animated = gif_bytes((10, 10), [(0, 0, 10, 10, 1), (0, 0, 600, 600, 0)])
    image = DECODE(tf.constant(animated)).numpy()
    assert image.shape == (10, 10, 3) and image.min() == 255
    # Training decodes the same single frame (the pipeline serving mirrors).
    assert transforms.decode_rgb(tf.constant(animated)).shape == (10, 10, 3)


def test_a_gif_of_tiny_uneven_sub_blocks_is_refused_quickly():
    # 1 MB of comment in sub-blocks of 1 to 9 bytes before a valid 8 x 8 image: a block
    # walker taking one step per sub-block would spend ~200k steps on it.
    valid = gif_bytes((8, 8), [(0, 0, 8, 8, 1)])
    busy = valid[:19] + gif_comment(b"x" * 1_000_000, [1, 5, 2, 9, 3]) + valid[19:]
    with deadline(30):
        with pytest.raises(tf.errors.InvalidArgumentError, match="malformed or truncated GIF"):
            DECODE(tf.constant(busy))
    # Equal 255-byte sub-blocks (what encoders write) are walked in large strides.
    roomy = valid[:19] + gif_comment(b"x" * 1_000_000, [255]) + valid[19:]
    with deadline(30):
        assert DECODE(tf.constant(roomy)).shape == (8, 8, 3)


def test_a_gif_cut_inside_its_first_frame_is_refused_with_a_reason():
    data = gif_bytes((50, 50), [(0, 0, 50, 50, 1)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="malformed or truncated GIF"):
        DECODE(tf.constant(data[:30]))


def test_still_webp_is_served_like_training_reads_it():
    photo = landmark_image()
    for kwargs in ({}, {"lossless": True}):
        webp = encode(photo, "WEBP", **kwargs)
        served = CROP(tf.constant(webp)).numpy()
        trained = transforms.decode_and_center_crop(tf.constant(webp), 24).numpy()
        np.testing.assert_array_equal(served, trained)
    with_alpha = encode(np.dstack([photo, photo[..., :1]]), "WEBP")  # VP8X + ALPH
    assert DECODE(tf.constant(with_alpha)).shape == (40, 64, 3)


def test_webp_over_the_budget_or_animated_is_refused():
    webp = bytearray(encode(landmark_image(), "WEBP", lossless=True))
    assert webp[12:16] == b"VP8L"
    # Rewrite the VP8L header to claim 16384 x 16384.
    webp[21:25] = struct.pack("<I", 16383 | (16383 << 14))
    with pytest.raises(tf.errors.InvalidArgumentError, match="WebP of 16384x16384"):
        DECODE(tf.constant(bytes(webp)))
    from PIL import Image
    frames = [Image.fromarray(landmark_image()), Image.fromarray(landmark_image()[::-1])]
    import io
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP"):
        DECODE(tf.constant(out.getvalue()))


def test_exif_orientation_turns_a_phone_photo_upright():
    photo = landmark_image()  # 40 x 64, upright
    stored = np.rot90(photo, 1)  # how a phone stores it: turned, with orientation 6
    data = jpeg_with_orientation(np.ascontiguousarray(stored), 6)
    assert int(headers.exif_orientation(tf.constant(data))) == 6
    upright = DECODE(tf.constant(data)).numpy().astype(int)
    assert upright.shape == (40, 64, 3)
    assert np.abs(upright - photo).mean() < 3  # JPEG noise only
    # The eval crop (served and trained) is taken on the upright image.
    reference = encode(upright.astype(np.uint8), "PNG")
    np.testing.assert_array_equal(CROP(tf.constant(data)).numpy(),
                                  CROP(tf.constant(reference)).numpy())


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile") / "saved_models"
    export = saved_model.export_saved_model(tiny_model(size=None), base, image_size=32,
                                            max_pixels=BUDGET, warmup=False)
    loaded = tf.saved_model.load(str(export.path))
    return loaded, loaded.signatures["serving_default"], loaded.signatures["predict_images"]


def test_a_bad_image_in_a_batch_is_named_by_its_index(signatures):
    _, serve, _ = signatures
    good = encode(landmark_image(), "PNG")
    out = serve(image_bytes=tf.constant([good, good]))
    assert out["probabilities"].shape == (2, 10)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[2\] is not a JPEG, PNG, GIF, BMP or WebP"):
        serve(image_bytes=tf.constant([good, good, b"hello, not an image"]))
    bomb = gif_bytes((1, 1), [(0, 0, 400, 400, 1)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[1\] is a GIF of 400x400 pixels"):
        serve(image_bytes=tf.constant([good, bomb, good]))


def test_nan_pixels_are_refused_naming_the_image(signatures):
    _, _, predict = signatures
    images_in = np.full((3, 32, 32, 3), 128.0, np.float32)
    assert np.isfinite(predict(images=tf.constant(images_in))["probabilities"]).all()
    images_in[1, 5, 5, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images\[1\] holds NaN or infinite pixels"):
        predict(images=tf.constant(images_in))
