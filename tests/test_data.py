"""keras_effnet.data: the digits source, pipeline contract, augmentation and decoding."""

import hashlib
import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_effnet import data

NONE = data.Augment.none()

# Pinned split of the embedded digits (seed 0): a change here changes every digits result.
DIGITS_NUM_TRAIN, DIGITS_NUM_VAL = 1438, 359
DIGITS_VAL_PER_CLASS = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
DIGITS_VAL_LABELS_SHA256 = "c0c82348d28f8929514e3d02627a41848f043e296742ee50b0249f19dc2384cf"


@pytest.fixture(scope="module")
def digits():
    return data.get_source("digits")


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def _check_batch(images, labels, batch, size, classes):
    assert images.shape == (batch, size, size, 3) and images.dtype == np.float32
    assert labels.shape == (batch, classes) and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert images.max() > 100.0  # pixels in [0, 255], not [0, 1]
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)


# --- digits -------------------------------------------------------------------------

def test_digits_split_is_pinned(digits):
    assert digits.name == "digits" and digits.skipped == []
    assert digits.class_names == [str(i) for i in range(10)] and digits.num_classes == 10
    assert (digits.num_train, digits.num_val) == (DIGITS_NUM_TRAIN, DIGITS_NUM_VAL)
    assert digits.default_flip is False  # a mirrored 2 is no 2
    batches = list(digits.eval_dataset(8, batch_size=128).as_numpy_iterator())
    labels = np.concatenate([y.argmax(1) for _, y in batches])
    assert [len(y) for _, y in batches] == [128, 128, 103]  # last batch kept
    assert np.bincount(labels).tolist() == DIGITS_VAL_PER_CLASS
    assert hashlib.sha256(labels.astype("<i8").tobytes()).hexdigest() == DIGITS_VAL_LABELS_SHA256
    np.testing.assert_array_equal(batches[0][0][..., 0], batches[0][0][..., 2])  # gray as RGB
    other = data.get_source("digits", seed=1)
    assert (other.num_train, other.num_val) == (DIGITS_NUM_TRAIN, DIGITS_NUM_VAL)
    assert not np.array_equal(other._val_idx, digits._val_idx)


