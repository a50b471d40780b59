"""Starting weights (keras_effnet_weights.load_weights, build(weights=...)) and freeze."""

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet.names import CLASSIFIER_LAYER
from keras_effnet.port import keras_applications_model
from keras_effnet.run_dir import RunDir
from keras_effnet.train.finetune import freeze
from keras_effnet.weights import load_weights

TINY = ["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e2_i8_o16_se0.25"]
SIZE = 32


def _tiny(classes=3, arch=TINY, **kwargs):
    return keras_effnet.build(arch=arch, classes=classes, name="tiny", **kwargs)


def _images(n=4, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _backbone_weights(model):
    return {w.path: np.array(w) for layer in model.layers if layer.name != CLASSIFIER_LAYER
            for w in layer.weights}


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_effnet_file_same_classes_gives_equal_outputs(tmp_path, suffix):
    source = _tiny()
    path = str(tmp_path / f"tiny{suffix}")
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    target = _tiny(weights=path)
    x = _images()
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0),
                               atol=1e-6)
    assert load_weights(_tiny(), path) == []


def test_other_class_count_gets_a_new_classifier_and_everything_else(tmp_path):
    source = _tiny(classes=5)
    path = str(tmp_path / "five.keras")
    source.save(path)
    fresh = _tiny(classes=3)
    new = load_weights(fresh, path)
    assert new == [CLASSIFIER_LAYER]
    theirs, ours = _backbone_weights(source), _backbone_weights(fresh)
    assert theirs.keys() == ours.keys()
    assert all(np.array_equal(theirs[k], ours[k]) for k in theirs)
    assert fresh.get_layer(CLASSIFIER_LAYER).units == 3


def test_run_directory_loads_its_final_model(tmp_path):
    source = _tiny(classes=2)
    RunDir(tmp_path / "run").save_model(source)
    target = _tiny(classes=2, weights=str(tmp_path / "run"))
    x = _images()
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0),
                               atol=1e-6)
    with pytest.raises(ValueError, match="not a finished training run"):
        _tiny(weights=str(tmp_path))


def test_no_top_and_pyramid_models_load_a_full_models_weights(tmp_path):
    source = _tiny()
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    features = _tiny(include_top=False, weights=path)
    assert load_weights(features, path) == []
    x = _images()
    head = keras.Model(source.input, source.get_layer("top_activation").output)
    np.testing.assert_allclose(features.predict(x, verbose=0), head.predict(x, verbose=0),
                               atol=1e-6)
    five = TINY + ["r1_k3_s2_e2_i16_o16_f"] * 3
    source = _tiny(arch=five)
    source.save_weights(path)
    pyramid = _tiny(arch=five, include_top=False, pyramid_outputs=True, weights=path)
    last = keras.Model(source.input, source.get_layer("stage5_block01_project_bn").output)
    np.testing.assert_allclose(pyramid.predict(x, verbose=0)["P5"], last.predict(x, verbose=0),
                               atol=1e-6)


def test_another_architecture_is_one_line_naming_the_first_mismatch(tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    _tiny().save_weights(path)
    wider = ["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e2_i8_o24_se0.25"]
    target = _tiny(arch=wider)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match=r"at layer 'stage2_block01_project_conv'") as info:
        load_weights(target, path)
    assert "\n" not in str(info.value) and "Received: weights=" in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))
    with pytest.raises(ValueError, match=r"at layer 'top_conv'"):  # a shallower model
        _tiny(arch=TINY[:1], weights=path)
    (tmp_path / "notes.h5").write_text("not weights")
    with pytest.raises(ValueError, match="none of them"):
        _tiny(weights=str(tmp_path / "notes.h5"))


