"""fit_progressive: progressive learning around a user's own model.fit."""

import pytest

from test_trainer_support import TINY_ARCH, ArraySource

from keras_effnet.train import fit_progressive, progressive_plan

# TINY_ARCH with a second block per stage: block 1 of each has a drop path
SKIP_ARCH = "r2_k3_s1_e1_i8_o8_f,r2_k3_s2_e2_i8_o16_se0.25"


def test_fit_progressive_runs_each_stage_with_its_size_and_dropout(monkeypatch):
    import keras

    from keras_effnet import build

    traced = []  # (rate, training) each time a Dropout call is traced
    original = keras.layers.Dropout.call

    paths = []  # (layer, rate) each time a drop path's training call is traced

    def recording_call(self, inputs, training=False):
        if self.name == "top_dropout":
            traced.append((self.rate, bool(training)))
        elif training:
            paths.append((self.name, round(self.rate, 6)))
        return original(self, inputs, training=training)

    monkeypatch.setattr(keras.layers.Dropout, "call", recording_call)

    source = ArraySource(num_train=32, num_val=16)
    plan = progressive_plan({"train_size": 16, "dropout": 0.5, "reduction": 4}, epochs=3, stages=2,
                            mode="paper", min_image_size=8)
    assert [(s.start_epoch, s.end_epoch, s.image_size) for s in plan] == [(0, 1, 8),
                                                                        (1, 3, 16)]
    model = build(arch=SKIP_ARCH.split(","), input_shape=(None, None, 3),
                  classes=source.num_classes, dropout=0.1, drop_path_rate=0.4)
    drop_paths = [layer for layer in model.layers if layer.name.endswith("drop_path")]
    built = [float(layer.rate) for layer in drop_paths]
    assert len(drop_paths) == 2 and min(built) > 0
    model.compile(keras.optimizers.RMSprop(1e-3), "categorical_crossentropy",
                  metrics=["accuracy"])
    sizes = []

    def dataset_fn(stage):
        sizes.append(stage.image_size)
        return source.train_dataset(stage.image_size, 8, seed=0, epoch=stage.start_epoch)

    history = fit_progressive(model, dataset_fn, plan,
                              validation_fn=lambda s: source.eval_dataset(s.image_size, 8),
                              verbose=0)
    assert sizes == [8, 16]
    assert history.epoch == [0, 1, 2]
    assert history.history["image_size"] == [8, 16, 16]
    assert history.history["dropout"] == pytest.approx([0.1, 0.5, 0.5])
    assert len(history.history["loss"]) == len(history.history["val_accuracy"]) == 3
    assert history.stages == plan
    assert model.get_layer("top_dropout").rate == pytest.approx(0.5)
    # paper mode: stochastic depth ramps with dropout (0.1 / 0.5 of the built rates first)
    assert history.history["drop_path_scale"] == pytest.approx([0.2, 1.0, 1.0])
    assert [layer.rate for layer in drop_paths] == pytest.approx(built)
    training_rates = sorted({round(rate, 6) for rate, training in traced if training})
    assert training_rates == [0.1, 0.5]  # the second stage's train step was retraced

    # Resuming a notebook run: stages before initial_epoch are skipped.
    again = fit_progressive(model, dataset_fn, plan, initial_epoch=2, verbose=0)
    assert again.epoch == [2] and sizes[-1] == 16
    # Each stage's train step was traced with its drop-path rates: 0.2 of the built
    # ones, then the built ones.
    names = [layer.name for layer in drop_paths]
    scaled = set(zip(names, [round(0.2 * r, 6) for r in built]))
    full = set(zip(names, [round(r, 6) for r in built]))
    assert set(paths) == scaled | full
    assert set(paths[:len(names)]) == scaled and set(paths[-len(names):]) == full


def test_set_drop_path_scale_scales_the_built_rates_only():
    from keras_effnet import build
    from keras_effnet.train.fit import set_drop_path_scale

    model = build(arch=SKIP_ARCH.split(","), input_shape=(16, 16, 3), classes=3,
                  dropout=0.2, drop_path_rate=0.5)
    drop_paths = [layer for layer in model.layers if layer.name.endswith("drop_path")]
    built = [float(layer.rate) for layer in drop_paths]
    assert set_drop_path_scale(model, 0.5)
    assert [layer.rate for layer in drop_paths] == pytest.approx([0.5 * r for r in built])
    assert not set_drop_path_scale(model, 0.5)  # nothing changed
    assert set_drop_path_scale(model, 1.0)
    assert [layer.rate for layer in drop_paths] == pytest.approx(built)
    assert model.get_layer("top_dropout").rate == pytest.approx(0.2)  # the head's own
    with pytest.raises(ValueError, match="drop_path_scale must be >= 0"):
        set_drop_path_scale(model, -1.0)


def test_fit_progressive_rejects_arguments_the_plan_sets():
    plan = progressive_plan({"train_size": 16, "reduction": 4}, epochs=2, stages=2,
                            min_image_size=8)
    with pytest.raises(ValueError, match="sets 'epochs' from the plan"):
        fit_progressive(None, lambda s: None, plan, epochs=3)
    with pytest.raises(ValueError, match="plan is empty"):
        fit_progressive(None, lambda s: None, [])
