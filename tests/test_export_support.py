"""Shared pieces for the export tests: tiny models and one briefly trained lite-like model.

The trained model is cached per process (``functools.lru_cache``), so test_tflite.py and
test_prune.py share one ~15 s training run when they run in the same process.
"""

from __future__ import annotations

import functools

import numpy as np

TINY_ARCH = ["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e4_i8_o16_se0.25"]
# Lite-like (ReLU6, no SE, lite preprocessing) and, like the real lite models, with most
# weights in 1x1 convolutions: what int8 and pruning are meant for.
LITE_ARCH = ["r1_k3_s1_e1_i16_o16", "r1_k3_s2_e6_i16_o48", "r1_k3_s2_e6_i48_o128"]
LITE_HEAD = 512
DIGITS_SIZE = 16


def tiny_model(size: int | None = 32, classes: int = 10, name: str = "tiny"):
    """A ~3k-parameter random-init model (fused + SE blocks) at ``size`` px."""
    import keras_effnet
    shape = (size, size, 3) if size else (None, None, 3)
    return keras_effnet.build(arch=TINY_ARCH, classes=classes, input_shape=shape, name=name)


def lite_variant():
    from keras_effnet.variants import custom_variant
    return custom_variant(LITE_ARCH, base="efficientnet-lite0", name="lite-tiny",
                          head_filters=LITE_HEAD, dropout=0.0, drop_path_rate=0.0,
                          bn_momentum=0.9)


@functools.lru_cache(maxsize=None)
def digits(size: int = DIGITS_SIZE):
    """scikit-learn digits as RGB pixels in [0, 255] at ``size`` px: a fixed split of
    (train images, train labels, held-out images, held-out labels)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    data = load_digits()
    images = data.images.astype(np.float32)[..., None] * np.float32(255.0 / 16.0)
    images = tf.image.resize(images, [size, size], method="bilinear").numpy()
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(images))
    train, held_out = order[:1400], order[1400:]
    return (images[train], data.target[train].astype(np.int32),
            images[held_out], data.target[held_out].astype(np.int32))


@functools.lru_cache(maxsize=None)
def trained_lite(epochs: int = 6):
    """The lite-like model trained briefly on digits (~98 % held-out top-1)."""
    import keras

    import keras_effnet
    keras.utils.set_random_seed(0)
    x, y, _, _ = digits()
    model = keras_effnet.build(lite_variant(), classes=10,
                               input_shape=(DIGITS_SIZE, DIGITS_SIZE, 3))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  jit_compile=False)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def png_header_only(height: int, width: int) -> bytes:
    """A ~60-byte PNG whose header claims ``height x width`` pixels (a decompression bomb's
    first bytes), with one tiny, invalid data chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def top1(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, -1) == labels))


def make_run_dir(path, model, variant, eval_image_size: int, dataset: str = "digits",
                 class_names=None):
    """A directory laid out like a finished training run (the trainer's contract)."""
    from keras_effnet.run_dir import RunConfig, RunDir
    run = RunDir(path)
    run.save_model(model)
    classes = int(model.output_shape[-1])
    class_names = class_names or [str(i) for i in range(classes)]
    run.write_labels(class_names)
    run.write_config(RunConfig(model=variant.name, variant=variant.to_dict(), dataset=dataset,
                               num_classes=classes, class_names=tuple(class_names),
                               eval_image_size=eval_image_size))
    return run.path
