"""Shared pieces for the trainer tests: a tiny in-memory source and a tiny model.

``ArraySource`` follows the ``keras_effnet.data`` source contract (``train_dataset`` /
``eval_dataset``, deterministic order from ``(seed, epoch)``, sharding and per-pipeline
batch from ``input_context``) with a synthetic, easily learnt task, so the trainer can be
tested without the real pipelines and in seconds.
"""

from __future__ import annotations

import numpy as np

TINY_ARCH = "r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25"


def tiny_config(model_dir, **overrides):
    """A TrainConfig for a ~25k-parameter model at 8-16 px that trains in seconds."""
    from keras_effnet.train import TrainConfig
    base = dict(model=TINY_ARCH, dataset="array", model_dir=str(model_dir), epochs=2,
                stages=2, batch_size=8, image_size=16, min_image_size=8, verbose=1,
                seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def _make_images(n: int, classes: int, size: int, rng: np.random.Generator):
    # Class k: a bright horizontal band at rows [k*size/classes, (k+1)*size/classes).
    labels = np.arange(n) % classes
    images = rng.uniform(0, 60, size=(n, size, size, 3)).astype(np.float32)
    band = size // classes
    for i, k in enumerate(labels):
        images[i, k * band:(k + 1) * band] += 180.0
    return np.clip(images, 0, 255), labels.astype(np.int32)


class ArraySource:
    """In-memory source: ``num_train`` + ``num_val`` synthetic images of ``classes``."""

    name = "array"

    def __init__(self, num_train: int = 64, num_val: int = 24, classes: int = 4,
                 size: int = 16, nan_batch: tuple[int, int] | None = None, seed: int = 0):
        rng = np.random.default_rng(seed)
        images, labels = _make_images(num_train + num_val, classes, size, rng)
        self._train = (images[:num_train], labels[:num_train])
        self._val = (images[num_train:], labels[num_train:])
        self.class_names = [f"class_{k}" for k in range(classes)]
        self.num_train, self.num_val = num_train, num_val
        self.skipped = []
        self.nan_batch = nan_batch  # (epoch, batch index): poison that batch with NaN
        self.calls = []  # every train_dataset call's arguments, in order

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _pipeline(self, input_context, batch_size):
        if input_context is None:
            return 1, 0, batch_size
        return (input_context.num_input_pipelines, input_context.input_pipeline_id,
                input_context.get_per_replica_batch_size(batch_size))

    def train_dataset(self, image_size, batch_size, augment=None, seed=0, epoch=0,
                      input_context=None, drop_remainder=True):
        import tensorflow as tf
        self.calls.append(dict(image_size=image_size, batch_size=batch_size,
                               augment=augment, seed=seed, epoch=epoch))
        pipelines, pipeline_id, per_batch = self._pipeline(input_context, batch_size)
        order = np.random.default_rng([seed, epoch]).permutation(self.num_train)
        order = order[pipeline_id::pipelines]
        images = self._train[0][order]
        labels = np.eye(self.num_classes, dtype=np.float32)[self._train[1][order]]
        if self.nan_batch is not None and self.nan_batch[0] == epoch:
            start = self.nan_batch[1] * per_batch
            images = images.copy()
            images[start:start + per_batch] = np.nan
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        ds = ds.map(lambda x, y: (tf.image.resize(x, [image_size, image_size]), y))
        return ds.batch(per_batch, drop_remainder=drop_remainder)

    def representative_images(self, n, image_size):
        import tensorflow as tf
        return tf.image.resize(self._train[0][:n], [image_size, image_size]).numpy()

    def eval_dataset(self, image_size, batch_size, input_context=None):
        import tensorflow as tf
        pipelines, pipeline_id, per_batch = self._pipeline(input_context, batch_size)
        images = self._val[0][pipeline_id::pipelines]
        labels = np.eye(self.num_classes, dtype=np.float32)[self._val[1][pipeline_id::pipelines]]
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        ds = ds.map(lambda x, y: (tf.image.resize(x, [image_size, image_size]), y))
        return ds.batch(per_batch)


def model_weights(model) -> list[np.ndarray]:
    return [np.array(v) for v in model.weights]
