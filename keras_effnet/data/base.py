"""``Source``: one labelled image dataset and its train / eval ``tf.data`` pipelines.

A source only says where its (image, integer label) records come from, in which order and
for which input pipeline; this module turns those records into batches, identically for
every source:

train: records (shuffled from ``(seed, epoch)``, sharded) -> Inception crop (or the eval
centre crop: ``Augment.crop_area_range``) + resize -> flip -> RandAugment -> one-hot ->
batch -> MixUp/CutMix -> prefetch. One pass, no repeat.
eval:  records (in order, sharded) -> centre crop + resize -> one-hot -> batch -> prefetch.

Length: where a source knows how many records a pass holds, the dataset says so
(``cardinality()`` is the number of batches), so ``model.fit`` shows real progress and
pruning knows its steps: always for the folder and the embedded sets (their images were
decoded at load time or are in memory); for the training split of TFRecord and TFDS
unless each pipeline reads whole files (their eval length counts records, not images
that decode, so it is left unknown rather than padded). A
record whose image fails to decode in the pipeline is dropped (logged by tf.data) and the
pass made up to its length from its start, so a file that broke after the load-time scan
costs one repeated image, not the epoch's length.

Every random draw derives from ``(seed, epoch, input pipeline, position)``, so two calls with
the same arguments yield identical batches, and ``ds.skip(n)`` resumes at batch ``n``.

Batch size: ``batch_size`` is always the GLOBAL batch. Without an ``input_context`` the
dataset yields batches of ``batch_size``; with one (``tf.distribute`` /
``distribute_datasets_from_function``), each input pipeline yields per-replica batches of
``input_context.get_per_replica_batch_size(batch_size)``, as that API expects.

Sharding: with an ``input_context``, pipeline ``i`` of ``n`` reads a disjoint part of the
data and all parts together cover it exactly once per epoch (by file for TFRecord shards
when there are at least ``n`` files, else by record). Parts can differ by one record, so a
multi-worker trainer should fix ``steps_per_epoch`` rather than rely on end of data.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import tensorflow as tf

from keras_effnet.data import transforms
from keras_effnet.data.augment import Augment
from keras_effnet.data.seeding import permutation, tf_key

__all__ = ["Source", "IndexedSource", "pipeline", "records_in_part", "AUTOTUNE", "logger"]

logger = logging.getLogger("keras_effnet.data")

AUTOTUNE = tf.data.AUTOTUNE


def _check_positive_int(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")


def pipeline(input_context: tf.distribute.InputContext | None) -> tuple[int, int]:
    """(number of input pipelines, this pipeline's id); (1, 0) without a context."""
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def records_in_part(total: int, input_context: tf.distribute.InputContext | None) -> int:
    """Records this pipeline reads of ``total`` when pipelines take every n-th record."""
    num_pipelines, pipeline_id = pipeline(input_context)
    return len(range(pipeline_id, total, num_pipelines))


def _pipeline_batch_size(batch_size: int,
                         input_context: tf.distribute.InputContext | None) -> int:
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _with_length(ds: tf.data.Dataset, count: int | None) -> tf.data.Dataset:
    """``ds`` with a known length of ``count`` records (None: left as it is). A pass that
    comes up short (a record dropped by ``ignore_errors``) is made up from its start
    (the same order: records are ordered before this), where an asserted length would
    fail the epoch; an input that yields nothing ends (``repeat`` stops on an empty pass).
    """
    if count is None or int(ds.cardinality()) == count:
        return ds
    return ds.repeat().take(count)


def _deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
    # Explicit, so a global `experimental_deterministic = False` elsewhere cannot reorder
    # parallel map outputs and break resume-by-skip.
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


# The per-image and per-batch functions are tf.functions cached on their configuration: a
# trainer rebuilding its dataset every epoch (new epoch seed, progressive image size) then
# traces RandAugment's graph once per configuration instead of once per epoch (seconds
# each). Seeds are arguments, not captured constants, so one trace serves every epoch.

@functools.lru_cache(maxsize=64)
def _train_image_fn(image_size: int, randaug_magnitude: float, flip: bool,
                    area_range: tuple[float, float] | None, num_classes: int):
    randaug = transforms.RandAugment(randaug_magnitude) if randaug_magnitude > 0 else None

    @tf.function(reduce_retracing=True)
    def one(image_key, index, image, label):
        seeds = tf.random.experimental.stateless_split(tf.stack([image_key, index]), 3)
        if area_range is None:  # no random crop: the view evaluation sees
            image = transforms.center_crop_and_resize(image, image_size)
        else:
            image = transforms.random_crop_and_resize(image, image_size, seeds[0],
                                                      area_range)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        if randaug is not None:
            image = randaug.augment(image, seeds[2])
        return image, tf.one_hot(label, num_classes, dtype=tf.float32)
    return one


@functools.lru_cache(maxsize=64)
def _mix_fn(mixup_alpha: float, cutmix_alpha: float):
    mixer = transforms.Mixer(mixup_alpha, cutmix_alpha)  # validates the alphas
    if not mixer.active:
        return None
    return tf.function(mixer.__call__, reduce_retracing=True)


@functools.lru_cache(maxsize=64)
def _eval_image_fn(image_size: int, num_classes: int):
    @tf.function(reduce_retracing=True)
    def one(image, label):
        return (transforms.center_crop_and_resize(image, image_size),
                tf.one_hot(label, num_classes, dtype=tf.float32))
    return one


class Source:
    """A labelled image dataset with a fixed train / validation split.

    Attributes: ``name``, ``class_names``, ``num_classes``, ``num_train``, ``num_val``
    (after skipping bad files), ``skipped`` (list of ``(path, reason)``, empty when nothing
    was skipped). Subclasses implement ``_train_records``, ``_eval_records`` and
    ``_representative_records``.
    """

    name: str = "source"
    #: Horizontal flip when ``train_dataset(flip=None)``.
    default_flip: bool = True
    #: The Inception crop's area range (fraction of the image) when the Augment record
    #: says ``crop_area_range="source"`` (its default; the recipe's).
    crop_area_range: tuple[float, float] = transforms.INCEPTION_AREA_RANGE
    #: Drop records whose image fails to decode in the pipeline (logged by tf.data)
    #: instead of stopping the run: files can break after the load-time scan, and
    #: TFRecord shards are not scanned image by image.
    tolerate_decode_errors: bool = True

    def __init__(self) -> None:
        self.class_names: list[str] = []
        self.num_train: int = 0
        self.num_val: int = 0
        self.skipped: list[tuple[str, str]] = []

    @property
    def num_classes(self) -> int:
        """Number of classes (the classifier's width)."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, num_classes={self.num_classes}, "
                f"num_train={self.num_train}, num_val={self.num_val}, "
                f"skipped={len(self.skipped)})")

    # --- hooks ----------------------------------------------------------------------

    def _train_records(self, seed: int, epoch: int,
                       input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
        """One pass of ``(image, label)`` for this input pipeline, shuffled from
        ``(seed, epoch)``: ``image`` is encoded bytes or an ``[H, W, C]`` tensor in [0, 255],
        ``label`` an integer in ``[0, num_classes)``."""
        raise NotImplementedError

    def _eval_records(self, input_context: tf.distribute.InputContext | None
                      ) -> tf.data.Dataset:
        """Validation ``(image, label)`` records for this input pipeline, in a fixed order."""
        raise NotImplementedError

    def _representative_records(self, n: int) -> tf.data.Dataset:
        """Up to ``n`` training ``(image, label)`` records, the same on every call."""
        raise NotImplementedError

    def _num_records(self, train: bool,
                     input_context: tf.distribute.InputContext | None) -> int | None:
        """How many records one pass of this input pipeline yields (of the training split
        when ``train``, else of the validation split), or None when not known. An eval
        count must be of images known to decode: a stand-in for a dropped one would be
        evaluated."""
        return None

    # --- pipelines --------------------------------------------------------------------

    def train_dataset(self, image_size: int = 64, batch_size: int = 32,
                      augment: Augment = Augment(), seed: int = 0, epoch: int = 0,
                      input_context: tf.distribute.InputContext | None = None,
                      drop_remainder: bool = True, flip: bool | None = None
                      ) -> tf.data.Dataset:
        """One shuffled, augmented pass over the training split.

        Yields ``(images, labels)``: float32 ``[B, image_size, image_size, 3]`` in [0, 255]
        and float32 one-hot (or mixed) ``[B, num_classes]`` rows summing to 1.
        ``batch_size`` is the global batch (see the module docstring for
        ``input_context``). ``augment`` says which crop / RandAugment / MixUp / CutMix to
        apply (default ``Augment()``: the source's Inception crop, RandAugment 5, no
        mixing; ``Augment.none()``: the eval centre crop and nothing else);
        ``flip=None`` uses the source's ``default_flip``. ``cardinality()`` is the number
        of batches when the source knows its length (see the module docstring).
        """
        _check_positive_int(image_size=image_size, batch_size=batch_size)
        if not isinstance(augment, Augment):
            raise TypeError("augment must be a keras_effnet.data.Augment, e.g. "
                            f"Augment(randaug_magnitude=10.0). Received: augment={augment!r}")
        if self.num_train == 0:
            raise ValueError(f"Source {self.name!r} has no training images.")
        pipeline_batch = _pipeline_batch_size(batch_size, input_context)
        _, pipeline_id = pipeline(input_context)
        flip = self.default_flip if flip is None else bool(flip)
        # Keyed on the parts each function uses: a new mixup alpha does not retrace
        # RandAugment, a new magnitude does not rebuild the mixer.
        one = _train_image_fn(int(image_size), augment.randaugment, flip,
                              augment.area_range(self.crop_area_range), self.num_classes)
        mix = _mix_fn(float(augment.mixup_alpha), float(augment.cutmix_alpha))
        image_key = tf_key(seed, epoch, pipeline_id, 1)
        batch_key = tf_key(seed, epoch, pipeline_id, 2)

        ds = self._train_records(seed, epoch, input_context).enumerate()
        ds = ds.map(lambda index, record: one(image_key, index, *record),
                    num_parallel_calls=AUTOTUNE)
        if self.tolerate_decode_errors:
            ds = ds.ignore_errors(log_warning=True)
        ds = _with_length(ds, self._num_records(True, input_context))
        ds = ds.batch(pipeline_batch, drop_remainder=drop_remainder,
                      num_parallel_calls=AUTOTUNE)
        if mix is not None:
            ds = ds.enumerate().map(
                lambda index, batch: mix(batch[0], batch[1], tf.stack([batch_key, index])),
                num_parallel_calls=AUTOTUNE)
        return _deterministic(ds.prefetch(AUTOTUNE))

    def eval_dataset(self, image_size: int = 64, batch_size: int = 32,
                     input_context: tf.distribute.InputContext | None = None
                     ) -> tf.data.Dataset:
        """The validation split, in order, centre-cropped and resized; last batch kept.

        Yields float32 ``[B, image_size, image_size, 3]`` in [0, 255] and one-hot float32
        ``[B, num_classes]``. ``batch_size`` is global, as in ``train_dataset``;
        ``cardinality()`` as there.
        """
        _check_positive_int(image_size=image_size, batch_size=batch_size)
        if self.num_val == 0:
            raise ValueError(f"Source {self.name!r} has no validation images; add some "
                             "(see its docstring for the expected layout) or skip eval.")
        pipeline_batch = _pipeline_batch_size(batch_size, input_context)
        ds = self._eval_records(input_context).map(self._eval_map(image_size),
                                                   num_parallel_calls=AUTOTUNE)
        if self.tolerate_decode_errors:
            ds = ds.ignore_errors(log_warning=True)
        ds = _with_length(ds, self._num_records(False, input_context))
        ds = ds.batch(pipeline_batch, drop_remainder=False, num_parallel_calls=AUTOTUNE)
        return _deterministic(ds.prefetch(AUTOTUNE))

    def representative_images(self, n: int = 100, image_size: int = 64) -> np.ndarray:
        """Up to ``n`` training images with eval preprocessing, float32 ``[n, H, W, 3]`` in
        [0, 255]: the same images on every call (for int8 calibration)."""
        _check_positive_int(n=n, image_size=image_size)
        if n > self.num_train:
            logger.warning("%s: asked for %d representative images, the train split has %d.",
                           self.name, n, self.num_train)
        ds = self._representative_records(n).map(self._eval_map(image_size),
                                                 num_parallel_calls=AUTOTUNE)
        if self.tolerate_decode_errors:
            ds = ds.ignore_errors(log_warning=True)
        images = [images.numpy() for images, _ in _deterministic(ds.batch(n))]
        if not images:
            return np.zeros((0, image_size, image_size, 3), np.float32)
        return np.concatenate(images).astype(np.float32)

    def _eval_map(self, image_size: int):
        return _eval_image_fn(int(image_size), self.num_classes)


class IndexedSource(Source):
    """A source whose records are rows of arrays held in memory (pixels or file paths):
    the order, shard and split are chosen in numpy, deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self._items: np.ndarray = np.zeros((0,))
        self._labels: np.ndarray = np.zeros((0,), np.int32)
        self._train_idx: np.ndarray = np.zeros((0,), np.int64)
        self._val_idx: np.ndarray = np.zeros((0,), np.int64)

    def _load(self, item: tf.Tensor) -> tf.Tensor:
        """Row -> image bytes or pixels (identity for in-memory pixels)."""
        return item

    def _finish_split(self) -> None:
        self.num_train, self.num_val = len(self._train_idx), len(self._val_idx)

    def _records_for(self, indices: np.ndarray,
                     input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
        num_pipelines, pipeline_id = pipeline(input_context)
        indices = indices[pipeline_id::num_pipelines]
        ds = tf.data.Dataset.from_tensor_slices((self._items[indices],
                                                 self._labels[indices].astype(np.int32)))
        return ds.map(lambda item, label: (self._load(item), label))

    def _train_records(self, seed, epoch, input_context):
        order = self._train_idx[permutation(len(self._train_idx), seed, epoch, 0x5EED)]
        return self._records_for(order, input_context)

    def _eval_records(self, input_context):
        return self._records_for(self._val_idx, input_context)

    def _representative_records(self, n):
        order = self._train_idx[permutation(len(self._train_idx), 0xCA1B)][:n]
        return self._records_for(order, None)

    def _num_records(self, train, input_context):
        # Every row was decoded at load time (folder) or is pixels in memory.
        return records_in_part(self.num_train if train else self.num_val, input_context)
