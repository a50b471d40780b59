"""Porting keras.applications weights: equal outputs for every variant it has."""

import numpy as np
import pytest

import keras_effnet
from keras_effnet.port import (KERAS_APPLICATIONS_NAMES, PortError, from_keras_applications,
                               keras_applications_model)
from keras_effnet.profile import profile

SIZE = 32
SMALL = ["efficientnet-b0", "efficientnetv2-b0", "efficientnetv2-b1"]
LARGE = [n for n in KERAS_APPLICATIONS_NAMES if n not in SMALL]


def _inputs(seed=0):
    # Values as they are after preprocessing: both sides then compare bare backbones.
    return np.random.default_rng(seed).normal(size=(2, SIZE, SIZE, 3)).astype("float32")


def _pair(name, include_top):
    is_v1 = not name.startswith("efficientnetv2")
    kwargs = dict(include_top=include_top, input_shape=(SIZE, SIZE, 3))
    if include_top:
        kwargs["classifier_activation"] = None  # compare logits, not saturated softmax
    # keras.applications V1 has no preprocessing switch: it divides by 255 and applies a
    # Normalization layer whose state (never adapted here) is mean 0, variance 1.
    source = keras_applications_model(name, **kwargs,
                                      **({} if is_v1 else {"include_preprocessing": False}))
    target = keras_effnet.build(name, include_preprocessing=False, **kwargs)
    return source, target, (255.0 if is_v1 else 1.0)


def _check(name, include_top):
    source, target, scale = _pair(name, include_top)
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(target) == trainable(source)
    state = 7 if not name.startswith("efficientnetv2") else 0
    assert target.count_params() + state == source.count_params()
    assert target.count_params() == profile(name, include_top=include_top,
                                            image_size=SIZE).params
    from_keras_applications(source, target)
    x = _inputs()
    a = source.predict(x * scale, verbose=0)
    b = target.predict(x, verbose=0)
    assert a.shape == b.shape
    err = float(np.abs(a - b).max())
    magnitude = float(np.abs(a).max())
    assert magnitude > 0
    assert err <= 1e-4 * max(1.0, magnitude)
    assert err <= 1e-4 * magnitude  # relative too: random-init outputs can be small
    return source, target


@pytest.mark.parametrize("include_top", [True, False])
@pytest.mark.parametrize("name", SMALL)
def test_port_gives_equal_outputs(name, include_top):
    _check(name, include_top)


@pytest.mark.slow
@pytest.mark.parametrize("include_top", [True, False])
@pytest.mark.parametrize("name", LARGE)
def test_port_gives_equal_outputs_large(name, include_top):
    _check(name, include_top)


def test_the_comparison_would_catch_a_wrong_weight():
    source, target = _check("efficientnetv2-b0", include_top=True)
    layer = target.get_layer("stage4_block02_dwconv")
    kernel = layer.get_weights()[0]
    layer.set_weights([kernel[::-1]])  # flip one depthwise kernel
    x = _inputs(1)
    a, b = source.predict(x, verbose=0), target.predict(x, verbose=0)
    assert np.abs(a - b).max() > 1e-4 * np.abs(a).max()


def test_port_from_a_weights_file(tmp_path):
    source = keras_applications_model("efficientnetv2-b0", include_top=False,
                                      input_shape=(SIZE, SIZE, 3), include_preprocessing=False)
    path = str(tmp_path / "v2b0_notop.weights.h5")
    source.save_weights(path)
    target = keras_effnet.build("efficientnetv2-b0", include_top=False,
                                include_preprocessing=False, input_shape=(SIZE, SIZE, 3))
    from_keras_applications(path, target)
    x = _inputs()
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0),
                               atol=1e-5)


def test_ported_model_with_preprocessing_matches_keras_applications_end_to_end():
    # The normalisation constants, checked through whole models on [0, 255] pixels.
    source = keras_applications_model("efficientnetv2-s", input_shape=(SIZE, SIZE, 3),
                                      classifier_activation=None)
    target = keras_effnet.build("efficientnetv2-s", input_shape=(SIZE, SIZE, 3),
                                classifier_activation=None)
    from_keras_applications(source, target)
    x = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    a, b = source.predict(x, verbose=0), target.predict(x, verbose=0)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())


def test_mismatched_architectures_copy_nothing():
    source = keras_applications_model("efficientnetv2-b0", include_top=False,
                                      input_shape=(SIZE, SIZE, 3))
    target = keras_effnet.build("efficientnetv2-b1", include_top=False,
                                input_shape=(SIZE, SIZE, 3))
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(PortError, match="another architecture.*nothing was copied"):
        from_keras_applications(source, target)
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))
    with pytest.raises(PortError, match="counterpart"):
        keras_applications_model("efficientnet-lite0")
    with pytest.raises(FileNotFoundError, match="weights='imagenet'"):
        from_keras_applications("/nonexistent.h5", target)
