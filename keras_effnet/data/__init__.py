"""Input pipelines: labelled image sources and the EfficientNet augmentation recipe.

``get_source(name)`` returns a ``Source`` ("digits", "folder", "tfrecord", "tfds:<name>")
whose ``train_dataset`` / ``eval_dataset`` are parallel, prefetched ``tf.data`` pipelines
yielding float32 pixels in [0, 255] (the models normalise internally) and float32 one-hot
labels. ``decode_and_center_crop`` is the eval preprocessing for serving signatures.
"""

from keras_effnet.data.augment import (Mixer, RandAugment, center_crop_and_resize,
                                       decode_and_center_crop, random_crop_and_resize,
                                       randaug_factor)
from keras_effnet.data.base import Source
from keras_effnet.data.digits import DigitsSource
from keras_effnet.data.folder import IMAGE_EXTENSIONS, FolderSource, check_image_file
from keras_effnet.data.sources import SOURCE_NAMES, get_source
from keras_effnet.data.tfds import TFDSSource
from keras_effnet.data.tfrecord import TFRecordSource, make_example, write_tfrecord

__all__ = [
    "DigitsSource", "FolderSource", "IMAGE_EXTENSIONS", "Mixer", "RandAugment",
    "SOURCE_NAMES", "Source", "TFDSSource", "TFRecordSource", "center_crop_and_resize",
    "check_image_file", "decode_and_center_crop", "get_source", "make_example",
    "random_crop_and_resize", "randaug_factor", "write_tfrecord",
]
