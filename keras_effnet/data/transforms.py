"""Image preprocessing and augmentation ops: the official EfficientNet recipe, in-graph.

What a pipeline applies is an :class:`~keras_effnet.data.augment.Augment` record; this
module holds how.

Training (docs/reference.md §5): Inception crop (area 0.05-1.0 of the image, aspect
3/4-4/3, ``sample_distorted_bounding_box`` style, centre crop when sampling fails),
resize, horizontal flip, RandAugment (2 ops) per image, then MixUp or CutMix per batch.
Evaluation: centre crop of ``size / (size + 32)`` of the shorter side, then resize.
Both crop the image as displayed: a JPEG's EXIF orientation is applied (a phone photo
is upright), and a GIF is its first frame (:mod:`keras_effnet.data.headers`).

Every function takes pixels in [0, 255] and returns float32 pixels in [0, 255]; random
functions take an explicit stateless seed (an int64 ``[2]`` tensor) so a pipeline is a pure
function of its seeds (see ``seeding``).

Choices worth knowing:

* Resizing is bilinear with antialiasing (automl uses bicubic): bicubic overshoots
  [0, 255], and antialiasing matters when full-size photos shrink to 64-300 px.
* RandAugment is ``keras.layers.RandAugment``'s own ops and op choice, applied *per image*
  (Keras picks one op pair per call, so a batched call would give the whole batch the same
  ops) and computing only the two chosen ops (Keras computes all 11 and selects, several
  times slower). The automl magnitude maps linearly to Keras' normalised ``factor`` as
  ``factor = magnitude / 30`` (30 is the top of RandAugment's magnitude scale), so the V2
  schedule 5 -> 20 stays monotone without saturating. Keras' op ranges differ from
  automl's at equal "strength" (e.g. rotation up to ``factor * 360`` degrees, posterise
  keeps ``max(1, int(8 * factor))`` bits, so it gets *milder* as the factor grows); that is
  Keras' definition and we keep it rather than re-implement the ops.
* MixUp and CutMix are ``keras.layers.MixUp`` / ``keras.layers.CutMix`` on one-hot labels,
  with a fixed Beta(alpha, alpha); when both alphas are > 0, one of the two is picked per
  batch with probability 1/2 (as automl does). Keras' CutMix limits alpha to [0, 1].
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import keras
import tensorflow as tf

from keras_effnet.data import headers
from keras_effnet.data.seeding import SeedStream

__all__ = [
    "CROP_PADDING", "MAX_RANDAUG_MAGNITUDE", "INCEPTION_AREA_RANGE", "Mixer", "RandAugment",
    "center_crop_and_resize", "center_crop_side", "decode_and_center_crop",
    "decode_center_crop", "decode_rgb", "random_crop_and_resize", "randaug_factor",
]

CROP_PADDING = 32
INCEPTION_AREA_RANGE = (0.05, 1.0)
INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_RANDAUG_MAGNITUDE = 30.0

Window = Sequence[tf.Tensor]  # (offset_height, offset_width, height, width), int32 scalars


# --- crop windows -------------------------------------------------------------------

def _center_window(height: tf.Tensor, width: tf.Tensor, image_size: int) -> Window:
    """The official eval crop: a square of ``size / (size + 32)`` of the shorter side."""
    fraction = image_size / (image_size + CROP_PADDING)
    crop = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float64), tf.int32)
    crop = tf.maximum(crop, 1)  # tiny images would otherwise give an empty crop
    return ((height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop)


def _inception_window(shape: tf.Tensor, image_size: int, seed: tf.Tensor,
                      area_range: tuple[float, float]) -> Window:
    """Random crop as ``sample_distorted_bounding_box``; centre crop when sampling fails."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=INCEPTION_ASPECT_RANGE,
        area_range=area_range, max_attempts=10, use_image_if_no_bounding_boxes=True)
    sampled = (begin[0], begin[1], size[0], size[1])
    # After 10 failed attempts the op returns the whole image; automl then takes the
    # eval centre crop instead, and so do we.
    failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    center = _center_window(shape[0], shape[1], image_size)
    return tuple(tf.where(failed, c, s) for c, s in zip(center, sampled))


