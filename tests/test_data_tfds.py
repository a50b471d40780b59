"""keras_effnet.data TFDS source, against a stand-in for the part of the TFDS API it uses.

tensorflow-datasets is optional and not installed in the test environment; the stand-in
serves encoded images the way ``as_dataset(..., decoders={"image": SkipDecoding()},
as_supervised=True)`` does, so the source's split choice, sharding and decoding run.
"""

import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_effnet import data


def _png(value):
    return tf.io.encode_png(np.full((10, 14, 3), value, np.uint8)).numpy()


class _Builder:
    records = {"train": [(_png(10 * i), i % 3) for i in range(7)],
               "test": [(_png(200 + i), i) for i in range(3)]}

    def __init__(self, name, data_dir=None):
        assert name == "toy" and data_dir == "/tfds"
        self.prepared = False
        split = lambda n, shards: types.SimpleNamespace(num_examples=n, num_shards=shards)
        self.info = types.SimpleNamespace(
            supervised_keys=("image", "label"),
            splits={"train": split(7, 1), "test": split(3, 1)},
            features={"label": types.SimpleNamespace(names=["a", "b", "c"], num_classes=3)})

    def download_and_prepare(self):
        self.prepared = True

    def as_dataset(self, split, shuffle_files, read_config, decoders, as_supervised):
        assert self.prepared and as_supervised and decoders == {"image": "skip"}
        assert read_config.input_context is None  # 1 file: the source shards by record
        images, labels = zip(*self.records[split])
        return tf.data.Dataset.from_tensor_slices((list(images), np.array(labels, np.int64)))


@pytest.fixture()
def fake_tfds(monkeypatch):
    module = types.ModuleType("tensorflow_datasets")
    module.builder = _Builder
    module.ReadConfig = lambda **kw: types.SimpleNamespace(**kw)
    module.decode = types.SimpleNamespace(SkipDecoding=lambda: "skip")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_tfds_source_reads_splits_and_shards(fake_tfds):
    source = data.get_source("tfds:toy", data_dir="/tfds")
    assert source.name == "tfds:toy" and source.class_names == ["a", "b", "c"]
    assert (source.num_train, source.num_val) == (7, 3)  # no "validation": "test" is used
    images, labels = next(source.eval_dataset(12, 8).as_numpy_iterator())
    assert images.shape == (3, 12, 12, 3) and labels.argmax(1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(images[:, 0, 0, 0], [200, 201, 202], atol=1e-3)
    seen = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(2, pipeline_id, 2)
        ds = source.train_dataset(12, 4, augment=data.Augment.none(), input_context=ctx,
                                  drop_remainder=False)
        seen += [int(round(v / 10)) for x, _ in ds.as_numpy_iterator() for v in x[:, 0, 0, 0]]
    assert sorted(seen) == list(range(7))