def test_shapes_at_odd_sizes_and_one_pass_without_repeat(digits):
    for size, batch, n in [(33, 5, 2), (171, 3, 1)]:
        for images, labels in _batches(digits.train_dataset(size, batch, augment=NONE,
                                                            flip=True), n):
            _check_batch(images, labels, batch, size, 10)
            assert set(np.unique(labels)) <= {0.0, 1.0}  # no mixing: exact one-hot
        (images, labels), = _batches(digits.eval_dataset(size, batch), 1)
        _check_batch(images, labels, batch, size, 10)
    dropped = digits.train_dataset(16, 100, augment=NONE)
    assert dropped.element_spec[0].shape.as_list() == [100, 16, 16, 3]
    assert int(dropped.cardinality()) == DIGITS_NUM_TRAIN // 100  # one pass, no repeat
    kept = digits.train_dataset(8, 256, augment=NONE, drop_remainder=False)
    assert int(kept.cardinality()) == -(-DIGITS_NUM_TRAIN // 256)


def test_full_recipe_is_valid_deterministic_and_resumable(digits):
    def run(skip=0, randaug_magnitude=15.0, **kw):
        augment = data.Augment(randaug_magnitude=randaug_magnitude, mixup_alpha=0.2,
                               cutmix_alpha=0.5)
        args = dict(image_size=40, batch_size=8, augment=augment, seed=3, epoch=0)
        args.update(kw)
        return _batches(digits.train_dataset(**args).skip(skip), 3 - skip)

    full = run()
    for images, labels in full:
        _check_batch(images, labels, 8, 40, 10)
    assert np.any((np.concatenate([y for _, y in full]) % 1) > 0)  # some rows are mixed
    # A second pipeline with the same (seed, epoch), resumed by skip(1), yields the very
    # same batches: every random draw is tied to the image's position, not to threads.
    for (xa, ya), (xr, yr) in zip(full[1:], run(skip=1)):
        np.testing.assert_array_equal(xa, xr)
        np.testing.assert_array_equal(ya, yr)
    # Magnitude 0 turns RandAugment off; with the same seeds, crops and mixing match, so
    # only RandAugment's work differs.
    plain = run(randaug_magnitude=0)
    for (x_on, y_on), (x_off, y_off) in zip(full, plain):
        np.testing.assert_array_equal(y_on, y_off)
        assert np.abs(x_on - x_off).mean() > 1.0
    other_epoch = run(randaug_magnitude=0, epoch=1)
    assert not np.array_equal(other_epoch[0][1], plain[0][1])
    assert not np.array_equal(other_epoch[0][0], plain[0][0])
    assert data.randaug_factor(0) == 0.0 and data.randaug_factor(45) == 1.0
    assert data.randaug_factor(15) == pytest.approx(0.5)
    layer = data.RandAugment(7.5, num_ops=3)
    config = layer.get_config()
    assert config["magnitude"] == 7.5 and config["num_ops"] == 3
    assert data.RandAugment.from_config(config).get_config() == config


def test_mixup_and_cutmix_labels_sum_to_one(digits):
    for mixup, cutmix in [(0.8, 0.0), (0.0, 1.0)]:
        (images, labels), = _batches(digits.train_dataset(
            32, 16, augment=data.Augment(None, mixup_alpha=mixup, cutmix_alpha=cutmix)), 1)
        _check_batch(images, labels, 16, 32, 10)
        assert np.all(labels >= 0) and np.any((labels > 0.01) & (labels < 0.99))
        assert np.all((labels > 0).sum(axis=1) <= 2)  # each row mixes at most two classes


def test_flip_flag(digits):
    kw = dict(image_size=20, batch_size=8, augment=NONE, seed=1)
    plain = _batches(digits.train_dataset(**kw), 1)[0][0]
    flipped = _batches(digits.train_dataset(flip=True, **kw), 1)[0][0]
    same = [np.array_equal(a, b) for a, b in zip(plain, flipped)]
    mirrored = [np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)


def test_input_context_shards_and_uses_per_replica_batch(digits):
    labels = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        batches = list(digits.eval_dataset(8, batch_size=256, input_context=ctx)
                       .as_numpy_iterator())
        assert batches[0][0].shape[0] == 128  # global 256 over 2 replicas
        labels.append(np.concatenate([y.argmax(1) for _, y in batches]))
        train = digits.train_dataset(16, 64, augment=NONE, input_context=ctx)
        assert train.element_spec[0].shape.as_list() == [32, 16, 16, 3]
    assert sorted([len(labels[0]), len(labels[1])]) == [179, 180]
    assert np.bincount(np.concatenate(labels)).tolist() == DIGITS_VAL_PER_CLASS


def test_representative_images_come_from_train_and_repeat(digits, caplog):
    a = digits.representative_images(n=12, image_size=24)
    b = digits.representative_images(n=12, image_size=24)
    assert a.shape == (12, 24, 24, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 255.0
    small = data.DigitsSource()
    small._train_idx = small._train_idx[:5]
    small._finish_split()
    with caplog.at_level(logging.WARNING, logger="keras_effnet.data"):
        assert small.representative_images(n=9, image_size=8).shape == (5, 8, 8, 3)
    assert "asked for 9" in caplog.text


def test_bad_arguments_and_names_raise_clear_errors(digits, monkeypatch):
    for kwargs, message in [
            (dict(image_size=0), "image_size"), (dict(batch_size=2.5), "batch_size"),
            (dict(augment=data.Augment(cutmix_alpha=1.5)), "cutmix_alpha")]:
        with pytest.raises(ValueError, match=message):
            digits.train_dataset(**kwargs)
    for kwargs, message in [
            (dict(randaug_magnitude=-1), "randaug_magnitude"),
            (dict(mixup_alpha=-0.1), "mixup_alpha"), (dict(cutmix_alpha="x"), "cutmix_alpha")]:
        with pytest.raises(ValueError, match=message):
            data.Augment(**kwargs)
    with pytest.raises(TypeError, match="augment must be a keras_effnet.data.Augment"):
        digits.train_dataset(augment=15.0)
    with pytest.raises(TypeError, match="randaug_magnitude"):  # the old keywords are gone
        digits.train_dataset(randaug_magnitude=None)
    for kwargs, error, message in [
            (dict(name="imagenet"), ValueError, "Unknown data source"),
            (dict(name="tfds:"), ValueError, "Unknown data source"),
            (dict(name="folder"), ValueError, "needs data_dir"),
            (dict(name="tfrecord"), ValueError, "needs data_dir"),
            (dict(name="digits", label_offset=1), ValueError, "label_offset"),
            (dict(name="folder", data_dir="/nonexistent/x"), FileNotFoundError, "not exist"),
            (dict(name="tfrecord", data_dir="/nonexistent/x"), FileNotFoundError, "not exist")]:
        with pytest.raises(error, match=message):
            data.get_source(**kwargs)
    import sys
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ImportError
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        data.get_source("tfds:cifar10")
    with pytest.raises(ValueError, match="magnitude"):
        data.RandAugment(0)


# --- decoding and crops ----------------------------------------------------------------

def _gradient_image(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + y) % 256], axis=-1).astype(np.uint8)


