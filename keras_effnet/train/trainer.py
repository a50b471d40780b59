"""The trainer: progressive learning in one custom loop under any tf.distribute strategy.

Why a custom loop: Keras 3.15's ``model.fit`` fails under MultiWorkerMirroredStrategy on
TF 2.21 (keras issue 20585), while ``strategy.run`` with a Keras 3 model and optimizer
works everywhere. So every strategy (default, mirrored, multi-worker, TPU) runs the same
step below; only the strategy object differs.

The recipe (docs/reference.md §5) is :class:`TrainConfig`'s, documented in ``config.py``;
the model, optimizer and traced steps are built in ``steps.py``.

Progressive learning (:mod:`keras_effnet.train.progressive`): each stage gets a new
dataset at its image size and ``stage.augment``; its dropout and drop-path rates are
written into variables the traced step reads (:mod:`keras_effnet.train.dropout_rates`), so
the step is not traced again. Model, optimizer, LR schedule and EMA carry across stages.

Fine-tuning (:mod:`keras_effnet.train.finetune`): a fresh run starts from ``init_weights``;
the layers that train are set per epoch, one traced step per freeze mode.

Outputs go through :class:`keras_effnet.run_dir.RunDir` (config.json, metrics.json,
labels.txt, final_model.keras, training_curves.png, logs/).

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
import math
import os
import sys
import time
from typing import Any, Callable

from keras_effnet.errors import ConfigError
from keras_effnet.run_dir import RunConfig, RunDir
from keras_effnet.train import finetune
from keras_effnet.train import progressive as progressive_lib
from keras_effnet.train import reporting
from keras_effnet.train import steps as steps_lib
from keras_effnet.train import strategy as strategy_lib
from keras_effnet.train.config import DEFAULT_MODEL, TrainConfig, TrainResult
from keras_effnet.train.fit import set_dropout
from keras_effnet.train.finetune import freeze

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "NonFiniteLossError",
           "DEFAULT_MODEL"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving."""


