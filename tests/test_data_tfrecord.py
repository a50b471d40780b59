"""keras_effnet.data TFRecord source: shards written here from real images, read back."""

import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_sample_images

from keras_effnet import data

NUM_TRAIN = 30


def _flat_png(value):
    """A one-colour image whose red channel identifies the record after any crop/resize."""
    image = np.zeros((20, 24, 3), np.uint8)
    image[..., 0], image[..., 1] = value, 255 - value
    return tf.io.encode_png(image).numpy()


def _value(i):
    return 5 + 7 * i


def _identities(batches):
    """Record ids (from the red channel) of every image in (images, labels) batches."""
    ids = []
    for images, _ in batches:
        ids.extend(np.rint((images[:, 0, 0, 0] - 5) / 7).astype(int).tolist())
    return ids


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 train shards of 30 one-colour PNGs, 1-based labels (1..3) as in the ImageNet
    TFRecords; 1 validation shard of 2 real JPEG photos, 1 PNG and 1 corrupt record."""
    root = tmp_path_factory.mktemp("tfrecords")
    for shard in range(3):
        data.write_tfrecord(str(root / f"train-{shard:05d}-of-00003"),
                            [(_flat_png(_value(i)), i % 3 + 1)
                             for i in range(shard, NUM_TRAIN, 3)])
    photos = [tf.io.encode_jpeg(tf.cast(tf.image.resize(img, [60, 90]), tf.uint8)).numpy()
              for img in load_sample_images().images]
    val = [(photos[0], 1), (photos[1], 2), (_flat_png(_value(33)), 3), (b"corrupt bytes", 1)]
    data.write_tfrecord(str(root / "validation-00000-of-00001"), val)
    (root / "README").write_text("not a shard")
    return str(root), val


@pytest.fixture(scope="module")
def source(shards):
    return data.get_source("tfrecord", data_dir=shards[0], label_offset=1)


def test_tfrecord_counts_and_label_offset(shards, source, tmp_path):
    root, _ = shards
    assert source.name == "tfrecord"
    assert (source.num_train, source.num_val) == (NUM_TRAIN, 4)
    assert source.class_names == ["0", "1", "2"] and source.skipped == []
    assert data.get_source("tfrecord", data_dir=root).num_classes == 4  # 0 never used
    with pytest.raises(ValueError, match="label_offset=1 .*for the 1-based"):
        data.get_source("tfrecord", data_dir=root, label_offset=2)
    # labels.txt names the classes.
    data.write_tfrecord(str(tmp_path / "train-00000-of-00001"), [(_flat_png(9), 0)])
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert data.get_source("tfrecord", data_dir=str(tmp_path)).class_names == ["cat", "dog"]
    with pytest.raises(FileNotFoundError, match="train-"):
        data.get_source("tfrecord", data_dir=os.path.dirname(root))
    with pytest.raises(ValueError, match="image/class/label"):
        with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
            writer.write(tf.train.Example().SerializeToString())
        data.get_source("tfrecord", data_dir=str(tmp_path))


def test_tfrecord_round_trip(shards, source):
    _, val = shards
    images, labels = zip(*source.eval_dataset(37, batch_size=8).as_numpy_iterator())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (3, 37, 37, 3)  # the corrupt record is dropped, not fatal
    assert labels.argmax(1).tolist() == [0, 1, 2]
    for got, (raw, _) in zip(images, val[:3]):
        np.testing.assert_allclose(got, data.decode_and_center_crop(raw, 37).numpy(), atol=1e-4)
    reps = source.representative_images(n=5, image_size=16)
    assert reps.shape == (5, 16, 16, 3) and reps.dtype == np.float32


def test_tfrecord_order_is_seeded_and_sharding_disjoint_and_complete(source):

    def order(**kw):
        return _identities(source.train_dataset(8, 6, augment=data.Augment.none(),
                                                drop_remainder=False, **kw).as_numpy_iterator())

    first = order(seed=1, epoch=0)
    assert sorted(first) == list(range(NUM_TRAIN))
    assert order(seed=1, epoch=0) == first
    assert order(seed=1, epoch=1) != first

    train_parts, eval_parts = [], []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        # 3 train files >= 2 pipelines: each pipeline reads whole files.
        ds = source.train_dataset(8, 4, augment=data.Augment.none(), input_context=ctx,
                                  drop_remainder=False, seed=4, epoch=3)
        batches = list(ds.as_numpy_iterator())
        assert max(len(y) for _, y in batches) == 2  # global batch 4 -> 2 per replica
        train_parts.append(_identities(batches))
        # 1 validation file < 2 pipelines: every other record (the 4th is corrupt).
        eval_parts.append([int(label) for _, y in
                           source.eval_dataset(8, 4, input_context=ctx).as_numpy_iterator()
                           for label in y.argmax(1)])
    assert train_parts[0] and train_parts[1] and not set(train_parts[0]) & set(train_parts[1])
    assert sorted(train_parts[0] + train_parts[1]) == list(range(NUM_TRAIN))
    assert eval_parts == [[0, 2], [1]]
