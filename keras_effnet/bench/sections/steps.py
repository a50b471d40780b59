"""Train steps and batches the timing sections share, and the cache that lets one section
reuse another's traced step.

TensorFlow and Keras are imported inside the functions: the section registry is imported
by ``keras_effnet.bench.config``, which must stay light.
"""

from __future__ import annotations

import gc
from typing import Any, Callable, NamedTuple

__all__ = ["clear_session", "train_step", "random_batch", "repeat_step", "StepKey",
           "TracedStep", "TracedSteps"]


# (model, image size, batch, classes)
StepKey = tuple[str, int, int, int]


def clear_session() -> None:
    """``keras.backend.clear_session()`` and a garbage collection, between models."""
    import keras
    keras.backend.clear_session()
    gc.collect()


def train_step(model: Any, jit: bool, loss_scale: bool = False,
               fused: bool = False) -> Callable:
    """A compiled train step ``step(images, labels) -> loss``: forward, categorical
    cross-entropy, gradient, ``RMSprop.apply`` (under a LossScaleOptimizer when
    ``loss_scale``). With ``fused``, BatchNorm's training pass and the RMSProp update are
    the fused ops keras_effnet's trainer traces (:mod:`keras_effnet.train.fused_bn`,
    :mod:`keras_effnet.train.fused_rmsprop`)."""
    import contextlib

    import keras
    import tensorflow as tf

    from keras_effnet.train.fused_bn import fused_batchnorm
    from keras_effnet.train.fused_rmsprop import rmsprop
    optimizer = (rmsprop if fused else keras.optimizers.RMSprop)(
        learning_rate=1e-3, rho=0.9, momentum=0.9, epsilon=1e-3)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function(jit_compile=jit, autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape, (fused_batchnorm(model) if fused
                                         else contextlib.nullcontext()):
            probs = model(images, training=True)
            loss = loss_fn(labels, tf.cast(probs, tf.float32))
            scaled = optimizer.scale_loss(loss) if loss_scale else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return loss
    return step


def random_batch(batch: int, size: int, classes: int, seed: int) -> tuple[Any, Any]:
    """``(images, one-hot labels)``: uniform pixels in [0, 255], seeded."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.one_hot(rng.integers(0, classes, batch), classes)
    return images, labels


def repeat_step(step: Callable, images: Any, labels: Any, n: int) -> Callable[[], float]:
    """A no-argument function running ``step`` ``n`` times and waiting for the device."""
    def run() -> float:
        loss = None
        for _ in range(n):
            loss = step(images, labels)
        return float(loss)  # waits for the device
    return run


class TracedStep(NamedTuple):
    """A traced train step with the model and the batch it runs on."""

    step: Callable
    images: Any
    labels: Any
    model: Any


class TracedSteps:
    """keras_effnet train steps (no XLA) traced in one benchmark run, by :data:`StepKey`.

    Tracing a step costs tens of seconds on a small CPU, so a section that will reuse
    an earlier section's step reserves its key (in its ``prepare``); :meth:`trim` drops
    every step nobody reserved, so models do not pile up in memory.
    """

    def __init__(self) -> None:
        self._steps: dict[StepKey, TracedStep] = {}
        self._reserved: set[StepKey] = set()

    def reserve(self, key: StepKey) -> None:
        """Keeps the step of ``key`` once built, for a later section."""
        self._reserved.add(key)

    def get(self, key: StepKey, seed: int) -> TracedStep:
        """The step of ``key``, built and traced on first use."""
        if key not in self._steps:
            import keras_effnet
            name, size, batch, classes = key
            model = keras_effnet.build(name, classes=classes, input_shape=(size, size, 3))
            images, labels = random_batch(batch, size, classes, seed)
            self._steps[key] = TracedStep(train_step(model, jit=False), images, labels, model)
        return self._steps[key]

    def trim(self) -> None:
        """Drops the steps no later section reserved."""
        for key in [k for k in self._steps if k not in self._reserved]:
            del self._steps[key]

    def release(self, key: StepKey) -> None:
        """Drops ``key``'s step and its reservation (its last user is done)."""
        self._reserved.discard(key)
        self._steps.pop(key, None)

    def clear(self) -> None:
        """Drops every step and reservation."""
        self._steps.clear()
        self._reserved.clear()
