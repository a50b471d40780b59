"""TensorFlow Datasets by name: ``get_source("tfds:<name>")`` (e.g. ``tfds:cifar10``).

Needs the optional ``tensorflow-datasets`` package, imported only here. ``data_dir`` is
TFDS' data directory (its default when None); the dataset is prepared (downloaded) by TFDS
if it is not there yet. The dataset must have supervised keys (image, class label).

Splits: ``train`` for training; ``validation`` for eval, else ``test``, else the last 20 %
of ``train`` (and the first 80 % for training). Images are read as encoded bytes and
decoded by our pipeline, so eval and serving share one decoder.
"""

from __future__ import annotations

import tensorflow as tf

from keras_effnet.data.base import AUTOTUNE, Source, pipeline, records_in_part
from keras_effnet.data.seeding import key

__all__ = ["TFDSSource"]


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # optional dependency
    except ImportError as error:
        raise ImportError(
            "get_source('tfds:<name>') needs TensorFlow Datasets: "
            "pip install tensorflow-datasets") from error
    return tfds


class TFDSSource(Source):
    """A TFDS image classification dataset (see the module docstring)."""

    #: Records held by the shuffle buffer (encoded bytes).
    shuffle_buffer: int = 8192

    def __init__(self, dataset: str, data_dir: str | None = None, label_offset: int = 0):
        super().__init__()
        self._tfds = _import_tfds()
        self.name = f"tfds:{dataset}"
        self.label_offset = int(label_offset)
        self._builder = self._tfds.builder(dataset, data_dir=data_dir)
        self._builder.download_and_prepare()
        info = self._builder.info
        if not info.supervised_keys:
            raise ValueError(f"TFDS dataset {dataset!r} has no supervised (image, label) keys.")
        self._image_key, self._label_key = info.supervised_keys[:2]
        splits = info.splits
        if "validation" in splits:
            self._train_split, self._val_split = "train", "validation"
        elif "test" in splits:
            self._train_split, self._val_split = "train", "test"
        else:
            self._train_split, self._val_split = "train[:80%]", "train[80%:]"
        self.num_train = int(splits[self._train_split].num_examples)
        self.num_val = int(splits[self._val_split].num_examples)
        label_feature = info.features[self._label_key]
        names = list(getattr(label_feature, "names", None) or
                     [str(i) for i in range(label_feature.num_classes)])
        self.class_names = names[self.label_offset:]

    def _read(self, split: str, input_context, shuffle_seed: int | None) -> tf.data.Dataset:
        num_pipelines, pipeline_id = pipeline(input_context)
        by_file = self._by_file(split, num_pipelines)
        read_config = self._tfds.ReadConfig(
            shuffle_seed=shuffle_seed, input_context=input_context if by_file else None)
        ds = self._builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
            decoders={self._image_key: self._tfds.decode.SkipDecoding()},
            as_supervised=True)
        if num_pipelines > 1 and not by_file:
            ds = ds.shard(num_pipelines, pipeline_id)
        offset = self.label_offset
        return ds.map(lambda image, label: (image, tf.cast(label - offset, tf.int32)),
                      num_parallel_calls=AUTOTUNE)

    def _by_file(self, split: str, num_pipelines: int) -> bool:
        # TFDS shards by file itself, but only when there are enough files.
        num_shards = getattr(self._builder.info.splits[split], "num_shards", 0) or 0
        return num_pipelines > 1 and num_shards >= num_pipelines

    def _train_records(self, seed, epoch, input_context):
        _, pipeline_id = pipeline(input_context)
        ds = self._read(self._train_split, input_context, key(seed, epoch, 4) >> 33)
        return ds.shuffle(self.shuffle_buffer, seed=key(seed, epoch, pipeline_id, 3) >> 1,
                          reshuffle_each_iteration=False)

    def _eval_records(self, input_context):
        return self._read(self._val_split, input_context, None)

    def _representative_records(self, n):
        return self._read(self._train_split, None, None).take(n)

    def _num_records(self, train, input_context):
        # TFDS counts examples, not images that decode: the eval length stays unknown
        # (a corrupt one is dropped, not replaced); per file, the counts are TFDS'.
        if not train or self._by_file(self._train_split, pipeline(input_context)[0]):
            return None
        return records_in_part(self.num_train, input_context)
