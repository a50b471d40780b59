"""The trainer, in process, with a tiny model and an in-memory source."""

import dataclasses
import json
import os

import numpy as np
import pytest

from test_trainer_support import ArraySource, model_weights, tiny_config

from keras_effnet.train import NonFiniteLossError, TrainConfig, Trainer, train


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """One 4-epoch, 2-stage paper-mode run (dropout 0.1 -> 0.5) shared by several tests."""
    model_dir = tmp_path_factory.mktemp("paper_run")
    source = ArraySource(num_train=64, num_val=24)
    config = tiny_config(model_dir, epochs=4, progressive_mode="paper", dropout=0.5,
                         checkpoint_every_steps=3)
    logs = []
    trainer = Trainer(config, source=source, log=logs.append)
    from keras_effnet.train.dropout_rates import DropoutRates
    assign = DropoutRates.assign
    trainer.assigned = []

    def spy(self, dropout, drop_path_scale=1.0):
        trainer.assigned.append((dropout, drop_path_scale))
        return assign(self, dropout, drop_path_scale)
    DropoutRates.assign = spy
    try:
        result = trainer.run()
    finally:
        DropoutRates.assign = assign
    return trainer, result, source, logs, model_dir


def test_stages_get_their_own_dataset_and_dropout(paper_run):
    trainer, result, source, logs, _ = paper_run
    plan = trainer.plan
    assert [(s.image_size, s.dropout) for s in plan] == [(8, pytest.approx(0.1)),
                                                         (16, pytest.approx(0.5))]
    # A new dataset per epoch, at the stage's size, from the (seed, epoch) order.
    assert [(c["epoch"], c["image_size"]) for c in source.calls] == [
        (0, 8), (1, 8), (2, 16), (3, 16)]
    assert all(c["batch_size"] == 8 and c["seed"] == 0 for c in source.calls)
    assert [c["augment"] for c in source.calls] == [plan[0].augment] * 2 + [plan[1].augment] * 2
    # Each stage set its rates (dropout, and stochastic depth in proportion), and the step
    # read them without a new trace: one trace for both stages.
    assert trainer.assigned == [(pytest.approx(0.1), pytest.approx(0.2)),
                                (pytest.approx(0.5), pytest.approx(1.0))]
    assert {round(rate, 6) for rate, _ in trainer.traces} == {0.1}
    assert len(trainer.traces) == 1
    values = trainer.state.dropout_rates.values()
    assert values["top_dropout"] == pytest.approx(0.5)
    assert trainer.model.get_layer("top_dropout").rate == pytest.approx(0.5)
    assert [h["image_size"] for h in result.history] == [8, 8, 16, 16]
    assert [h["stage"] for h in result.history] == [0, 0, 1, 1]
    banners = [line for line in logs if "Stage " in line and "image" in line]
    assert len(banners) == 2 and "image 16px" in banners[1] and "dropout 0.50" in banners[1]


def test_schedule_optimizer_and_ema_carry_across_stages(paper_run):
    trainer, result, *_ = paper_run
    assert result.steps == 4 * 8 == int(trainer.optimizer.iterations)
    lrs = [h["lr"] for h in result.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1]  # one decaying schedule
    from keras_effnet.train import learning_rate
    assert lrs[-1] == pytest.approx(learning_rate(32, **trainer.schedule_kwargs), rel=1e-5)


