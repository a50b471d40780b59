"""The proxy task: train one candidate with the package's trainer, and time its train
step against the base's.

Step time (``S`` of EfficientNetV2's reward) is measured in this process, the candidate's
step and the base's interleaved (``keras_effnet.timing``), so a burst of load from
elsewhere lands on both. The candidate's step is the one its training traced: tracing
again costs about as much as a short proxy run on a small CPU. The base's step is the
base trial's own when this process trained it, else built once per process with the
trainer's ``build_state`` / ``make_train_step``.

Each training sets the seeds again (``keras.utils.set_random_seed``), and TensorFlow's
``set_seed`` also empties the process' kernel cache: every traced function then
re-instantiates on its next call, the base's timed step included (3-5 s on 2 cores, a
tenth of a short proxy trial). Candidates therefore train with that cache kept
(:func:`keep_kernel_cache`): the global seed and the op-seed counter are still reset, and
the trainer draws every random number from explicit seeds (stateless ops, Keras
``SeedGenerator`` variables), so a candidate trains to the same weights either way
(tested).

Every candidate trains under the default strategy (one device per process: run more
processes against one storage to use more devices).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from keras_effnet.train.config import TrainConfig
from keras_effnet.variants import Variant

__all__ = ["CandidateConfig", "train_candidate", "StepTimer", "keep_kernel_cache"]


@dataclasses.dataclass
class CandidateConfig(TrainConfig):
    """A :class:`TrainConfig` whose network is the given :class:`Variant`.

    A candidate of a search is a Variant built here (the base with other blocks, or
    other width, depth and resolution). Passed as block strings, the trainer would give
    it efficientnet-b0's rules (rounding, BatchNorm momentum) whenever no block is fused;
    passed whole, it keeps its base's.
    """

    candidate: Variant | None = None  # not a flag

    def resolved_model(self) -> tuple[Any, Any]:
        if self.candidate is None:
            return super().resolved_model()
        from keras_effnet.train import progressive as progressive_lib

        recipe = progressive_lib.resolve_recipe(self.candidate)
        if self.image_size is not None:
            recipe = dataclasses.replace(recipe, train_size=self.image_size, name="custom")
        return self.candidate, recipe


def train_candidate(train_config: TrainConfig, variant: Variant, *, source: Any,
                    model_dir: str) -> tuple[Any, Any, float]:
    """Trains (or resumes, from ``model_dir``) ``variant`` on the proxy.

    Returns ``(TrainResult, Trainer, seconds)``: the trainer keeps the traced step that
    :meth:`StepTimer.ratio` times.
    """
    import tensorflow as tf

    from keras_effnet.train.trainer import Trainer

    config = CandidateConfig(**{**dataclasses.asdict(train_config), "model_dir": model_dir,
                                "candidate": variant})
    started = time.perf_counter()
    with keep_kernel_cache():
        trainer = Trainer(config, source=source, strategy=tf.distribute.get_strategy())
        result = trainer.run()
    return result, trainer, time.perf_counter() - started


@contextlib.contextmanager
def keep_kernel_cache():
    """Seeds set inside keep TensorFlow's kernel cache (and so every instantiated
    function); everything else ``tf.random.set_seed`` does still happens."""
    from tensorflow.python import pywrap_tfe  # the binding context.py calls

    clear = pywrap_tfe.TFE_ContextClearCaches
    pywrap_tfe.TFE_ContextClearCaches = lambda handle: None
    try:
        yield
    finally:
        pywrap_tfe.TFE_ContextClearCaches = clear


def _round(step: Any, iterator: Any, steps: int):
    def run() -> float:
        loss = None
        for _ in range(steps):
            loss, _ = step(iterator)
        return float(loss)  # waits for the device
    return run


def _batches(batch: int, size: int, classes: int, seed: int) -> Any:
    """An iterator repeating one batch of random pixels, with the relaxed shapes the
    trainer traces its step for (so the trace is reused, not redone)."""
    import tensorflow as tf

    from keras_effnet.train.steps import relax_shapes

    images = tf.random.stateless_uniform([batch, size, size, 3], [seed, 0], 0.0, 255.0)
    labels = tf.one_hot(tf.random.stateless_uniform([batch], [seed, 1], 0, classes,
                                                    dtype=tf.int32), classes)
    return iter(relax_shapes(tf.data.Dataset.from_tensors((images, labels)).repeat()))


class StepTimer:
    """Times candidates' train steps against the base's, interleaved, in this process.

    Args:
        base_config: the proxy's :class:`TrainConfig` for the base (its schedule,
            weight decay and label smoothing shape the step).
        base: the base variant.
        classes, image_size: the step's classifier width and batch shape.
        rounds, steps: ``rounds`` interleaved rounds of ``steps`` train steps each.
    """

    def __init__(self, base_config: TrainConfig, base: Variant, *, classes: int,
                 image_size: int, steps_per_epoch: int, rounds: int = 5, steps: int = 3):
        self.base_config, self.base = base_config, base
        self.classes, self.image_size = classes, image_size
        self.steps_per_epoch = steps_per_epoch
        self.rounds, self.steps = rounds, steps
        self._base_round = None
        self._batches = None
        self.traces: list = []  # the base step's traces (one per process, normally)

    def _iterator(self) -> Any:
        if self._batches is None:
            config = self.base_config
            self._batches = _batches(config.batch_size, self.image_size, self.classes,
                                     config.seed)
        return self._batches

    def _base(self):
        """The base's traced train step, built on first use (one trace per process)."""
        if self._base_round is None:
            import tensorflow as tf

            from keras_effnet.train import steps as steps_lib
            from keras_effnet.train import strategy as strategy_lib

            config, strategy = self.base_config, tf.distribute.get_strategy()
            precision = strategy_lib.resolve_precision(config.mixed_precision, strategy)
            with strategy_lib.dtype_policy(precision):
                state = steps_lib.build_state(
                    self.base, classes=self.classes, dropout=self.base.dropout,
                    schedule_kwargs=config.resolved_schedule(config.batch_size,
                                                             self.steps_per_epoch),
                    precision=precision, strategy=strategy, seed=config.seed,
                    ema_decay=config.ema_decay, zero_init_head=config.zero_init_head)
                step = steps_lib.make_train_step(
                    state, strategy, global_batch=config.batch_size,
                    label_smoothing=config.label_smoothing,
                    weight_decay=config.weight_decay, sync_batchnorm=False,
                    traces=self.traces)
            self._base_round = _round(step, self._iterator(), self.steps)
        return self._base_round

    def ratio(self, trainer: Any, is_base: bool = False) -> dict[str, Any]:
        """The candidate's train-step time over the base's: median of ``rounds``
        interleaved rounds, with the per-round ratios' spread (the noise it has to
        beat). ``trainer`` is the candidate's finished :class:`Trainer`.

        When ``is_base`` and this process has no base step yet, the candidate's step
        becomes the base's (ratio 1 by definition, and no second trace).
        """
        from keras_effnet import timing

        # The step the candidate's training traced, for the head dropout it ended with
        # (Trainer has no public accessor for it yet).
        step = _round(trainer._train_fn(), self._iterator(), self.steps)  # noqa: SLF001
        if is_base and self._base_round is None:
            self._base_round = step
            seconds = timing.median(timing.interleaved({"base": step}, self.rounds,
                                                       warmup=1)["base"])
            return {"step_time_ratio": 1.0, "step_time_spread": "–",
                    "base_step_s": seconds / self.steps, "step_s": seconds / self.steps}
        # A warm-up round, untimed: first calls after a training (caches, allocator).
        times = timing.interleaved({"base": self._base(), "candidate": step},
                                   self.rounds, warmup=1)
        base_s, candidate_s = (timing.median(times["base"]),
                               timing.median(times["candidate"]))
        return {"step_time_ratio": timing.ratio(candidate_s, base_s),
                "step_time_spread": timing.spread(timing.paired_ratios(
                    times["candidate"], times["base"])),
                "base_step_s": base_s / self.steps, "step_s": candidate_s / self.steps}
