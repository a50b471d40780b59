"""Fine-tuning in the trainer: init_weights, freeze, unfreeze_at_epoch, resume across the
phase boundary, and scripts/train.py's one-line errors for bad starting weights."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_trainer_support import TINY_ARCH, ArraySource, model_weights, tiny_config

from keras_effnet.errors import ConfigError
from keras_effnet.names import CLASSIFIER_LAYER
from keras_effnet.train import TrainConfig, Trainer, train
from keras_effnet.train.finetune import freeze_mode, lr_phase

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
QUIET = dict(log=lambda _: None)


def _layer_values(model, kind):
    """{variable path: value} of the layers of ``kind``: "backbone" (all but the
    classifier), "stats" (BatchNorm moving statistics), "bn" (gamma / beta), "kernels"
    (conv kernels outside the classifier)."""
    out = {}
    for layer in model.layers:
        if layer.name == CLASSIFIER_LAYER:
            continue
        bn = type(layer).__name__ == "BatchNormalization"
        for w in layer.weights:
            stat = w.path.endswith(("moving_mean", "moving_variance"))
            if (kind == "backbone" or (kind == "stats" and stat)
                    or (kind == "bn" and bn and not stat)
                    or (kind == "kernels" and w.path.endswith("kernel"))):
                out[w.path] = np.array(w)
    assert out, kind
    return out


def _changed(a, b):
    return sorted(k for k in a if not np.array_equal(a[k], b[k]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A finished 4-class run: the starting weights of the fine-tuning runs."""
    model_dir = tmp_path_factory.mktemp("pretrained")
    result = train(tiny_config(model_dir, epochs=2, eval_every_epochs=0), source=ArraySource(),
                   **QUIET)
    return str(model_dir), result.model


# --- the request ------------------------------------------------------------------------

def test_fine_tuning_options_are_checked(tmp_path):
    for overrides, field, match in [
            (dict(freeze="head"), "freeze", "freeze must be one of"),
            (dict(unfreeze_at_epoch=1), "unfreeze_at_epoch", "needs freeze='backbone'"),
            (dict(freeze="bn", unfreeze_at_epoch=1), "unfreeze_at_epoch", "needs freeze="),
            (dict(freeze="backbone", unfreeze_at_epoch=2), "unfreeze_at_epoch",
             r"must be < epochs \(2\)"),
            (dict(freeze="backbone", unfreeze_at_epoch=0), "unfreeze_at_epoch", ">= 1"),
            (dict(unfreeze_lr_factor=0.0), "unfreeze_lr_factor", "must be a finite number"),
            # inf trained an epoch, then NaN, and the run could not be resumed
            (dict(unfreeze_lr_factor=float("inf")), "unfreeze_lr_factor",
             "must be a finite number > 0. Received: unfreeze_lr_factor=inf")]:
        with pytest.raises(ConfigError, match=match) as error:
            TrainConfig(epochs=2, stages=1, **overrides).validate()
        assert error.value.field == field
    config = TrainConfig(model_dir=str(tmp_path / "run"), init_weights=str(tmp_path / "no"))
    with pytest.raises(ConfigError, match="does not exist") as error:
        config.check_request()
    assert error.value.field == "init_weights"
    (tmp_path / "notes.h5").write_text("not weights")
    with pytest.raises(ConfigError, match="none of them"):
        dataclasses.replace(config, init_weights=str(tmp_path / "notes.h5")).check_request()
    assert TrainConfig().fine_tune_record() is None
    record = TrainConfig(epochs=4, stages=1, init_weights="w.keras", freeze="backbone",
                         unfreeze_at_epoch=2).fine_tune_record()
    assert record == {"init_weights": os.path.abspath("w.keras"), "freeze": "backbone",
                      "unfreeze_at_epoch": 2, "unfreeze_lr_factor": 0.1}