def test_outputs_in_model_dir(paper_run):
    trainer, result, source, logs, model_dir = paper_run
    names = set(os.listdir(model_dir))
    assert {"final_model.keras", "labels.txt", "config.json", "metrics.json",
            "training_curves.png", "checkpoints", "logs"} <= names
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"] == trainer.config.model
    assert config["dataset"] == "array" and config["data_dir"] is None
    assert config["eval_image_size"] == 16 and config["num_classes"] == 4
    assert config["train_config"]["epochs"] == 4 and len(config["plan"]) == 2
    assert (model_dir / "labels.txt").read_text().split() == source.class_names
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 4 and metrics["steps"] == 32
    assert metrics["final"]["count"] == 24 and 0 <= metrics["final"]["top1"] <= 1
    assert (model_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [f for d in ("train", "eval") for f in os.listdir(model_dir / "logs" / d)]
    assert len(events) == 2 and all(f.startswith("events.out.tfevents") for f in events)
    assert any("Held-out top-1" in line for line in logs)
    assert any(line.startswith("stage") and "val top-1" in line for line in
               "\n".join(logs).splitlines())


def test_the_last_epoch_is_measured_once_by_the_final_evaluation(paper_run):
    trainer, result, source, logs, model_dir = paper_run
    history = json.loads((model_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all("val_top1" in h for h in history)  # eval_every_epochs=1
    final = json.loads((model_dir / "metrics.json").read_text())["final"]
    assert history[-1]["val_top1"] == final["top1"] == result.top1
    assert history[-1]["val_loss"] == final["loss"]
    # One log line per epoch, the last one written after training ended.
    epoch_lines = [line for line in logs if line.startswith("epoch ") and "val top-1" in line]
    assert [line.split(":")[0] for line in epoch_lines] == [f"epoch {i}/4" for i in range(1, 5)]


def test_evaluating_does_not_change_what_trains(tmp_path):
    runs = []
    for every in (1, 0):
        trainer = Trainer(tiny_config(tmp_path / f"every{every}", eval_every_epochs=every,
                                      verbose=0), source=ArraySource())
        trainer.run()
        runs.append(model_weights(trainer.model))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_tensorboard_scalars_are_readable(paper_run):
    import tensorflow as tf
    *_, model_dir = paper_run
    train_dir = model_dir / "logs" / "train"
    (event_file,) = list(train_dir.iterdir())
    tags = set()
    for raw in tf.data.TFRecordDataset(str(event_file)):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            tags.add(value.tag)
    assert {"loss", "learning_rate", "image_size", "dropout", "accuracy"} <= tags


def test_final_model_holds_the_ema_weights(paper_run):
    import keras
    trainer, result, *_, model_dir = paper_run
    reloaded = keras.models.load_model(model_dir / "final_model.keras")
    averages = [np.array(v) for v in trainer.ema.averages]
    floats = [v for v in reloaded.weights if "float" in str(v.dtype)]
    assert len(floats) == len(averages)
    recalibrated = 0
    for variable, average in zip(floats, averages):
        if variable.path.endswith(("moving_mean", "moving_variance")):
            # BatchNorm statistics recomputed for the EMA weights (precise BN)
            recalibrated += not np.allclose(np.array(variable), average)
        else:
            np.testing.assert_allclose(np.array(variable), average, rtol=0, atol=0)
    assert recalibrated > 0
    # The EMA really is an average: it differs from the last raw step.
    assert result.raw_top1 is not None
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0).sum(-1), 1.0, rtol=1e-5)


def test_step_checkpoints_and_rerun_of_a_finished_run(paper_run):
    trainer, result, source, logs, model_dir = paper_run
    saves = [line for line in logs if line.startswith("Saved checkpoint")]
    assert any("every 3 steps" in line for line in saves)
    assert sum("end of epoch" in line for line in saves) == 4
    # The same command again: nothing left to train, it restores and evaluates.
    again = Trainer(trainer.config, source=ArraySource(num_train=64, num_val=24),
                    log=lambda _: None).run()
    assert again.resumed_from and again.steps == result.steps
    assert again.top1 == pytest.approx(result.top1)


def test_resume_mid_epoch_equals_an_uninterrupted_run(paper_run, tmp_path):
    # Run B stops after 5 steps (mid-epoch 1 of the paper run's 8-step epochs) and the same
    # call resumes it, across the stage boundary, to the end. Same data position, LR,
    # optimizer, EMA and dropout RNG as the uninterrupted paper run -> the same weights.
    trainer_a, a, *_ = paper_run
    config_b = dataclasses.replace(trainer_a.config, model_dir=str(tmp_path),
                                   eval_every_epochs=0, checkpoint_every_steps=0)
    first = train(config_b, source=ArraySource(), log=lambda _: None, max_train_steps=5)
    assert first.steps == 5 and first.epochs_completed == 0
    source = ArraySource()
    logs = []
    b = train(config_b, source=source, log=logs.append)
    assert b.resumed_from and b.steps == a.steps == 32
    assert any("Resumed from" in line and "step 5," in line and "batch 5 " in line
               for line in logs)
    # The resumed epoch re-created epoch 0's order (and skipped the consumed batches).
    assert [c["epoch"] for c in source.calls] == [0, 1, 2, 3]
    for wa, wb in zip(model_weights(a.model), model_weights(b.model)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import tensorflow as tf
    source = ArraySource(nan_batch=(1, 2))  # epoch 1, batch 2 is NaN
    config = tiny_config(tmp_path, epochs=2, eval_every_epochs=0)
    with pytest.raises(NonFiniteLossError,
                       match=r"Loss became nan at step 11 \(epoch 2.*Lower learning_rate"):
        train(config, source=source, log=lambda _: None)
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("ckpt-1")  # end of epoch 1: nothing saved after the NaN
    values = [tf.train.load_variable(latest, name) for name, _ in
              tf.train.list_variables(latest) if "model/" in name]
    assert values and all(np.all(np.isfinite(v)) for v in values
                          if np.issubdtype(np.asarray(v).dtype, np.floating))


@pytest.mark.parametrize("precision", ["mixed_float16"])
def test_mixed_precision(tmp_path, precision):
    import keras
    trainer = Trainer(tiny_config(tmp_path, mixed_precision=precision, max_train_steps=3,
                                  eval_every_epochs=0), source=ArraySource(),
                      log=lambda _: None)
    result = trainer.run()
    assert result.steps == 3 and np.isfinite(result.loss)
    assert trainer.model.get_layer("stem_conv").compute_dtype == precision.split("_")[1]
    assert trainer.model.get_layer("predictions").compute_dtype == "float32"
    loss_scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert loss_scaled == (precision == "mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after


def test_config_validation_errors(tmp_path):
    from keras_effnet.errors import ConfigError
    for config, field, match in [
            (TrainConfig(epochs=2, stages=4), "stages", "stages .* must be <= epochs"),
            (TrainConfig(strategy="gpu"), "strategy", "strategy must be one of"),
            (TrainConfig(batch_size=0), "batch_size", "batch_size must be an integer >= 1"),
            (TrainConfig(ema_decay=1.0), "ema_decay", r"ema_decay must be in \[0.0, 1.0\)")]:
        with pytest.raises(ConfigError, match=match) as error:
            config.validate()
        assert error.value.field == field
    for config, field, match in [
            (TrainConfig(model="efficientnetv2-zz"), "model", "Unknown model"),
            (TrainConfig(dataset="imagenet"), "dataset", "dataset must be one of"),
            (TrainConfig(dataset="folder"), "data_dir", "needs data_dir"),
            (TrainConfig(dataset="tfrecord", data_dir=str(tmp_path / "no")), "data_dir",
             "does not exist")]:
        with pytest.raises(ConfigError, match=match) as error:
            config.check_request()
        assert error.value.field == field
    TrainConfig(dataset="tfds:cifar10").check_request()  # no download to check a name
    with pytest.raises(ConfigError, match="fewer than one global batch") as error:
        Trainer(tiny_config(tmp_path, batch_size=128), source=ArraySource())
    assert error.value.field == "batch_size"
    with pytest.raises(ValueError, match="Unknown model 'efficientnetv2-zz'"):
        Trainer(tiny_config(tmp_path, model="efficientnetv2-zz"), source=ArraySource())


def test_resuming_with_different_flags_is_refused(paper_run):
    trainer, *_, model_dir = paper_run
    changed = dataclasses.replace(trainer.config, image_size=12)
    before = (model_dir / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"holds a checkpoint of another run: its "
                                         r"plan\[1\]\.image_size is 16 .* this run.s is 12;") \
            as error:
        train(changed, source=ArraySource(), log=lambda _: None)
    assert error.value.field == "model_dir" and "config.json" in str(error.value)
    assert (model_dir / "config.json").read_bytes() == before  # the first run's record


def test_digits_defaults_resolve_to_a_small_v2(tmp_path):
    # No training: the resolution the no-flag main job relies on.
    class Digits(ArraySource):
        name = "digits"
    trainer = Trainer(TrainConfig(model_dir=str(tmp_path)),
                      source=Digits(num_train=128, num_val=8, classes=10))
    assert trainer.variant.name == "efficientnetv2-b0-w0.5-d0.5"
    # 128 px last, 80 px first; the paper's schedule: dropout 0.1 -> the recipe's 0.2, and
    # stochastic depth with it (half the variant's rates at 80 px)
    assert [s.image_size for s in trainer.plan] == [80, 96, 112, 128]
    assert trainer.config.resolved_progressive_mode() == "paper"
    assert [round(s.dropout, 4) for s in trainer.plan] == [0.1, 0.1333, 0.1667, 0.2]
    from keras_effnet.train.progressive import drop_path_scale
    assert [round(drop_path_scale(trainer.plan, s), 4) for s in trainer.plan] == [
        0.5, 0.6667, 0.8333, 1.0]
    fixed = Trainer(TrainConfig(model_dir=str(tmp_path), stages=1),
                    source=Digits(num_train=128, num_val=8, classes=10))
    assert [(s.image_size, s.dropout) for s in fixed.plan] == [(128, 0.2)]  # the end values
    assert TrainConfig(dataset="folder", data_dir="x").resolved_progressive_mode() == "automl"
    assert TrainConfig(progressive_mode="automl").resolved_progressive_mode() == "automl"
    assert trainer.eval_image_size == 128
    assert trainer.schedule_kwargs["base_lr"] == pytest.approx(0.004)
    assert trainer.config.epochs == 12
    assert [(s.start_epoch, s.end_epoch) for s in trainer.plan] == [(0, 3), (3, 6), (6, 9),
                                                                    (9, 12)]
    assert trainer.schedule_kwargs["warmup_epochs"] == pytest.approx(1.2)  # 12 / 10, >= 1
    short = Trainer(TrainConfig(model_dir=str(tmp_path), epochs=8),
                    source=Digits(num_train=128, num_val=8, classes=10))
    assert short.schedule_kwargs["warmup_epochs"] == pytest.approx(1.0)  # 8 / 10 -> 1
    assert trainer.schedule_kwargs["decay_epochs"] == 2.4
    explicit = Trainer(TrainConfig(model="efficientnetv2-s", model_dir=str(tmp_path)),
                       source=Digits(num_train=128, num_val=8, classes=10))
    assert explicit.variant.name == "efficientnetv2-s"  # only the default model is shrunk
    # Evaluated at each 2-epoch stage's end on the embedded sets, every epoch elsewhere.
    assert TrainConfig(dataset="mnist5k").resolved_eval_every_epochs() == 2
    assert TrainConfig(dataset="digits", eval_every_epochs=1).resolved_eval_every_epochs() == 1
    assert TrainConfig(dataset="folder", data_dir="x").resolved_eval_every_epochs() == 1
    assert TrainConfig(dataset="digits", eval_every_epochs=0).resolved_eval_every_epochs() == 0


def test_top_k_counts_ties_like_argmax():
    import tensorflow as tf

    from keras_effnet.train.steps import rank_of_target
    probs = tf.constant([[0.25] * 4, [0.25] * 4, [0.1, 0.5, 0.3, 0.1], [0.1, 0.5, 0.3, 0.1]])
    target = tf.constant([0, 2, 2, 3])
    # A uniform output is right only for class 0 (argmax's choice), not for all classes.
    assert rank_of_target(probs, target).numpy().tolist() == [0, 2, 1, 3]


def test_strategy_and_precision_resolution(monkeypatch):
    import tensorflow as tf

    from keras_effnet.train import strategy as S
    default = S.resolve_strategy("default")
    assert default is tf.distribute.get_strategy() and S.is_chief(default)
    assert S.resolve_strategy("auto").num_replicas_in_sync == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        S.resolve_strategy("multi_worker")
    with pytest.raises(ValueError, match="strategy must be one of"):
        S.resolve_strategy("gpu")
    assert S.resolve_precision("auto", default) == "float32"  # CPU
    assert S.resolve_precision("mixed_bfloat16", default) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        S.resolve_precision("fp8", default)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        S.resolve_strategy("auto")
