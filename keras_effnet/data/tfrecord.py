"""TFRecord shards in the standard ImageNet layout.

``data_dir`` holds ``train-*`` shards (e.g. ``train-00000-of-01024``) and ``validation-*``
shards (or ``val-*``); each record is a ``tf.train.Example`` with ``image/encoded`` (JPEG,
PNG, BMP or GIF bytes) and ``image/class/label`` (int64). Other features are ignored.

``label_offset`` is subtracted from every stored label. The TFRecords built by the
tensorflow/models ``build_imagenet_data.py`` script (used by the tensorflow/tpu and automl
EfficientNet code) store labels 1..1000, with 0 reserved for "background": pass
``label_offset=1`` to get 1000 classes 0..999. TFDS-built ImageNet and most other writers
are 0-based: keep the default 0. A label below the offset raises ``ValueError`` at load time.

Class names come from ``data_dir/labels.txt`` when present (one name per line, line ``i``
naming class ``i`` after the offset); otherwise they are "0", "1", ... up to the largest
label. Loading reads every record's label once to count the splits (one pass over the
files, bytes not decoded). Images are decoded in the pipeline; a record whose image does
not decode is dropped with a tf.data warning instead of stopping the run.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import tensorflow as tf

from keras_effnet.data.base import AUTOTUNE, Source, logger, pipeline, records_in_part
from keras_effnet.data.seeding import key, permutation

__all__ = ["TFRecordSource", "make_example", "write_tfrecord"]

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
TRAIN_PATTERNS = ("train-*",)
VAL_PATTERNS = ("validation-*", "val-*")
_FEATURES = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
             LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
_MAX_CYCLE = 16


def make_example(image_bytes: bytes, label: int) -> tf.train.Example:
    """One record in the ImageNet layout (``image/encoded``, ``image/class/label``)."""
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))


def write_tfrecord(path: str, records: Iterable[tuple[bytes, int]]) -> int:
    """Write ``(image_bytes, label)`` pairs to one TFRecord file; returns the count."""
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for image_bytes, label in records:
            writer.write(make_example(image_bytes, label).SerializeToString())
            count += 1
    return count


def _glob(data_dir: str, patterns: tuple[str, ...]) -> list[str]:
    for pattern in patterns:
        files = sorted(tf.io.gfile.glob(os.path.join(data_dir, pattern)))
        if files:
            return files
    return []


def _scan_labels(files: list[str]) -> tuple[int, int, int]:
    """(record count, smallest label, largest label) over ``files``."""
    if not files:
        return 0, 0, -1
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), _MAX_CYCLE))
    ds = ds.batch(1024).map(
        lambda records: tf.io.parse_example(records, {LABEL_KEY: _FEATURES[LABEL_KEY]})[
            LABEL_KEY], num_parallel_calls=AUTOTUNE)
    init = (tf.constant(0, tf.int64), tf.constant(np.iinfo(np.int64).max, tf.int64),
            tf.constant(np.iinfo(np.int64).min, tf.int64))

    def reduce(state, labels):
        n, lo, hi = state
        return (n + tf.size(labels, tf.int64), tf.minimum(lo, tf.reduce_min(labels)),
                tf.maximum(hi, tf.reduce_max(labels)))

    try:
        n, lo, hi = ds.reduce(init, reduce)
    except tf.errors.OpError as error:
        raise ValueError(
            f"Could not read labels from TFRecords {files[:3]}{'...' if len(files) > 3 else ''}"
            f": {error.message.splitlines()[0]}. Expected tf.train.Example records with "
            f"{IMAGE_KEY!r} (bytes) and {LABEL_KEY!r} (int64).") from error
    return int(n), int(lo), int(hi)


class TFRecordSource(Source):
    """ImageNet-layout TFRecord shards (see the module docstring)."""

    name = "tfrecord"
    #: Records held by the shuffle buffer (encoded bytes: ~1 GB for ImageNet JPEGs).
    shuffle_buffer: int = 8192

    def __init__(self, data_dir: str, label_offset: int = 0):
        super().__init__()
        self.data_dir = str(data_dir)
        self.label_offset = int(label_offset)
        if not tf.io.gfile.isdir(self.data_dir):
            raise FileNotFoundError(
                f"TFRecord directory {self.data_dir!r} does not exist. Pass data_dir=<dir> "
                "holding train-*-of-* and validation-*-of-* shards.")
        self._train_files = _glob(self.data_dir, TRAIN_PATTERNS)
        self._val_files = _glob(self.data_dir, VAL_PATTERNS)
        if not self._train_files:
            raise FileNotFoundError(
                f"No training shards matching {self.data_dir}/train-* (ImageNet layout: "
                "train-00000-of-01024, ..., validation-00000-of-00128, ...).")
        if not self._val_files:
            logger.warning("%s: no validation-* (or val-*) shards; eval_dataset() will fail.",
                           self.data_dir)
        self.num_train, train_lo, train_hi = _scan_labels(self._train_files)
        self.num_val, val_lo, val_hi = _scan_labels(self._val_files)
        if self.num_train == 0:
            raise ValueError(f"The training shards in {self.data_dir!r} hold no records.")
        lo = min(train_lo, val_lo) if self.num_val else train_lo
        hi = max(train_hi, val_hi)
        if lo - self.label_offset < 0:
            raise ValueError(
                f"Found label {lo} with label_offset={self.label_offset}: labels would be "
                f"negative. Use label_offset={lo} or less (0 for 0-based labels, 1 for the "
                "1-based ImageNet layout).")
        self.class_names = self._class_names(hi - self.label_offset + 1)
        logger.info("%s: %d train / %d validation records, %d classes.", self.data_dir,
                    self.num_train, self.num_val, self.num_classes)

    def _class_names(self, needed: int) -> list[str]:
        path = os.path.join(self.data_dir, "labels.txt")
        if not tf.io.gfile.exists(path):
            return [str(i) for i in range(needed)]
        with tf.io.gfile.GFile(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) < needed:
            raise ValueError(f"{path} names {len(names)} classes but the records hold label "
                             f"{needed - 1 + self.label_offset} (label_offset="
                             f"{self.label_offset}): {needed} classes needed.")
        return names

    def _parse(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(record, _FEATURES)
        return (features[IMAGE_KEY],
                tf.cast(features[LABEL_KEY] - self.label_offset, tf.int32))

    @staticmethod
    def _read(files: np.ndarray, input_context) -> tf.data.Dataset:
        num_pipelines, pipeline_id = pipeline(input_context)
        by_record = num_pipelines > 1 and len(files) < num_pipelines
        if num_pipelines > 1 and not by_record:
            files = files[pipeline_id::num_pipelines]
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), _MAX_CYCLE),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        if by_record:
            ds = ds.shard(num_pipelines, pipeline_id)
        return ds

    def _train_records(self, seed, epoch, input_context):
        files = np.array(self._train_files)
        files = files[permutation(len(files), seed, epoch, 0xF11E)]
        _, pipeline_id = pipeline(input_context)
        ds = self._read(files, input_context).shuffle(
            self.shuffle_buffer, seed=key(seed, epoch, pipeline_id, 3) >> 1,
            reshuffle_each_iteration=False)
        return ds.map(self._parse, num_parallel_calls=AUTOTUNE)

    def _eval_records(self, input_context):
        return self._read(np.array(self._val_files), input_context).map(
            self._parse, num_parallel_calls=AUTOTUNE)

    def _representative_records(self, n):
        return self._read(np.array(self._train_files), None).take(n).map(
            self._parse, num_parallel_calls=AUTOTUNE)

    def _num_records(self, train, input_context):
        # The load-time scan counted records, not images that decode: the eval length
        # stays unknown (a corrupt record is dropped, not replaced). Per file, the
        # counts are not kept.
        num_pipelines, _ = pipeline(input_context)
        if not train or (num_pipelines > 1 and len(self._train_files) >= num_pipelines):
            return None
        return records_in_part(self.num_train, input_context)