def test_freeze_mode_and_learning_rate_are_functions_of_the_epoch_and_step():
    assert [freeze_mode("backbone", 2, e) for e in range(4)] == ["backbone"] * 2 + ["bn"] * 2
    assert [freeze_mode("bn", None, e) for e in range(2)] == ["bn", "bn"]
    assert [freeze_mode("none", None, e) for e in range(2)] == ["none", "none"]
    config = TrainConfig(epochs=4, stages=1, freeze="backbone", unfreeze_at_epoch=3,
                         unfreeze_lr_factor=0.25)
    assert lr_phase(config, 10) == (30, 0.25) and lr_phase(TrainConfig(), 10) is None
    from keras_effnet.train.lr_schedule import PhasedSchedule
    from keras_effnet.train.lr_schedule import WarmupDecaySchedule
    base = WarmupDecaySchedule(0.1, steps_per_epoch=10, warmup_epochs=0, kind="constant")
    phased = PhasedSchedule(base, 30, 0.25)
    assert [round(float(phased(s)), 6) for s in (0, 29, 30, 99)] == [0.1, 0.1, 0.025, 0.025]
    again = PhasedSchedule.from_config(phased.get_config())
    assert float(again(31)) == pytest.approx(0.025)


# --- training -----------------------------------------------------------------------------

def test_frozen_backbone_keeps_the_loaded_weights_and_a_new_classifier_trains(pretrained,
                                                                              tmp_path):
    source_dir, source_model = pretrained
    logs = []
    # 3 classes: the pretrained run's 4-class classifier does not fit; everything else loads.
    result = train(tiny_config(tmp_path, init_weights=source_dir, freeze="backbone"),
                   source=ArraySource(classes=3), log=logs.append)
    loaded = _layer_values(source_model, "backbone")
    # The saved model holds the EMA weights: restarted from the loaded ones, so equal too.
    assert _changed(loaded, _layer_values(result.model, "backbone")) == []
    head = result.model.get_layer(CLASSIFIER_LAYER)
    assert head.units == 3 and np.abs(np.array(head.kernel)).max() > 0  # moved from zero
    assert any("classifier new" in line for line in logs)
    assert any("training the classifier only" in line for line in logs)
    # Nothing is left frozen in the saved model, nor in the file export and pruning load.
    assert all(layer.trainable for layer in result.model.layers)
    import keras
    saved = keras.saving.load_model(result.final_model_path)
    assert all(layer.trainable for layer in saved.layers)
    assert len(saved.trainable_weights) == len(result.model.trainable_weights)
    assert _changed(loaded, _layer_values(saved, "backbone")) == []
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["fine_tune"]["init_weights"] == os.path.abspath(source_dir)


def test_freeze_bn_keeps_the_statistics_and_trains_the_rest(pretrained, tmp_path):
    source_dir, source_model = pretrained
    logs = []
    result = train(tiny_config(tmp_path, init_weights=source_dir, freeze="bn", epochs=1,
                               stages=1), source=ArraySource(), log=logs.append)
    # Same classes and names as the pretrained run: its classifier is kept.
    assert any("classifier too" in line for line in logs)
    # Statistics fixed (and not recalibrated: recalibrate_bn is on by default), BN's
    # gamma / beta fixed, the convolutions trained.
    for kind in ("stats", "bn"):
        assert _changed(_layer_values(source_model, kind),
                        _layer_values(result.model, kind)) == [], kind
    kernels = _layer_values(source_model, "kernels")
    assert len(_changed(kernels, _layer_values(result.model, "kernels"))) == len(kernels)


def test_another_architecture_is_refused_before_anything_is_written(tmp_path):
    import keras_effnet
    other = keras_effnet.build(arch="r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o24_se0.25",
                               classes=4)
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    with pytest.raises(ConfigError, match="at layer 'stage2_block01_project_conv'") as error:
        train(tiny_config(tmp_path / "run", init_weights=path), source=ArraySource(), **QUIET)
    assert error.value.field == "init_weights" and "\n" not in str(error.value)
    assert not (tmp_path / "run" / "config.json").exists()
    assert not (tmp_path / "run" / "checkpoints" / "checkpoint").exists()


def _unfreeze_config(model_dir, source_dir):
    return tiny_config(model_dir, init_weights=source_dir, freeze="backbone",
                       unfreeze_at_epoch=1, epochs=2, eval_every_epochs=0)