# --- decode + crop + resize ------------------------------------------------------------

def _decode_first_frame(image_bytes: tf.Tensor) -> tf.Tensor:
    # A GIF is cut after its first image: TensorFlow would decode every frame (and size
    # the canvas by the largest) to return the first. A WebP with alpha decodes only as
    # RGBA.
    image_bytes = headers.first_frame(image_bytes)
    image = tf.cond(
        headers.webp_alpha(image_bytes),
        lambda: tf.io.decode_image(image_bytes, channels=4, expand_animations=False)[..., :3],
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/BMP/GIF/WebP bytes to uint8 RGB ``[H, W, 3]`` as displayed: the
    first GIF frame only, a JPEG turned by its EXIF orientation, grayscale repeated to
    RGB, alpha dropped."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    orientation = headers.exif_orientation(image_bytes)
    image = _decode_first_frame(image_bytes)
    return tf.cond(tf.equal(orientation, 1), lambda: image,
                   lambda: headers.orient(image, orientation))


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    """An in-memory image with 1, 3 or 4 channels as 3-channel RGB (alpha dropped)."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    if channels == 3:
        return image
    raise ValueError(f"Images must have 1, 3 or 4 channels. Received shape {image.shape}")


def _crop(raw: tf.Tensor, window_fn: Callable[[tf.Tensor], Window],
          orientation: tf.Tensor | None = None) -> tf.Tensor:
    """Crop encoded bytes or an image tensor to ``window_fn(shape)``, in the image's dtype
    (uint8 for encoded bytes).

    JPEGs are decoded only inside the window (``decode_and_crop_jpeg``), as the official
    input pipelines do: much cheaper for full-size photos. The window is chosen on the
    image as displayed (EXIF orientation applied: ``orientation`` when the caller has read
    it, else read here), then mapped to the stored pixels.
    """
    if raw.dtype == tf.string:
        def jpeg():
            turn = headers.exif_orientation(raw) if orientation is None else orientation
            stored = tf.image.extract_jpeg_shape(raw)

            def upright():  # most files: no orientation to apply
                return tf.image.decode_and_crop_jpeg(raw, tf.stack(window_fn(stored)),
                                                     channels=3)

            def turned():
                window = window_fn(headers.oriented_shape(stored, turn))
                window = headers.stored_window(window, stored, turn)
                return headers.orient(
                    tf.image.decode_and_crop_jpeg(raw, tf.stack(window), channels=3),
                    turn)

            return tf.cond(tf.equal(turn, 1), upright, turned)

        def other():
            image = _decode_first_frame(raw)
            top, left, height, width = window_fn(tf.shape(image))
            return image[top:top + height, left:left + width]

        image = tf.cond(tf.io.is_jpeg(raw), jpeg, other)
    else:
        image = _to_rgb(raw)
        top, left, height, width = window_fn(tf.shape(image))
        image = image[top:top + height, left:left + width]
    image.set_shape([None, None, 3])
    return image


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """``[H, W, 3]`` pixels as float32 ``[image_size, image_size, 3]`` in [0, 255]
    (antialiased bilinear)."""
    pixels = tf.cast(image, tf.float32)

    def clip(x):
        return tf.clip_by_value(x, 0.0, 255.0)

    def resize():
        return clip(tf.image.resize(pixels, [image_size, image_size], method="bilinear",
                                    antialias=True))

    def as_is():  # uint8 (every decoded file) is in range already
        return tf.identity(pixels) if image.dtype == tf.uint8 else clip(pixels)

    # At scale 1 the antialiased bilinear resize is exactly the identity (each output
    # pixel sits on an input pixel's centre, where the triangle kernel is 1 and 0 at its
    # neighbours), yet its kernel costs ~1.4 ms at 224 px: three times the decode of a
    # JPEG sent at the eval size (short side size + 32, so its crop is already
    # image_size).
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(same, as_is, resize)
    image.set_shape([image_size, image_size, 3])
    return image


def center_crop_and_resize(image: tf.Tensor, image_size: int,
                           orientation: tf.Tensor | None = None) -> tf.Tensor:
    """Eval preprocessing of encoded bytes or an ``[H, W, C]`` image (C in 1, 3, 4):
    centre crop ``size / (size + 32)`` of the shorter side, resize to ``image_size``.
    Returns float32 ``[image_size, image_size, 3]`` in [0, 255]. ``orientation``: a JPEG's
    EXIF orientation when already read (``headers.exif_orientation`` of a whole batch)."""
    return _resize(_crop(image, lambda s: _center_window(s[0], s[1], image_size),
                         orientation), image_size)


def center_crop_side(height: tf.Tensor, width: tf.Tensor, image_size: int) -> tf.Tensor:
    """The side of the eval crop of ``height`` x ``width`` images (any shape of int32
    tensors): what :func:`center_crop_and_resize` resizes to ``image_size``."""
    return _center_window(height, width, image_size)[2]


def decode_center_crop(image_bytes: tf.Tensor, image_size: int,
                       orientation: tf.Tensor | None = None) -> tf.Tensor:
    """The eval crop of encoded bytes before its resize: uint8 ``[side, side, 3]``
    (:func:`center_crop_side`), which is what :func:`decode_and_center_crop` returns, as
    float32, when ``side`` is ``image_size``."""
    image_bytes = tf.convert_to_tensor(image_bytes, dtype=tf.string)
    return _crop(image_bytes, lambda s: _center_window(s[0], s[1], image_size), orientation)


def decode_and_center_crop(image_bytes: tf.Tensor, image_size: int,
                           orientation: tf.Tensor | None = None) -> tf.Tensor:
    """Serving/eval preprocessing: a scalar ``tf.string`` of JPEG/PNG/BMP/GIF/WebP bytes ->
    float32 ``[image_size, image_size, 3]`` in [0, 255].

    Usable inside a ``tf.function`` (e.g. a SavedModel serving signature). Bytes that are
    not a decodable image raise ``tf.errors.InvalidArgumentError`` when run.
    ``orientation``: its EXIF orientation, when the caller has read it (else read here).
    """
    image_bytes = tf.convert_to_tensor(image_bytes, dtype=tf.string)
    return center_crop_and_resize(image_bytes, image_size, orientation)


def random_crop_and_resize(image: tf.Tensor, image_size: int, seed: tf.Tensor,
                           area_range: tuple[float, float] = INCEPTION_AREA_RANGE
                           ) -> tf.Tensor:
    """Training crop of encoded bytes or an image: Inception crop, then resize.
    Returns float32 ``[image_size, image_size, 3]`` in [0, 255]."""
    return _resize(_crop(image, lambda s: _inception_window(s, image_size, seed, area_range)),
                   image_size)


# --- RandAugment ------------------------------------------------------------------------

def randaug_factor(magnitude: float) -> float:
    """automl RandAugment magnitude -> ``keras.layers.RandAugment`` factor in [0, 1]."""
    return min(max(float(magnitude), 0.0) / MAX_RANDAUG_MAGNITUDE, 1.0)


class _SeedBox:
    """Holds the stream for the call being traced; a plain object so Keras' attribute
    tracking leaves it alone (it would adopt a ``SeedGenerator`` as layer state)."""

    stream: SeedStream | None = None


class RandAugment(keras.layers.RandAugment):
    """``keras.layers.RandAugment`` for one image at a time, with a stateless seed.

    Use ``augment(image, seed)`` inside ``tf.data``: Keras draws the op pair and every op's
    parameters exactly as ``RandAugment`` does (from ``seed`` instead of the layer's
    variable-backed generator), and only the two chosen ops run (``tf.switch_case``).
    """

    def __init__(self, magnitude: float, num_ops: int = 2, **kwargs):
        if not magnitude > 0:
            raise ValueError(f"magnitude must be > 0. Received: magnitude={magnitude}")
        if num_ops < 1:
            raise ValueError(f"num_ops must be >= 1. Received: num_ops={num_ops}")
        # float32 whatever the global policy: a mixed-precision trainer must not turn the
        # input pipeline into float16.
        kwargs.setdefault("dtype", "float32")
        super().__init__(value_range=(0, 255), num_ops=num_ops,
                         factor=randaug_factor(magnitude), **kwargs)
        self.magnitude = float(magnitude)
        self._seed_box = _SeedBox()

    def get_config(self) -> dict:
        # Our constructor's arguments, not keras.layers.RandAugment's (value_range and
        # factor are derived here), so from_config round-trips.
        config = super().get_config()
        for derived in ("value_range", "factor", "interpolation", "seed", "data_format"):
            config.pop(derived, None)
        config["magnitude"] = self.magnitude
        return config

    def _get_seed_generator(self, backend=None):
        stream = self._seed_box.stream
        return stream if stream is not None else super()._get_seed_generator(backend)

    def augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Apply ``num_ops`` random ops to a float32 ``[H, W, 3]`` image in [0, 255]."""
        batch = image[None]
        self._seed_box.stream = SeedStream(seed)
        try:
            transformation = self.get_random_transformation(batch, training=True)
        finally:
            self._seed_box.stream = None
        transforms = transformation["transforms"]
        op_indices = tf.cast(transformation["layer_idxes"], tf.int32)

        def body(i, x):
            # A loop rather than unrolling: the 11 op branches are traced once, not
            # num_ops times (tracing dominates the cost of building the pipeline).
            branches = [functools.partial(self._apply_op, name, transforms[name], x)
                        for name in transforms]
            return i + 1, tf.switch_case(op_indices[i], branches)

        _, batch = tf.while_loop(lambda i, _: i < self.num_ops, body, (tf.constant(0), batch))
        out = tf.clip_by_value(batch[0], 0.0, 255.0)
        out.set_shape(image.shape)
        return out

    def _apply_op(self, name: str, transformation, batch: tf.Tensor) -> tf.Tensor:
        out = getattr(self, name).transform_images(batch, transformation, training=True)
        return tf.reshape(tf.cast(out, tf.float32), tf.shape(batch))


# --- MixUp / CutMix ---------------------------------------------------------------------

class Mixer:
    """MixUp and/or CutMix on a batch of images and one-hot labels, stateless per batch."""

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0. Received: mixup_alpha={mixup_alpha}")
        if not 0 <= cutmix_alpha <= 1:
            raise ValueError("cutmix_alpha must be in [0, 1] (keras.layers.CutMix's bound). "
                             f"Received: cutmix_alpha={cutmix_alpha}")
        self.mixup = (keras.layers.MixUp(alpha=float(mixup_alpha), dtype="float32")
                      if mixup_alpha > 0 else None)
        # factor=(a, a) makes Keras sample its Beta alpha from U(a, a), i.e. a fixed alpha.
        self.cutmix = (keras.layers.CutMix(factor=(float(cutmix_alpha),) * 2, dtype="float32")
                       if cutmix_alpha > 0 else None)

    @property
    def active(self) -> bool:
        """Whether MixUp or CutMix is on."""
        return self.mixup is not None or self.cutmix is not None

    def __call__(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(seed, 3)

        def apply(layer, layer_seed):
            data = {"images": images, "labels": labels}
            t = layer.get_random_transformation(data, training=True,
                                                seed=SeedStream(layer_seed))
            mixed = layer.transform_images(images, t, training=True)
            return (tf.ensure_shape(tf.cast(mixed, tf.float32), images.shape),
                    tf.ensure_shape(tf.cast(layer.transform_labels(labels, t), tf.float32),
                                    labels.shape))

        if self.mixup is not None and self.cutmix is not None:
            use_mixup = tf.random.stateless_uniform([], seeds[0]) < 0.5
            return tf.cond(use_mixup, lambda: apply(self.mixup, seeds[1]),
                           lambda: apply(self.cutmix, seeds[2]))
        if self.mixup is not None:
            return apply(self.mixup, seeds[1])
        if self.cutmix is not None:
            return apply(self.cutmix, seeds[2])
        return images, labels