def test_a_deeper_file_is_refused_where_every_layer_of_the_model_fits(tmp_path):
    # A pyramid model has no head conv, so each of its layers finds its like in a file
    # with one block more: the spare layers at the end give it away.
    five = TINY + ["r1_k3_s2_e2_i16_o16_f", "r1_k3_s2_e2_i16_o16_f", "r1_k3_s2_e2_i16_o16_f"]
    path = str(tmp_path / "deeper.weights.h5")
    _tiny(arch=five + ["r1_k3_s1_e2_i16_o16_f"]).save_weights(path)
    with pytest.raises(ValueError, match="deeper architecture"):
        _tiny(arch=five, include_top=False, pyramid_outputs=True, weights=path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "h5"])
def test_keras_applications_file_from_a_weights_none_model(tmp_path, fmt):
    # V2 keras.applications at 32 px, no preprocessing on either side: bare backbones.
    source = keras_applications_model("efficientnetv2-b0", input_shape=(SIZE, SIZE, 3),
                                       include_preprocessing=False, classes=7,
                                       classifier_activation=None)
    path = str(tmp_path / f"v2b0.{fmt}")
    if fmt == "weights.h5":
        source.save_weights(path)
    else:
        source.save(path)  # ".h5": the legacy whole-model format
    kwargs = dict(include_preprocessing=False, input_shape=(SIZE, SIZE, 3))
    target = keras_effnet.build("efficientnetv2-b0", weights=path, classes=7,
                                classifier_activation=None, **kwargs)
    x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype("float32")
    a, b = source.predict(x, verbose=0), target.predict(x, verbose=0)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    if fmt == "keras":  # another class count: features equal, classifier new
        other = keras_effnet.build("efficientnetv2-b0", weights=path, classes=3, **kwargs)
        feats = [keras.Model(m.input, m.get_layer("top_activation").output).predict(x, verbose=0)
                 for m in (source, other)]
        np.testing.assert_allclose(feats[1], feats[0], atol=1e-4 * np.abs(feats[0]).max())


def test_keras_applications_v1_legacy_h5_skips_its_normalization(tmp_path):
    source = keras_applications_model("efficientnet-b0", include_top=False,
                                      input_shape=(SIZE, SIZE, 3))
    path = str(tmp_path / "b0_notop.h5")
    source.save(path)
    target = keras_effnet.build("efficientnet-b0", include_top=False, weights=path,
                                include_preprocessing=False, input_shape=(SIZE, SIZE, 3))
    # keras.applications V1 divides by 255, then its (never adapted) Normalization is
    # the identity: scaling by 255 lines the two up, as in test_port.
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype("float32")
    a, b = source.predict(x * 255.0, verbose=0), target.predict(x, verbose=0)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())


def _fit(model, steps=3):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    x = _images(8, seed=3)
    y = keras.utils.to_categorical(np.arange(8) % 3, 3)
    model.fit(x, y, batch_size=4, epochs=steps // 2 + 1, verbose=0)


def test_freeze_backbone_trains_only_the_classifier():
    model = freeze(_tiny(), "backbone")
    before = _backbone_weights(model)
    head = model.get_layer(CLASSIFIER_LAYER).get_weights()[0].copy()
    _fit(model)
    after = _backbone_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # BN statistics too
    assert not np.allclose(head, model.get_layer(CLASSIFIER_LAYER).get_weights()[0])
    assert [w.path for w in model.trainable_weights] == [
        f"{CLASSIFIER_LAYER}/kernel", f"{CLASSIFIER_LAYER}/bias"]


def test_freeze_bn_keeps_statistics_and_trains_the_rest():
    model = freeze(_tiny(), "bn")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    stats = [[w.copy() for w in layer.get_weights()] for layer in bns]
    kernel = model.get_layer("stem_conv").get_weights()[0].copy()
    _fit(model)
    assert all(np.array_equal(a, b) for layer, old in zip(bns, stats)
               for a, b in zip(old, layer.get_weights()))
    assert not np.allclose(kernel, model.get_layer("stem_conv").get_weights()[0])
    freeze(model, "none")
    assert all(layer.trainable for layer in model.layers)
    with pytest.raises(ValueError, match="Received: mode='head'"):
        freeze(model, "head")
