"""The trainer: progressive learning in one custom loop under any tf.distribute strategy.

Why a custom loop: Keras 3.15's ``model.fit`` fails under MultiWorkerMirroredStrategy on
TF 2.21 (keras issue 20585), while ``strategy.run`` with a Keras 3 model and optimizer
works everywhere. So every strategy (default, mirrored, multi-worker, TPU) runs the same
step below; only the strategy object differs.

Recipe (REFERENCE.md §5; google/automl ``main_tf2.py``), all in :class:`TrainConfig`:

* RMSProp (rho 0.9, momentum 0.9, epsilon 1e-3); peak LR ``0.016 * global_batch / 256``;
  linear warm-up then exponential decay x0.97 per 2.4 epochs (staircase), or cosine.
  The decay period is the recipe's 2.4 epochs whatever the run length. The warm-up is
  the recipe's 5 epochs, shortened for short runs to a tenth of the run (at least one
  epoch): ``min(5, max(1, epochs / 10))``, so a 12-epoch run warms up for 1.2 epochs
  instead of spending 40 % of itself there. (Compressing the whole schedule by
  ``epochs / 350`` was tried: a 12-epoch from-scratch run then spends its second half
  below 10 % of the peak LR and under-fits, 77 % on digits.)
* Weight decay 1e-5 as an L2 term added to the loss, as automl:
  ``1e-5 * sum(||w||^2 / 2)`` (``tf.nn.l2_loss``) over kernels only, i.e. not over
  BatchNorm's gamma/beta nor biases (all 1-D); the term is divided by the number of
  replicas because replica gradients are summed.
* Label smoothing 0.1; EMA of the weights with decay 0.9999 and the ``num_updates``
  warm-up ``min(decay, (1 + step) / (10 + step))`` (see ``ema.py``): for a short run this
  averages over roughly its last 10 % of steps, for ImageNet-length runs it is the
  recipe's 0.9999. Evaluation and the saved model use the EMA weights.
* BatchNorm moving statistics are averaged across replicas after every step (what
  Keras 2 did with ON_READ/MEAN variables; Keras 3 leaves each replica its own copy), so
  all replicas and workers hold identical weights. ``sync_batchnorm`` also normalises
  with cross-replica batch statistics.
* The classifier kernel starts at zero (``zero_init_head``, as BiT initialises new
  heads). The official ``uniform(+-1/sqrt(classes))`` is +-0.03 for ImageNet's 1000
  classes, nearly zero, but +-0.32 for 10 classes: initial logits with a std of ~3, a
  loss of ~4 and hundreds of steps spent shrinking the head, which a short run cannot
  afford. Set ``zero_init_head=False`` for the official initialiser.
* Mixed precision: ``auto`` = bfloat16 on TPU, float16 (with ``LossScaleOptimizer``) on
  GPU, float32 on CPU.

Progressive learning (:mod:`keras_effnet.train.progressive`): each stage gets a new
dataset at its image size and augmentation, and its dropout is set on the ``top_dropout``
layer with the step function traced again (the rate is baked into a trace). Model,
optimizer, LR schedule and EMA carry across stages.

Fault tolerance (:mod:`keras_effnet.train.checkpointing`): a checkpoint every epoch and
every ``checkpoint_every_steps`` steps holds model, optimizer (its step drives the LR
schedule), EMA, epoch and batch-in-epoch. Running the same command again resumes there:
the data order is a pure function of ``(seed, epoch)``, so the resumed epoch skips the
batches already consumed. Ctrl-C / SIGTERM save a checkpoint before exiting; a
non-finite loss stops the run at once, keeping the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from keras_effnet.train import progressive as progressive_lib
from keras_effnet.train import reporting
from keras_effnet.train import schedules
from keras_effnet.train import strategy as strategy_lib
from keras_effnet.train.fit import DROPOUT_LAYER, set_dropout

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "NonFiniteLossError",
           "DEFAULT_MODEL"]

DEFAULT_MODEL = "efficientnetv2-b0"
_RECIPE_WARMUP_EPOCHS = 5.0

# The embedded digits are 8x8 scans: training them at a V2's 192-384 px would only burn
# time. These defaults apply when the corresponding option is left unset (None); the
# width/depth ones only for the default model. They make the no-flag run finish in
# minutes on two CPU cores (see README).
_SMALL_DATASET_DEFAULTS = {
    "digits": {"image_size": 64, "min_image_size": 32,
               "model_scaling": {"width": 0.5, "depth": 0.5}},
}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; ``scripts/train.py`` fills it from flags.

    ``None`` means "resolved at run time" (see :meth:`Trainer.resolved_config`): the
    model's recipe, the dataset's small-image defaults, or the recipe scaled to the run.
    """

    model: str = DEFAULT_MODEL
    dataset: str = "digits"
    data_dir: str | None = None
    model_dir: str | None = None  # default: runs/<model>_<dataset>
    epochs: int = 12
    batch_size: int = 64  # global, over all replicas and workers
    stages: int = 4
    progressive_mode: str = "automl"
    image_size: int | None = None  # last stage's train size (default: the model's)
    min_image_size: int | None = None  # first stage's size (default: automl's ibase)
    eval_image_size: int | None = None  # default: the last stage's size
    width: float | None = None
    depth: float | None = None
    dropout: float | None = None  # the recipe's (final) head dropout
    strategy: str = "auto"
    tpu: str | None = None
    mixed_precision: str = "auto"
    seed: int = 0
    max_train_steps: int | None = None
    checkpoint_every_steps: int = 0  # 0: checkpoints at epoch ends only
    keep_checkpoints: int = 3
    # Recipe (REFERENCE.md §5).
    learning_rate: float | None = None  # peak LR; None: 0.016 * batch_size / 256
    lr_schedule: str = "exponential"
    warmup_epochs: float | None = None  # None: min(5, max(1, epochs / 10))
    decay_epochs: float = 2.4
    decay_factor: float = 0.97
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the EMA
    sync_batchnorm: bool = False
    zero_init_head: bool = True  # see the module docstring
    eval_every_epochs: int = 1  # 0: evaluate only at the end
    verbose: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        def positive_int(name, minimum=1, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}. "
                                 f"Received: {name}={value!r}")

        positive_int("epochs")
        positive_int("batch_size")
        positive_int("stages")
        positive_int("keep_checkpoints")
        positive_int("checkpoint_every_steps", 0)
        positive_int("eval_every_epochs", 0)
        for name in ("image_size", "min_image_size", "eval_image_size", "max_train_steps"):
            positive_int(name, 1, allow_none=True)
        if self.stages > self.epochs:
            raise ValueError(f"stages ({self.stages}) must be <= epochs ({self.epochs}): "
                             "every stage trains at least one epoch.")
        if self.progressive_mode not in progressive_lib.MODES:
            raise ValueError(f"progressive_mode must be one of {progressive_lib.MODES}. "
                             f"Received: {self.progressive_mode!r}")
        if self.strategy not in strategy_lib.STRATEGIES:
            raise ValueError(f"strategy must be one of {strategy_lib.STRATEGIES}. "
                             f"Received: {self.strategy!r}")
        if self.mixed_precision not in strategy_lib.PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {strategy_lib.PRECISIONS}. "
                             f"Received: {self.mixed_precision!r}")
        if self.lr_schedule not in ("exponential", "cosine"):
            raise ValueError("lr_schedule must be 'exponential' or 'cosine'. "
                             f"Received: {self.lr_schedule!r}")
        for name in ("width", "depth", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0. Received: {name}={value!r}")
        for name, low, high in (("ema_decay", 0.0, 1.0), ("label_smoothing", 0.0, 1.0),
                                ("dropout", 0.0, 1.0)):
            value = getattr(self, name)
            if value is not None and not low <= value < high:
                raise ValueError(f"{name} must be in [{low}, {high}). "
                                 f"Received: {name}={value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0. Received: {self.weight_decay!r}")
        if self.tpu and self.strategy not in ("auto", "tpu"):
            raise ValueError(f"tpu={self.tpu!r} needs strategy 'tpu' or 'auto'. "
                             f"Received: strategy={self.strategy!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns (also written to ``model_dir/metrics.json``)."""

    top1: float | None
    top5: float | None
    loss: float | None
    raw_top1: float | None
    eval_count: int
    steps: int
    epochs_completed: int
    history: list[dict[str, Any]]
    plan: list[progressive_lib.Stage]
    model_dir: str
    model_name: str
    final_model_path: str | None
    resumed_from: str | None
    wall_time_s: float
    model: Any = dataclasses.field(default=None, repr=False)


def _value(variable) -> int:
    """A counter's value; ``int()`` does not accept distributed variables."""
    return int(variable.numpy())


def _rank_of_target(probs, target):
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


def _relax_shapes(dataset):
    """Batches with unknown height, width (and batch size for a last partial batch).

    The step functions are traced for the dataset's element shapes; relaxed shapes let one
    trace serve every stage's image size (a trace of a V2 step costs tens of seconds on a
    CPU), so a new trace happens only when the dropout rate changes.
    """
    import tensorflow as tf

    def relax(images, labels):
        images = tf.compat.v1.placeholder_with_default(images, [None, None, None, 3])
        labels = tf.compat.v1.placeholder_with_default(labels, [None, labels.shape[-1]])
        return images, labels
    return dataset.map(relax)


@contextlib.contextmanager
def _dtype_policy(name: str):
    import keras
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (preemption, ``kill``) takes the Ctrl-C path: save, then exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
    """One training run. ``Trainer(config).run()`` or :func:`train`.

    ``source`` (a ``keras_effnet.data`` source) and ``strategy`` may be given directly
    (tests, notebooks); otherwise they come from ``config.dataset`` and
    ``config.strategy``.
    """

    def __init__(self, config: TrainConfig, *, source: Any = None, strategy: Any = None,
                 log: Callable[[str], None] | None = None):
        config.validate()
        self.config = config
        # The strategy first: MultiWorkerMirroredStrategy and TPUStrategy must exist
        # before other TensorFlow ops run.
        self.strategy = strategy or strategy_lib.resolve_strategy(config.strategy,
                                                                  config.tpu)
        self.chief = strategy_lib.is_chief(self.strategy)
        self._print = log or print
        self.source = source if source is not None else self._get_source()
        self._check_source()
        self.variant, self.recipe = self._resolve_model()
        self.plan = progressive_lib.progressive_plan(
            self.recipe, config.epochs, config.stages, config.progressive_mode,
            self._min_image_size())
        self.eval_image_size = config.eval_image_size or self.plan[-1].image_size
        self.global_batch = config.batch_size
        self.steps_per_epoch = self.source.num_train // self.global_batch
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_train_steps:
            self.total_steps = min(self.total_steps, config.max_train_steps)
        self.precision = strategy_lib.resolve_precision(config.mixed_precision,
                                                        self.strategy)
        self.model_dir = config.model_dir or os.path.join(
            "runs", f"{self.variant.name}_{config.dataset}".replace(":", "_")
            .replace("/", "_"))
        self.schedule_kwargs = self._schedule_kwargs()
        # Every trace of the step function appends (dropout rate, image shape): tests
        # and logs can see which rate each traced step really uses.
        self.traces: list[tuple[float, tuple]] = []
        self._train_fns: dict[float, Any] = {}
        self._eval_fn = None

    # --- resolution -------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.chief and self.config.verbose:
            self._print(message)

    def _get_source(self):
        try:
            from keras_effnet import data
        except ImportError as e:  # pragma: no cover - the data package ships with us
            raise ValueError(f"keras_effnet.data is not available ({e}).") from e
        return data.get_source(name=self.config.dataset, data_dir=self.config.data_dir)

    def _check_source(self) -> None:
        source, batch = self.source, self.config.batch_size
        if source.num_classes < 2:
            raise ValueError(f"Dataset {self.config.dataset!r} has {source.num_classes} "
                             "class(es); training needs at least 2 (one sub-folder per "
                             "class).")
        if source.num_train < batch:
            raise ValueError(f"Dataset {self.config.dataset!r} has {source.num_train} "
                             f"training images, fewer than one global batch "
                             f"(--batch_size={batch}); add images or lower --batch_size.")
        replicas = self.strategy.num_replicas_in_sync
        if batch % replicas:
            raise ValueError(f"batch_size {batch} must be divisible by the number of "
                             f"replicas ({replicas}).")
        skipped = getattr(source, "skipped", None) or []
        if skipped:
            self.log(f"Warning: skipped {len(skipped)} unreadable file(s) in "
                     f"{self.config.data_dir}, e.g. {skipped[0][0]} ({skipped[0][1]}).")

    def _dataset_defaults(self) -> dict[str, Any]:
        return _SMALL_DATASET_DEFAULTS.get(self.config.dataset, {})

    def _resolve_model(self):
        from keras_effnet.builder import resolve_variant

        config, defaults = self.config, self._dataset_defaults()
        scaling = dict(width=config.width, depth=config.depth)
        if config.model == DEFAULT_MODEL:
            for key, value in defaults.get("model_scaling", {}).items():
                if scaling[key] is None:
                    scaling[key] = value
        variant = resolve_variant(config.model, dropout=config.dropout, **scaling)
        if scaling["width"] not in (None, 1.0) or scaling["depth"] not in (None, 1.0):
            suffix = f"-w{variant.width:g}-d{variant.depth:g}"
            variant = variant.replace(name=variant.name + suffix)
        image_size = config.image_size or defaults.get("image_size")
        recipe = progressive_lib.resolve_recipe(variant)
        if image_size is not None:
            # Overridden sizes: not the paper's Table 6 row any more.
            recipe = dataclasses.replace(recipe, train_size=image_size or recipe.train_size,
                                         name="custom")
        return variant, recipe

    def _min_image_size(self) -> int | None:
        if self.config.min_image_size is not None:
            return self.config.min_image_size
        default = self._dataset_defaults().get("min_image_size")
        if default is not None and default <= self.recipe.train_size:
            return default
        return None

    def _schedule_kwargs(self) -> dict[str, Any]:
        config = self.config
        warmup = config.warmup_epochs
        if warmup is None:
            warmup = min(_RECIPE_WARMUP_EPOCHS, max(1.0, config.epochs / 10))
        return dict(
            base_lr=config.learning_rate or schedules.scaled_learning_rate(self.global_batch),
            steps_per_epoch=self.steps_per_epoch,
            warmup_epochs=warmup, decay_epochs=config.decay_epochs,
            decay_factor=config.decay_factor, kind=config.lr_schedule,
            total_steps=self.steps_per_epoch * config.epochs)

    def resolved_config(self) -> dict[str, Any]:
        """The run's full configuration as written to ``model_dir/config.json``."""
        return {
            "model": self.config.model,
            "variant": self.variant.to_dict(),
            "dataset": self.config.dataset,
            "data_dir": os.path.abspath(self.config.data_dir) if self.config.data_dir
            else None,
            "num_classes": self.source.num_classes,
            "class_names": list(self.source.class_names),
            "eval_image_size": self.eval_image_size,
            "num_train": self.source.num_train,
            "num_val": self.source.num_val,
            "global_batch_size": self.global_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "strategy": strategy_lib.describe_strategy(self.strategy),
            "num_replicas": self.strategy.num_replicas_in_sync,
            "precision": self.precision,
            "learning_rate_schedule": self.schedule_kwargs,
            "plan": [s.to_dict() for s in self.plan],
            "train_config": self.config.to_dict(),
        }

    # --- construction -----------------------------------------------------------------

    def _build(self) -> None:
        import keras
        import tensorflow as tf

        from keras_effnet.builder import build
        from keras_effnet.train.checkpointing import Checkpointer
        from keras_effnet.train.ema import WeightEMA
        from keras_effnet.train.lr_schedule import WarmupDecaySchedule

        config = self.config
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            top_dropout = max(stage.dropout for stage in self.plan)
            self.model = build(self.variant, input_shape=(None, None, 3),
                               classes=self.source.num_classes, dropout=top_dropout)
            if config.zero_init_head:
                kernel = self.model.get_layer("predictions").kernel
                kernel.assign(tf.zeros(kernel.shape, kernel.dtype))
            if config.sync_batchnorm:
                for layer in self.model.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.synchronized = True
            schedule = WarmupDecaySchedule(**self.schedule_kwargs)
            optimizer = keras.optimizers.RMSprop(learning_rate=schedule, rho=0.9,
                                                 momentum=0.9, epsilon=1e-3)
            if self.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            self.schedule = schedule
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                              name="batch_in_epoch")
        self.ema = (WeightEMA(self.model.variables, config.ema_decay, self.strategy)
                    if config.ema_decay > 0 else None)
        self.decayed = [v for v in self.model.trainable_variables if len(v.shape) > 1]
        self.moving_stats = [v for v in self.model.non_trainable_variables
                             if v.path.endswith(("moving_mean", "moving_variance"))]
        # Keras does not put its RNG states (dropout, drop-path) in tf.train checkpoints;
        # without them a resumed run would draw other masks than an uninterrupted one.
        rng_states = [v.value for v in self.model.variables
                      if v.path.endswith("seed_generator_state")]
        objects = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                       epoch=self.epoch, batch_in_epoch=self.batch_in_epoch,
                       rng_states=rng_states)
        if self.ema is not None:
            objects["ema"] = self.ema.averages
        self.checkpointer = Checkpointer(self.model_dir, objects, chief=self.chief,
                                         worker_index=strategy_lib.worker_index(self.strategy),
                                         max_to_keep=config.keep_checkpoints)

    # --- traced steps -----------------------------------------------------------------

    def _train_fn(self):
        """The step function for the current dropout rate (traced once per rate)."""
        rate = float(self.model.get_layer(DROPOUT_LAYER).rate) if any(
            layer.name == DROPOUT_LAYER for layer in self.model.layers) else 0.0
        if rate not in self._train_fns:
            self._train_fns[rate] = self._make_train_fn()
        return self._train_fns[rate]

    def _make_train_fn(self):
        import keras
        import numpy as np
        import tensorflow as tf

        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        config, global_batch = self.config, self.global_batch
        replicas = strategy.num_replicas_in_sync
        sync_stats = replicas > 1 and not config.sync_batchnorm and self.moving_stats

        def replica_step(images, labels):
            layer = next((l for l in model.layers if l.name == DROPOUT_LAYER), None)
            self.traces.append((float(layer.rate) if layer else 0.0, tuple(images.shape)))
            with tf.GradientTape() as tape:
                probs = model(images, training=True)
                per_example = keras.losses.categorical_crossentropy(
                    labels, probs, label_smoothing=config.label_smoothing)
                loss = tf.nn.compute_average_loss(per_example,
                                                  global_batch_size=global_batch)
                if config.weight_decay and self.decayed:
                    l2 = config.weight_decay * tf.add_n(
                        [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.decayed])
                    loss += l2 / replicas
                scaled = optimizer.scale_loss(loss)
            variables = model.trainable_variables
            grads = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(grads, variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1),
                                                     tf.argmax(labels, -1)), tf.float32))
            if not sync_stats:
                return loss, correct, tf.zeros([0])
            # This replica's moving statistics, flattened: averaged below in one reduce.
            return loss, correct, tf.concat([tf.reshape(v, [-1]) for v in self.moving_stats],
                                            0)

        # autograph=False: no tensor-dependent Python control flow here, and converting
        # the code costs trace time.
        @tf.function(reduce_retracing=True, autograph=False)
        def train_step(iterator):
            images, labels = next(iterator)
            loss, correct, stats = strategy.run(replica_step, args=(images, labels))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            correct = strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
            if sync_stats:
                # Cross-replica (and cross-worker) mean, assigned to every replica's copy.
                means = strategy.reduce(tf.distribute.ReduceOp.MEAN, stats, axis=None)
                offset = 0
                for variable in self.moving_stats:
                    size = int(np.prod(variable.shape))
                    variable.assign(tf.reshape(means[offset:offset + size], variable.shape))
                    offset += size
            self.step.assign_add(1)
            self.batch_in_epoch.assign_add(1)
            if self.ema is not None:
                self.ema.update(self.step)
            return loss, correct

        return train_step

    def _make_eval_fn(self):
        import keras
        import tensorflow as tf

        model, strategy = self.model, self.strategy
        top_k = min(5, self.source.num_classes)

        def replica_step(images, labels):
            probs = model(images, training=False)
            target = tf.argmax(labels, -1, output_type=tf.int32)
            loss = tf.reduce_sum(keras.losses.categorical_crossentropy(labels, probs))
            rank = _rank_of_target(probs, target)
            top1 = tf.reduce_sum(tf.cast(rank < 1, tf.float32))
            topk = tf.reduce_sum(tf.cast(rank < top_k, tf.float32))
            count = tf.cast(tf.shape(labels)[0], tf.float32)
            return loss, top1, topk, count

        @tf.function(reduce_retracing=True, autograph=False)
        def eval_step(batch):
            images, labels = batch
            values = strategy.run(replica_step, args=(images, labels))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for v in values]

        return eval_step

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, use_ema: bool = True) -> dict[str, Any] | None:
        """Top-1 / top-5 / loss on the held-out split at ``eval_image_size``."""
        if self.source.num_val == 0:
            return None
        if self._eval_fn is None:
            self._eval_fn = self._make_eval_fn()
        size, batch = self.eval_image_size, self.global_batch
        dataset = self.strategy.distribute_datasets_from_function(
            lambda context: self._maybe_relax(
                self.source.eval_dataset(size, batch, input_context=context)))
        swap = self.ema.swapped() if (use_ema and self.ema is not None) \
            else contextlib.nullcontext()
        totals = [0.0, 0.0, 0.0, 0.0]
        with swap:
            for batch_values in dataset:
                values = self._eval_fn(batch_values)
                totals = [t + float(v) for t, v in zip(totals, values)]
        loss, top1, topk, count = totals
        count = max(count, 1.0)
        return {"top1": top1 / count, "top5": topk / count, "loss": loss / count,
                "count": int(count), "correct": int(top1), "image_size": size,
                "weights": "EMA" if use_ema and self.ema is not None else "raw"}

    # --- the run ----------------------------------------------------------------------

    @property
    def _relax(self) -> bool:
        # TPUs compile one program per static shape: they keep the exact shapes.
        import tensorflow as tf
        return not isinstance(self.strategy, tf.distribute.TPUStrategy)

    def _maybe_relax(self, dataset):
        return _relax_shapes(dataset) if self._relax else dataset

    def stage_at(self, epoch: int) -> progressive_lib.Stage:
        """The plan's stage that contains ``epoch`` (0-based)."""
        for stage in self.plan:
            if stage.start_epoch <= epoch < stage.end_epoch:
                return stage
        return self.plan[-1]

    def _train_dataset_fn(self, stage, epoch: int, skip: int):
        source, config, batch = self.source, self.config, self.global_batch
        relax = self._relax

        def dataset_fn(context):
            ds = source.train_dataset(
                image_size=stage.image_size, batch_size=batch,
                randaug_magnitude=stage.randaug_magnitude, mixup_alpha=stage.mixup_alpha,
                cutmix_alpha=stage.cutmix_alpha, seed=config.seed, epoch=epoch,
                input_context=context, drop_remainder=True)
            ds = ds.skip(skip) if skip else ds
            return _relax_shapes(ds) if relax else ds
        return dataset_fn

    def _check_model_dir(self) -> None:
        path = os.path.join(self.model_dir, "config.json")
        if not (os.path.exists(path) and self.checkpointer.latest):
            return
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        mine = self.resolved_config()
        for key in ("variant", "num_classes", "dataset", "global_batch_size", "plan"):
            if saved.get(key) != mine[key]:
                raise ValueError(
                    f"{self.model_dir} holds a checkpoint of a different run ({key} "
                    f"differs: {str(saved.get(key))[:80]} vs {str(mine[key])[:80]}); pass a "
                    "new --model_dir, or the same flags as that run to resume it.")

    def _history_path(self) -> str:
        return os.path.join(self.model_dir, "metrics.json")

    def _load_history(self, epoch: int) -> list[dict[str, Any]]:
        try:
            with open(self._history_path(), encoding="utf-8") as f:
                history = json.load(f).get("history", [])
        except (OSError, ValueError):
            return []
        return [h for h in history if h.get("epoch", epoch) < epoch]

    def _save(self, reason: str) -> str | None:
        path = self.checkpointer.save()
        if self.chief:
            self.log(f"Saved checkpoint {path} ({reason}; step {_value(self.step)}, epoch "
                     f"{_value(self.epoch) + 1}, batch {_value(self.batch_in_epoch)}).")
        return path

    def run(self) -> TrainResult:
        """Train through every stage (resuming if ``model_dir`` has a checkpoint),
        evaluate, and write the outputs to ``model_dir``."""
        with _dtype_policy(self.precision), _sigterm_as_interrupt(), self.strategy.scope():
            return self._run()

    def _run(self) -> TrainResult:
        import keras
        import numpy as np

        started = time.time()
        config = self.config
        os.makedirs(self.model_dir, exist_ok=True)
        self._build()
        self._check_model_dir()
        resumed = self.checkpointer.restore_latest()
        if self.chief:
            reporting.write_json(os.path.join(self.model_dir, "config.json"),
                                 self.resolved_config())
        scalars = reporting.Scalars(os.path.join(self.model_dir, "logs") if self.chief
                                    else None)
        self._log_header(resumed)
        start_epoch, start_batch = _value(self.epoch), _value(self.batch_in_epoch)
        history = self._load_history(start_epoch) if resumed else []
        current_stage = None
        try:
            for epoch in range(start_epoch, config.epochs):
                if _value(self.step) >= self.total_steps:
                    break
                stage = self.stage_at(epoch)
                if stage is not current_stage:
                    current_stage = stage
                    self.log(reporting.stage_banner(stage, len(self.plan),
                                                    self.steps_per_epoch))
                    set_dropout(self.model, stage.dropout)
                skip = start_batch if epoch == start_epoch else 0
                self.epoch.assign(epoch)
                self.batch_in_epoch.assign(skip)
                record = self._train_epoch(epoch, stage, skip, scalars)
                if record is None:  # max_train_steps reached inside the epoch
                    break
                self.epoch.assign(epoch + 1)
                self.batch_in_epoch.assign(0)
                evaluate = config.eval_every_epochs and (
                    (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs)
                if evaluate:
                    metrics = self.evaluate()
                    if metrics:
                        record.update(val_top1=metrics["top1"], val_top5=metrics["top5"],
                                      val_loss=metrics["loss"])
                        scalars.write("eval", _value(self.step), {
                            "top1": metrics["top1"], "top5": metrics["top5"],
                            "loss": metrics["loss"]})
                        self.log(f"epoch {epoch + 1}/{config.epochs}: val top-1 "
                                 f"{metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} "
                                 f"({metrics['weights']} weights, {metrics['image_size']}px)")
                history.append(record)
                self._save(f"end of epoch {epoch + 1}")
                if self.chief:
                    reporting.write_json(self._history_path(), {"history": history})
                scalars.flush()
        except KeyboardInterrupt:
            # The counters advance inside the traced step, so whenever the interrupt
            # lands, the saved state is consistent.
            self._save("interrupted")
            self.log("Interrupted: checkpoint saved; run the same command again to resume.")
            raise
        except NonFiniteLossError:
            scalars.close()
            raise
        if _value(self.step) >= self.total_steps and _value(self.batch_in_epoch) > 0:
            self._save(f"max_train_steps={config.max_train_steps} reached")
        return self._finish(history, resumed, started, scalars)

    def _train_epoch(self, epoch: int, stage, skip: int, scalars) -> dict[str, Any] | None:
        """One epoch from batch ``skip``; returns its record, or None if the step budget
        ran out before the end of the epoch."""
        import keras
        import numpy as np

        config = self.config
        dataset = self.strategy.distribute_datasets_from_function(
            self._train_dataset_fn(stage, epoch, skip))
        iterator = iter(dataset)
        train_fn = self._train_fn()
        show = self.chief and config.verbose
        # One line per epoch when the output is not a terminal (logs, CI), as Keras'
        # fit(verbose="auto") intends; every value is shown as given (running means).
        progbar = keras.utils.Progbar(
            self.steps_per_epoch, verbose=(1 if sys.stdout.isatty() else 2) if show else 0,
            stateful_metrics=["loss", "accuracy", "lr"], unit_name="step")
        if show:
            self._print(f"Epoch {epoch + 1}/{config.epochs}")
        losses, correct, seen = [], 0.0, 0
        epoch_started = time.time()
        for batch in range(skip, self.steps_per_epoch):
            if _value(self.step) >= self.total_steps:
                return None
            loss, hits = train_fn(iterator)
            loss = float(loss)
            step = _value(self.step)
            if not math.isfinite(loss):
                latest = self.checkpointer.latest
                raise NonFiniteLossError(
                    f"Loss became {loss} at step {step} (epoch {epoch + 1}, stage "
                    f"{stage.index + 1}); stopped without saving. The last good checkpoint "
                    f"is {latest or 'none (nothing saved yet)'}. Lower --learning_rate "
                    "(or check the data), then rerun to resume from it.")
            losses.append(loss)
            correct += float(hits)
            seen += self.global_batch
            lr = float(self.schedule(self.optimizer.iterations))
            progbar.update(batch + 1, values=[("loss", float(np.mean(losses))),
                                              ("accuracy", correct / seen), ("lr", lr)])
            if step % 10 == 0 or batch + 1 == self.steps_per_epoch:
                scalars.write("train", step, {"loss": loss, "learning_rate": lr,
                                              "image_size": stage.image_size,
                                              "dropout": stage.dropout})
            every = config.checkpoint_every_steps
            if every and step % every == 0 and batch + 1 < self.steps_per_epoch \
                    and step < self.total_steps:
                self._save(f"every {every} steps")
        record = {"epoch": epoch, "stage": stage.index, "image_size": stage.image_size,
                  "dropout": stage.dropout, "randaug": stage.randaug_magnitude,
                  "mixup": stage.mixup_alpha, "cutmix": stage.cutmix_alpha,
                  "loss": float(np.mean(losses)) if losses else None,
                  "accuracy": correct / seen if seen else None,
                  "lr": float(self.schedule(self.optimizer.iterations)),
                  "step": _value(self.step), "seconds": time.time() - epoch_started}
        scalars.write("train", _value(self.step), {"epoch_loss": record["loss"],
                                                "accuracy": record["accuracy"]})
        return record

    def _log_header(self, resumed: str | None) -> None:
        config, v = self.config, self.variant
        self.log(f"keras_effnet training: {v.name} ({self.model.count_params():,} params) "
                 f"on {config.dataset!r} ({self.source.num_train} train / "
                 f"{self.source.num_val} held-out images, {self.source.num_classes} "
                 f"classes)")
        s = self.schedule_kwargs
        self.log(f"{strategy_lib.describe_strategy(self.strategy)}, {self.precision}, "
                 f"global batch {self.global_batch}, {self.steps_per_epoch} steps/epoch, "
                 f"{config.epochs} epochs in {len(self.plan)} {config.progressive_mode} "
                 f"stage(s); RMSProp peak LR {s['base_lr']:.4g} ({s['kind']}, warm-up "
                 f"{s['warmup_epochs']:.3g} epochs), EMA "
                 f"{config.ema_decay if self.ema else 'off'}; model_dir {self.model_dir}")
        if resumed:
            self.log(f"Resumed from {resumed}: step {_value(self.step)}, epoch "
                     f"{_value(self.epoch) + 1}, batch {_value(self.batch_in_epoch)} (stage "
                     f"{self.stage_at(_value(self.epoch)).index + 1}).")

    def _finish(self, history, resumed, started, scalars) -> TrainResult:
        config = self.config
        raw = self.evaluate(use_ema=False)
        final = self.evaluate(use_ema=True) if self.ema is not None else raw
        if self.ema is not None:
            self.ema.copy_to_model()  # the saved model holds the EMA weights
        final_path = None
        if self.chief:
            final_path = os.path.join(self.model_dir, "final_model.keras")
            self.model.save(final_path)
            with open(os.path.join(self.model_dir, "labels.txt"), "w",
                      encoding="utf-8") as f:
                f.write("\n".join(self.source.class_names) + "\n")
            summary = {
                "final": final, "raw_weights": raw, "history": history,
                "steps": _value(self.step), "epochs_completed": _value(self.epoch),
                "resumed_from": resumed, "wall_time_s": time.time() - started,
                "plan": [s.to_dict() for s in self.plan],
            }
            reporting.write_json(self._history_path(), summary)
            reporting.write_json(os.path.join(self.model_dir, "config.json"),
                                 self.resolved_config())
            if history:
                reporting.plot_curves(os.path.join(self.model_dir, "training_curves.png"),
                                      history, self.plan)
            self.log("\n" + reporting.summary_table(self.plan, history, final))
            if final:
                self.log(f"Held-out top-1: {final['top1']:.2%} ({final['correct']}/"
                         f"{final['count']} images, {final['weights']} weights); raw "
                         f"weights {raw['top1']:.2%}. Wall time {time.time() - started:.0f}s."
                         f" Outputs in {self.model_dir}.")
        scalars.close()
        return TrainResult(
            top1=final["top1"] if final else None, top5=final["top5"] if final else None,
            loss=final["loss"] if final else None, raw_top1=raw["top1"] if raw else None,
            eval_count=final["count"] if final else 0, steps=_value(self.step),
            epochs_completed=_value(self.epoch), history=history, plan=list(self.plan),
            model_dir=self.model_dir, model_name=self.variant.name,
            final_model_path=final_path, resumed_from=resumed,
            wall_time_s=time.time() - started, model=self.model)


def train(config: TrainConfig | None = None, *, source: Any = None, strategy: Any = None,
          log: Callable[[str], None] | None = None, **overrides: Any) -> TrainResult:
    """Run (or resume) a training run; ``overrides`` replace fields of ``config``.

    >>> result = keras_effnet.train.train(epochs=12)   # the README's main job
    >>> result.top1
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(config, source=source, strategy=strategy, log=log).run()