def _value(variable) -> int:
    """A counter's value; ``int()`` does not accept distributed variables."""
    return int(variable.numpy())


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
        replicas = self.strategy.num_replicas_in_sync
        for warning in config.check_source(self.source, replicas):  # before any building
            self.log(warning)
        self.variant, self.recipe = config.resolved_model()
        self.plan = progressive_lib.progressive_plan(
            self.recipe, config.epochs, config.stages, config.resolved_progressive_mode(),
            config.resolved_min_image_size(self.recipe))
        self.eval_image_size = config.eval_image_size or self.plan[-1].image_size
        self.global_batch = config.batch_size
        self.steps_per_epoch = self.source.num_train // self.global_batch
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_train_steps:
            self.total_steps = min(self.total_steps, config.max_train_steps)
        self.precision = strategy_lib.resolve_precision(config.mixed_precision,
                                                        self.strategy)
        self.model_dir = config.resolved_model_dir(self.variant.name)
        self.run_dir = RunDir(self.model_dir)
        self.schedule_kwargs = config.resolved_schedule(self.global_batch,
                                                        self.steps_per_epoch)
        # Every trace of the step function appends (dropout rate, image shape): tests
        # and logs can see which rate each traced step really uses.
        self.traces: list[tuple[float, tuple]] = []
        self._train_fns: dict[str, Any] = {}  # freeze mode -> its traced step
        self._eval_fn = None
        self._recalibrate_fn = None
        self._holds_ema = False  # the model's weights are the EMA's (after copy_to_model)

    # --- resolution -------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Prints ``message`` on the chief unless ``verbose`` is 0."""
        if self.chief and self.config.verbose:
            self._print(message)

    def _get_source(self):
        from keras_effnet.data.sources import get_source
        return get_source(name=self.config.dataset, data_dir=self.config.data_dir)

    def run_config(self) -> RunConfig:
        """The run's full configuration, as written to ``model_dir/config.json``."""
        config = self.config
        return RunConfig(
            model=config.model, variant=self.variant.to_dict(), dataset=config.dataset,
            num_classes=self.source.num_classes,
            class_names=tuple(self.source.class_names),
            eval_image_size=self.eval_image_size,
            data_dir=os.path.abspath(config.data_dir) if config.data_dir else None,
            num_train=self.source.num_train, num_val=self.source.num_val,
            global_batch_size=self.global_batch, steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            strategy=strategy_lib.describe_strategy(self.strategy),
            num_replicas=self.strategy.num_replicas_in_sync, precision=self.precision,
            learning_rate_schedule=dict(self.schedule_kwargs),
            plan=tuple(s.to_dict() for s in self.plan),
            fine_tune=config.fine_tune_record(), train_config=config.to_dict())

    # --- construction -----------------------------------------------------------------

    def _build(self) -> None:
        from keras_effnet.train.checkpointing import Checkpointer  # TensorFlow

        config = self.config
        self.state = state = steps_lib.build_state(
            self.variant, classes=self.source.num_classes,
            dropout=max(stage.dropout for stage in self.plan),
            schedule_kwargs=self.schedule_kwargs, precision=self.precision,
            strategy=self.strategy, seed=config.seed, ema_decay=config.ema_decay,
            zero_init_head=config.zero_init_head, sync_batchnorm=config.sync_batchnorm,
            lr_phase=finetune.lr_phase(config, self.steps_per_epoch))
        self.model, self.optimizer, self.schedule = (state.model, state.optimizer,
                                                     state.schedule)
        self.step, self.epoch, self.batch_in_epoch = (state.step, state.epoch,
                                                      state.batch_in_epoch)
        self.ema = state.ema
        self._freeze_mode = "none"  # as built: every layer trainable
        self.checkpointer = Checkpointer(self.model_dir, state.checkpoint_objects(),
                                         chief=self.chief,
                                         worker_index=strategy_lib.worker_index(self.strategy),
                                         max_to_keep=config.keep_checkpoints)

    def _train_fn(self):
        """The step function for the current freeze mode (one trace each; the stages'
        dropout and drop-path rates are read at run time)."""
        key = self._freeze_mode
        if key not in self._train_fns:
            config = self.config
            self._train_fns[key] = steps_lib.make_train_step(
                self.state, self.strategy, global_batch=self.global_batch,
                label_smoothing=config.label_smoothing, weight_decay=config.weight_decay,
                sync_batchnorm=config.sync_batchnorm, traces=self.traces)
        return self._train_fns[key]

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, use_ema: bool = True, keep: bool = False) -> dict[str, Any] | None:
        """Top-1 / top-5 / loss on the held-out split at ``eval_image_size``.

        With ``recalibrate_bn`` the BatchNorm statistics are first recomputed for the
        evaluated weights at that size (:func:`steps.make_recalibrate_step`); they are
        put back afterwards unless ``keep`` (the final model keeps them).
        """
        if self.source.num_val == 0:
            return None
        if self._eval_fn is None:
            self._eval_fn = steps_lib.make_eval_step(self.model, self.strategy,
                                                     min(5, self.source.num_classes))
        size, batch = self.eval_image_size, self.global_batch
        dataset = self.strategy.distribute_datasets_from_function(
            lambda context: self._maybe_relax(
                self.source.eval_dataset(size, batch, input_context=context)))
        ema = use_ema and self.ema is not None
        totals = [0.0, 0.0, 0.0, 0.0]
        with self.ema.swapped() if ema else contextlib.nullcontext(), \
                steps_lib.statistics_restored(self.state.moving_stats, not keep):
            if self.config.recalibrate_bn and not self.config.bn_frozen and \
                    hasattr(self.source, "representative_images"):
                if self._recalibrate_fn is None:
                    self._recalibrate_fn = steps_lib.make_recalibrate_step(self.state,
                                                                           self.strategy)
                self._recalibrate_fn(self.source, size, self.global_batch)
            for batch_values in dataset:
                values = self._eval_fn(batch_values)
                totals = [t + float(v) for t, v in zip(totals, values)]
        loss, top1, topk, count = totals
        count = max(count, 1.0)
        return {"top1": top1 / count, "top5": topk / count, "loss": loss / count,
                "count": int(count), "correct": int(top1), "image_size": size,
                "weights": "EMA" if ema or self._holds_ema else "raw"}

    # --- the run ----------------------------------------------------------------------

    def _maybe_relax(self, dataset):
        # TPUs compile one program per static shape: they keep the exact shapes.
        import tensorflow as tf
        if isinstance(self.strategy, tf.distribute.TPUStrategy):
            return dataset
        return steps_lib.relax_shapes(dataset)

    def stage_at(self, epoch: int) -> progressive_lib.Stage:
        """The plan's stage that contains ``epoch`` (0-based)."""
        for stage in self.plan:
            if stage.start_epoch <= epoch < stage.end_epoch:
                return stage
        return self.plan[-1]

    def _train_dataset_fn(self, stage: progressive_lib.Stage, epoch: int, skip: int):
        source, seed, batch = self.source, self.config.seed, self.global_batch

        def dataset_fn(context):
            ds = source.train_dataset(
                image_size=stage.image_size, batch_size=batch, augment=stage.augment,
                seed=seed, epoch=epoch, input_context=context, drop_remainder=True)
            return self._maybe_relax(ds.skip(skip) if skip else ds)
        return dataset_fn

    def _check_model_dir(self) -> None:
        """Refuses to resume a checkpoint that another run (other plan, model, data,
        class names or batch) wrote; config.json is left as it was."""
        if self.checkpointer.latest:
            self.run_dir.check_resume(self.run_config())

    def _save(self, reason: str) -> str | None:
        path = self.checkpointer.save()
        if self.chief:
            self.log(f"Saved checkpoint {path} ({reason}; step {_value(self.step)}, epoch "
                     f"{_value(self.epoch) + 1}, batch {_value(self.batch_in_epoch)}).")
        return path

    def run(self) -> TrainResult:
        """Train through every stage (resuming if ``model_dir`` has a checkpoint),
        evaluate, and write the outputs to ``model_dir``."""
        from keras_effnet.train.checkpointing import sigterm_as_interrupt  # TensorFlow

        with strategy_lib.dtype_policy(self.precision), sigterm_as_interrupt(), \
                self.strategy.scope():
            return self._run()

    def _run(self) -> TrainResult:
        started = time.time()
        config = self.config
        self._build()
        self._check_model_dir()
        resumed = self.checkpointer.restore_latest()
        for path, why in self.checkpointer.skipped:
            self.log(f"Warning: checkpoint {path} is damaged ({why}); resumed from the one "
                     "before it.")
        if resumed is None:
            finetune.start(self.state, config, self.source.class_names, self.log)
        if self.chief:
            self.run_dir.write_config(self.run_config())
        scalars = reporting.Scalars(str(self.run_dir.logs_dir) if self.chief else None)
        self._log_header(resumed)
        start_epoch, start_batch = _value(self.epoch), _value(self.batch_in_epoch)
        history = self.run_dir.history(before_epoch=start_epoch) if resumed else []
        current_stage, eval_every = None, config.resolved_eval_every_epochs()
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
                    self.state.dropout_rates.assign(
                        stage.dropout, progressive_lib.drop_path_scale(self.plan, stage))
                self._freeze_mode = finetune.set_phase(self.model, self._freeze_mode, config,
                                                       epoch, self.log)
                skip = start_batch if epoch == start_epoch else 0
                self.epoch.assign(epoch)
                self.batch_in_epoch.assign(skip)
                record = self._train_epoch(epoch, stage, skip, scalars)
                if record is None:  # max_train_steps reached inside the epoch
                    break
                self.epoch.assign(epoch + 1)
                self.batch_in_epoch.assign(0)
                # The last epoch's figures are the final evaluation's (same weights).
                if eval_every and epoch + 1 < config.epochs and (epoch + 1) % eval_every == 0:
                    self._evaluate_epoch(epoch, self.evaluate(), record, scalars)
                history.append(record)
                self._save(f"end of epoch {epoch + 1}")
                if self.chief:
                    self.run_dir.write_metrics({"history": history})
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

    def _train_epoch(self, epoch: int, stage: progressive_lib.Stage, skip: int,
                     scalars: reporting.Scalars) -> dict[str, Any] | None:
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
                    f"is {latest or 'none (nothing saved yet)'}. Lower learning_rate "
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
                  "dropout": stage.dropout, **stage.augment.record(),
                  "loss": float(np.mean(losses)) if losses else None,
                  "accuracy": correct / seen if seen else None,
                  "lr": float(self.schedule(self.optimizer.iterations)),
                  "step": _value(self.step), "seconds": time.time() - epoch_started}
        scalars.write("train", _value(self.step), {"epoch_loss": record["loss"],
                                                "accuracy": record["accuracy"]})
        return record

    def _evaluate_epoch(self, epoch: int, metrics: dict[str, Any] | None,
                        record: dict[str, Any], scalars: reporting.Scalars) -> None:
        """Held-out ``metrics`` after ``epoch``, added to its record, TensorBoard and log."""
        if not metrics:
            return
        record.update(val_top1=metrics["top1"], val_top5=metrics["top5"],
                      val_loss=metrics["loss"])
        scalars.write("eval", _value(self.step), {
            "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"]})
        self.log(f"epoch {epoch + 1}/{self.config.epochs}: val top-1 "
                 f"{metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} "
                 f"({metrics['weights']} weights, {metrics['image_size']}px)")

    def _log_header(self, resumed: str | None) -> None:
        stage = self.stage_at(_value(self.epoch)) if resumed else None
        for line in reporting.run_header(self, resumed, stage):
            self.log(line)

    def _finish(self, history: list[dict[str, Any]], resumed: str | None, started: float,
                scalars: reporting.Scalars) -> TrainResult:
        raw = self.evaluate(use_ema=False)
        if self.ema is not None:
            self.ema.copy_to_model()  # the saved model holds the EMA weights
            self._holds_ema = True
        # The saved model keeps the statistics its held-out figures were measured with.
        final = self.evaluate(use_ema=False, keep=True)
        if history and "val_top1" not in history[-1] and _value(self.batch_in_epoch) == 0 \
                and history[-1]["epoch"] == _value(self.epoch) - 1:
            self._evaluate_epoch(history[-1]["epoch"], final, history[-1], scalars)
        final_path = None
        freeze(self.model, "none")  # saved with every layer trainable, as any model
        if self.chief:
            final_path = str(self.run_dir.save_model(self.model))
            self.run_dir.write_labels(self.source.class_names)
            self.run_dir.write_metrics({
                "final": final, "raw_weights": raw, "history": history,
                "steps": _value(self.step), "epochs_completed": _value(self.epoch),
                "resumed_from": resumed, "wall_time_s": time.time() - started,
                "plan": [s.to_dict() for s in self.plan]})
            self.run_dir.write_config(self.run_config())
            if history:
                reporting.plot_curves(self.run_dir.curves_path, history, self.plan)
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

    >>> result = keras_effnet.train.train()   # the README's main job (no export)
    >>> result.top1
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(config, source=source, strategy=strategy, log=log).run()