def test_unfreezing_at_an_epoch_and_resuming_on_either_side_of_it(pretrained, tmp_path):
    source_dir, source_model = pretrained
    # Uninterrupted: epoch 1 trains the classifier, epoch 2 every layer but BatchNorm at a
    # tenth of the learning rate.
    trainer = Trainer(_unfreeze_config(tmp_path / "a", source_dir), source=ArraySource(),
                      **QUIET)
    a = trainer.run()
    assert sorted(trainer._train_fns) == ["backbone", "bn"]  # one trace per freeze mode
    loaded = _layer_values(source_model, "kernels")
    assert len(_changed(loaded, _layer_values(a.model, "kernels"))) == len(loaded)
    assert _changed(_layer_values(source_model, "stats"), _layer_values(a.model, "stats")) == []
    full = trainer.schedule.schedule  # the recipe's schedule, before the factor
    assert a.history[1]["lr"] == pytest.approx(0.1 * float(full(16)), rel=1e-6)
    # Stopped at the end of phase 1 (step 8): the backbone has not moved.
    b_dir = tmp_path / "b"
    first = train(_unfreeze_config(b_dir, source_dir), source=ArraySource(),
                  max_train_steps=8, **QUIET)
    assert _changed(_layer_values(source_model, "backbone"),
                    _layer_values(first.model, "backbone")) == []
    # Stopped mid-phase 1 (step 5) and mid-phase 2 (step 12), each resumed to the end:
    # the uninterrupted run's weights, optimizer and EMA included.
    for name, stop in (("c", 5), ("d", 12)):
        config = _unfreeze_config(tmp_path / name, source_dir)
        train(config, source=ArraySource(), max_train_steps=stop, **QUIET)
        logs = []
        resumed = train(config, source=ArraySource(), log=logs.append)
        assert resumed.resumed_from and resumed.steps == a.steps == 16
        assert not any("Starting weights" in line for line in logs)  # the checkpoint wins
        for wa, wb in zip(model_weights(a.model), model_weights(resumed.model)):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    # Resuming under another freeze schedule is refused.
    changed = dataclasses.replace(_unfreeze_config(tmp_path / "d", source_dir),
                                  unfreeze_lr_factor=0.5)
    with pytest.raises(ValueError, match="its fine_tune.unfreeze_lr_factor is 0.1 .* this run.s is 0.5"):
        train(changed, source=ArraySource(), **QUIET)


# --- scripts/train.py ---------------------------------------------------------------------

def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


def test_script_bad_starting_weights_are_one_line_and_exit_2(tmp_path):
    result = _run(f"--init_weights={tmp_path / 'missing.keras'}",
                  f"--model_dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2, result.stderr
    # (TensorFlow's start-up lines, where this TensorFlow prints them, are not ours.)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: --init_weights: ")
    assert "does not exist" in lines[0] and "Traceback" not in result.stderr
    import keras_effnet
    path = str(tmp_path / "other.weights.h5")
    keras_effnet.build(arch="r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o24_se0.25",
                       classes=10).save_weights(path)
    result = _run(f"--model={TINY_ARCH}", "--image_size=16", "--min_image_size=16",
                  "--stages=1", "--epochs=1", "--noexport", f"--init_weights={path}",
                  f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --init_weights: The weights "
                                                     "do not fit")
    assert "'stage2_block01_project_conv'" in errors[0]
    assert "Traceback" not in result.stderr and "Epoch 1/1" not in result.stdout
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_mirrored_fine_tuning_equals_the_default_strategy(tmp_path):
    # Two replicas of one CPU, a fresh process (logical devices are set before TensorFlow
    # starts): the same fine-tuning run, phase switch included, gives the same weights.
    import textwrap
    tests = Path(__file__).resolve().parent
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tests), str(ROOT),
                                                 os.environ.get("PYTHONPATH", "")])}
    code = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = tf.config.LogicalDeviceConfiguration()
        tf.config.set_logical_device_configuration(cpu, [logical, logical])
        from test_trainer_support import ArraySource, tiny_config, model_weights
        from keras_effnet.train import train
        quiet = dict(log=lambda _: None)
        train(tiny_config(r"{tmp_path}/pre", epochs=1, stages=1, eval_every_epochs=0),
              source=ArraySource(), **quiet)
        common = dict(epochs=2, dropout=0.0, init_weights=r"{tmp_path}/pre",
                      freeze="backbone", unfreeze_at_epoch=1, max_train_steps=12,
                      eval_every_epochs=0)
        default = train(tiny_config(r"{tmp_path}/default", strategy="default", **common),
                        source=ArraySource(), **quiet)
        mirrored = train(tiny_config(r"{tmp_path}/mirrored", **common), source=ArraySource(),
                         strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                         **quiet)
        diffs = [float(np.abs(a - b).max()) for a, b in
                 zip(model_weights(default.model), model_weights(mirrored.model))]
        print(json.dumps({{"max_diff": max(diffs), "steps": [default.steps, mirrored.steps]}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == [12, 12] and report["max_diff"] < 1e-4, report