def test_decode_and_center_crop_numerics_and_errors():
    # 96x128 at size 64: crop = floor(64/96 * 96) = 64, offsets ((96-64+1)//2,
    # (128-64+1)//2) = (16, 32); a 64 -> 64 resize leaves the pixels as they are.
    image = _gradient_image(96, 128)
    png = tf.io.encode_png(image)
    out = data.decode_and_center_crop(png, 64)
    assert out.dtype == tf.float32 and out.shape == (64, 64, 3)
    np.testing.assert_allclose(out.numpy(), image[16:80, 32:96].astype(np.float32), atol=1e-3)
    # Same window through the JPEG decode-and-crop path (lossy, so loosely).
    jpeg = tf.io.encode_jpeg(image, quality=100)
    np.testing.assert_allclose(data.decode_and_center_crop(jpeg, 64).numpy(),
                               image[16:80, 32:96], atol=6)
    # In-memory images take the same path: 1-channel input comes back as RGB.
    gray = image[..., :1]
    out = data.center_crop_and_resize(tf.constant(gray), 64).numpy()
    np.testing.assert_allclose(out, np.repeat(gray[16:80, 32:96], 3, -1), atol=1e-3)
    # 50x30 at size 32: crop = floor(32/64 * 30) = 15 at offsets (18, 8), resized 15 -> 32.
    image = np.zeros((50, 30, 3), np.uint8)
    image[18:33, 8:23] = 200
    out = data.decode_and_center_crop(tf.io.encode_png(image), 32).numpy()
    np.testing.assert_allclose(out, 200.0, atol=1e-3)

    # In a graph (a serving signature), bad bytes raise InvalidArgumentError.
    fn = tf.function(lambda b: data.decode_and_center_crop(b, 32),
                     input_signature=[tf.TensorSpec([], tf.string)])
    for bad in [b"", b"not an image at all", tf.io.encode_jpeg(_gradient_image(20, 20))
                .numpy()[:60]]:
        with pytest.raises(tf.errors.InvalidArgumentError):
            fn(tf.constant(bad))
    assert fn(tf.io.encode_png(_gradient_image(20, 20))).shape == (32, 32, 3)


def test_random_crop_covers_bytes_and_arrays():
    image = _gradient_image(60, 90)
    seeds = [tf.constant([7, i], tf.int64) for i in range(6)]
    for raw in [tf.io.encode_jpeg(image), tf.io.encode_png(image), tf.constant(image)]:
        crops = [data.random_crop_and_resize(raw, 33, s).numpy() for s in seeds]
        for crop in crops:
            assert crop.shape == (33, 33, 3) and 0 <= crop.min() and crop.max() <= 255
        assert len({c.tobytes() for c in crops}) > 1  # the crop is random
        np.testing.assert_array_equal(crops[0],
                                      data.random_crop_and_resize(raw, 33, seeds[0]).numpy())

