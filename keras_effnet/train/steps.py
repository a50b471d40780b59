"""The training state and the traced steps that update and measure it.

:func:`build_state` makes the model, the RMSProp optimizer with its LR schedule, the
counters and the EMA (docs/reference.md §5; the RMSProp update is one op per variable,
:mod:`keras_effnet.train.fused_rmsprop`); :func:`make_train_step` and
:func:`make_eval_step` are the ``tf.function``\\ s run by ``strategy.run`` under every
strategy (see ``trainer.py`` for why one custom loop). The train and recalibration steps
trace BatchNorm's training pass as one fused op (:mod:`keras_effnet.train.fused_bn`).

Traces: dropout and drop-path rates are variables the step reads at run time
(:mod:`keras_effnet.train.dropout_rates`), so the trainer keeps one train step per freeze
mode; :func:`relax_shapes` lets that one trace serve every image size.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

from keras_effnet.builder import CLASSIFIER_LAYER, DROPOUT_LAYER
from keras_effnet.train.dropout_rates import DropoutRates
from keras_effnet.train.fused_bn import fused_batchnorm
from keras_effnet.train.fused_rmsprop import rmsprop

__all__ = ["TrainState", "build_state", "make_train_step", "make_eval_step",
           "make_recalibrate_step", "recalibration_count", "statistics_restored",
           "rank_of_target",
           "relax_shapes", "dropout_rate"]

# BatchNorm recalibration ("precise BN") uses at most this many training images, and at
# most this many bytes of float32 pixels held at once.
RECALIBRATION_IMAGES = 1024
_RECALIBRATION_BYTES = 256 * 2**20


@dataclasses.dataclass
class TrainState:
    """The model and everything a checkpoint saves with it.

    ``decayed`` are the kernels under weight decay (not BatchNorm's gamma/beta nor
    biases: every 1-D variable is left out); ``moving_stats`` the BatchNorm moving
    statistics averaged across replicas; ``rng_states`` Keras' dropout / drop-path RNG
    states, which Keras leaves out of tf.train checkpoints; ``dropout_rates`` the rates
    the train step reads (:class:`~keras_effnet.train.dropout_rates.DropoutRates`; set per
    stage, not checkpointed: a resumed run sets its stage's again).
    """

    model: Any
    optimizer: Any
    schedule: Any
    step: Any
    epoch: Any
    batch_in_epoch: Any
    ema: Any
    decayed: list
    moving_stats: list
    rng_states: list
    dropout_rates: Any = None

    def checkpoint_objects(self) -> dict[str, Any]:
        """The trackables a resumed run needs, for ``tf.train.Checkpoint``."""
        objects = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                       epoch=self.epoch, batch_in_epoch=self.batch_in_epoch,
                       rng_states=self.rng_states)
        if self.ema is not None:
            objects["ema"] = self.ema.averages
        return objects


def build_state(variant: Any, *, classes: int, dropout: float, schedule_kwargs: dict,
                precision: str, strategy: Any, seed: int, ema_decay: float,
                zero_init_head: bool = True, sync_batchnorm: bool = False,
                lr_phase: tuple[int, float] | None = None) -> TrainState:
    """Builds the model (head ``dropout``: the plan's largest rate, so the layer exists),
    the optimizer and counters under ``strategy``, and the EMA when ``ema_decay > 0``.

    The optimizer is built over every variable of the model, all trainable here, so it
    holds the same slots whatever a fine-tuning run freezes later. ``lr_phase``
    ``(step, factor)`` multiplies the learning rate by ``factor`` from ``step`` on.
    """
    import keras
    import tensorflow as tf

    from keras_effnet.builder import build
    from keras_effnet.train.ema import WeightEMA
    from keras_effnet.train.lr_schedule import WarmupDecaySchedule

    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build(variant, input_shape=(None, None, 3), classes=classes,
                      dropout=dropout)
        if zero_init_head:
            kernel = model.get_layer(CLASSIFIER_LAYER).kernel
            kernel.assign(tf.zeros(kernel.shape, kernel.dtype))
        if sync_batchnorm:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        schedule = WarmupDecaySchedule(**schedule_kwargs)
        if lr_phase is not None:
            from keras_effnet.train.lr_schedule import PhasedSchedule
            schedule = PhasedSchedule(schedule, *lr_phase)
        optimizer = rmsprop(learning_rate=schedule, rho=0.9, momentum=0.9, epsilon=1e-3)
        rates = DropoutRates(model, DROPOUT_LAYER)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)

        def counter(name):
            return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
        step, epoch, batch_in_epoch = (counter("global_step"), counter("epoch"),
                                       counter("batch_in_epoch"))
    ema = WeightEMA(model.variables, ema_decay, strategy) if ema_decay > 0 else None
    return TrainState(
        model=model, optimizer=optimizer, schedule=schedule, step=step, epoch=epoch,
        batch_in_epoch=batch_in_epoch, ema=ema,
        decayed=[v for v in model.trainable_variables if len(v.shape) > 1],
        moving_stats=[v for v in model.non_trainable_variables
                      if v.path.endswith(("moving_mean", "moving_variance"))],
        rng_states=[v.value for v in model.variables
                    if v.path.endswith("seed_generator_state")],
        dropout_rates=rates)


def dropout_rate(model: Any) -> float:
    """The head dropout rate (0.0 when the model has no such layer)."""
    layer = next((l for l in model.layers if l.name == DROPOUT_LAYER), None)
    return float(layer.rate) if layer is not None else 0.0


def make_train_step(state: TrainState, strategy: Any, *, global_batch: int,
                    label_smoothing: float, weight_decay: float, sync_batchnorm: bool,
                    traces: list | None = None) -> Callable[[Any], Any]:
    """``train_step(iterator) -> (loss, correct)``: one global batch, summed over replicas.

    The L2 term ``weight_decay * sum(||w||^2 / 2)`` is divided by the number of replicas
    because replica gradients are summed. Without ``sync_batchnorm`` the replicas'
    moving statistics are averaged after the step, so every replica and worker holds
    identical weights. Each trace appends (dropout rate, image shape) to ``traces``. The
    Dropout layers read ``state.dropout_rates`` when it is set, so a stage's new rates
    need no new trace.

    The variables trained (and decayed) are those trainable when the step is traced: a
    fine-tuning run traces a step per freeze mode.
    """
    import keras
    import tensorflow as tf

    model, optimizer = state.model, state.optimizer
    replicas = strategy.num_replicas_in_sync
    sync_stats = replicas > 1 and not sync_batchnorm and state.moving_stats

    variables = model.trainable_variables
    trained = {id(v) for v in variables}
    rates_read = (state.dropout_rates.traced if state.dropout_rates is not None
                  else contextlib.nullcontext)
    decayed = [v for v in state.decayed if id(v) in trained]

    def replica_step(images, labels):
        if traces is not None:
            traces.append((dropout_rate(model), tuple(images.shape)))
        with tf.GradientTape() as tape, fused_batchnorm(model), rates_read():
            probs = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, probs, label_smoothing=label_smoothing)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if weight_decay and decayed:
                l2 = weight_decay * tf.add_n(
                    [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed])
                loss += l2 / replicas
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1),
                                                 tf.argmax(labels, -1)), tf.float32))
        if not sync_stats:
            return loss, correct, tf.zeros([0])
        # This replica's moving statistics, flattened: averaged below in one reduce.
        return loss, correct, tf.concat([tf.reshape(v, [-1]) for v in state.moving_stats], 0)

    # autograph=False: no tensor-dependent Python control flow here, and converting
    # the code costs trace time.
    @tf.function(reduce_retracing=True, autograph=False)
    def train_step(iterator):
        images, labels = next(iterator)
        loss, correct, stats = strategy.run(replica_step, args=(images, labels))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        correct = strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
        if sync_stats:
            _assign_replica_mean(strategy, stats, state.moving_stats)
        # The counters advance inside the traced step, so a checkpoint taken whenever
        # an interrupt lands is consistent.
        state.step.assign_add(1)
        state.batch_in_epoch.assign_add(1)
        if state.ema is not None:
            state.ema.update(state.step)
        return loss, correct

    return train_step


def _assign_replica_mean(strategy: Any, stats: Any, variables: list) -> None:
    """Assigns every replica's copy of ``variables`` the cross-replica (and cross-worker)
    mean of ``stats``, each replica's values flattened and concatenated."""
    import numpy as np
    import tensorflow as tf

    means = strategy.reduce(tf.distribute.ReduceOp.MEAN, stats, axis=None)
    offset = 0
    for variable in variables:
        size = int(np.prod(variable.shape))
        variable.assign(tf.reshape(means[offset:offset + size], variable.shape))
        offset += size


def make_eval_step(model: Any, strategy: Any, top_k: int) -> Callable[[Any], Any]:
    """``eval_step(batch) -> [loss sum, top-1 hits, top-k hits, count]`` over replicas."""
    import keras
    import tensorflow as tf

    def replica_step(images, labels):
        probs = model(images, training=False)
        target = tf.argmax(labels, -1, output_type=tf.int32)
        loss = tf.reduce_sum(keras.losses.categorical_crossentropy(labels, probs))
        rank = rank_of_target(probs, target)
        top1 = tf.reduce_sum(tf.cast(rank < 1, tf.float32))
        topk = tf.reduce_sum(tf.cast(rank < top_k, tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return loss, top1, topk, count

    @tf.function(reduce_retracing=True, autograph=False)
    def eval_step(batch):
        images, labels = batch
        values = strategy.run(replica_step, args=(images, labels))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]

    return eval_step


def recalibration_count(num_train: int, image_size: int, global_batch: int) -> int:
    """How many training images recalibrate BatchNorm: at most
    :data:`RECALIBRATION_IMAGES`, at most 256 MB of pixels at ``image_size``, whole global
    batches, at least one batch (``num_train >= global_batch`` is the trainer's rule)."""
    by_memory = _RECALIBRATION_BYTES // (image_size * image_size * 3 * 4)
    count = min(num_train, RECALIBRATION_IMAGES, max(by_memory, global_batch))
    return max(global_batch, count // global_batch * global_batch)


def make_recalibrate_step(state: TrainState, strategy: Any) -> Callable[[Any, int, int], None]:
    """``recalibrate(source, image_size, global_batch)``: BatchNorm moving statistics as
    the plain mean over batches of training images with evaluation preprocessing
    (``source.representative_images``, :func:`recalibration_count` of them; "precise BN",
    Wu & Johnson 2021).

    Batch ``index`` (0-based) is weighted ``1 / (index + 1)``: after ``n`` batches each
    moving mean / variance is the average of the ``n`` batch statistics (averaged over
    replicas too), whatever the layer's momentum. Only the moving statistics change:
    weights, optimizer and counters do not, and the dropout / drop-path RNG states are
    restored, so an evaluation never changes the course of training.

    The EMA averages the weights and the statistics separately; statistics averaged over
    steps do not fit the averaged weights early in a short run, nor an image size the
    weights were not trained at. Recalibrated at the evaluation size, the EMA model is
    usable from the first evaluation.
    """
    import keras
    import tensorflow as tf

    model = state.model
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    with strategy.scope():
        weight = tf.Variable(0.0, trainable=False, dtype=tf.float32,
                             name="recalibration_momentum")
    replicas = strategy.num_replicas_in_sync

    def replica_step(images):
        with fused_batchnorm(model):
            model(images, training=True)
        if replicas == 1 or not state.moving_stats:
            return tf.zeros([0])
        return tf.concat([tf.reshape(v, [-1]) for v in state.moving_stats], 0)

    @tf.function(reduce_retracing=True, autograph=False)
    def step(images):
        # The momentum is read when tracing: the traced update reads the variable. Set
        # here, in one thread (replicas trace in threads of their own), past the layers'
        # attribute tracking, so the variable never becomes part of the model.
        saved = [layer.momentum for layer in layers]
        try:
            for layer in layers:
                object.__setattr__(layer, "momentum", weight)
            stats = strategy.run(replica_step, args=(images,))
        finally:
            for layer, momentum in zip(layers, saved):
                object.__setattr__(layer, "momentum", momentum)
        if replicas > 1 and state.moving_stats:
            _assign_replica_mean(strategy, stats, state.moving_stats)

    images_at: dict[tuple[int, int], Any] = {}  # the same images every evaluation

    def recalibrate(source: Any, image_size: int, global_batch: int) -> None:
        count = recalibration_count(source.num_train, image_size, global_batch)
        if (image_size, count) not in images_at:
            images_at.clear()  # one size at a time (at most 256 MB of pixels)
            images_at[image_size, count] = source.representative_images(count, image_size)
        images = images_at[image_size, count]
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(global_batch,
                                                                   drop_remainder=True)
        rng = [v.read_value() for v in state.rng_states]
        for index, batch in enumerate(strategy.experimental_distribute_dataset(dataset)):
            weight.assign(index / (index + 1.0))
            step(batch)
        for variable, value in zip(state.rng_states, rng):
            variable.assign(value)

    return recalibrate


@contextlib.contextmanager
def statistics_restored(moving_stats: list, restore: bool = True) -> Iterator[None]:
    """Puts the BatchNorm moving statistics back as they were on exit (when
    ``restore``)."""
    saved = [v.numpy() for v in moving_stats] if restore else []
    try:
        yield
    finally:
        for variable, value in zip(moving_stats, saved):
            variable.assign(value)


def rank_of_target(probs: Any, target: Any) -> Any:
    """0-based rank of the target class, ties broken by class index as ``argmax`` does.

    (``tf.math.in_top_k`` counts every tied class as a hit, so a model that outputs a
    uniform distribution would score 100 %.)
    """
    import tensorflow as tf

    probs = tf.cast(probs, tf.float32)
    target_prob = tf.gather(probs, target, batch_dims=1)[:, None]
    index = tf.range(tf.shape(probs)[-1])[None, :]
    ahead = tf.logical_or(probs > target_prob,
                          tf.logical_and(probs == target_prob, index < target[:, None]))
    return tf.reduce_sum(tf.cast(ahead, tf.int32), axis=-1)


def relax_shapes(dataset: Any) -> Any:
    """Batches with unknown height, width (and batch size for a last partial batch).

    The step functions are traced for the dataset's element shapes; relaxed shapes let one
    trace serve every stage's image size (a trace of a V2 step costs tens of seconds on a
    CPU); the rates changing per stage are variables, so they need no new trace either.
    """
    import tensorflow as tf

    def relax(images, labels):
        images = tf.compat.v1.placeholder_with_default(images, [None, None, None, 3])
        labels = tf.compat.v1.placeholder_with_default(labels, [None, labels.shape[-1]])
        return images, labels
    return dataset.map(relax)
