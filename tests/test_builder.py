"""The Keras builder: structure, shapes, preprocessing, serialisation, precision, twins."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet.builder import IMAGENET_MEAN, IMAGENET_STD
from keras_effnet.profile import profile
from keras_effnet.variants import get_variant

TINY = ["r1_k3_s1_e1_i8_o8_f", "r2_k3_s2_e4_i8_o16_f", "r2_k5_s2_e4_i16_o24_se0.25"]


def pixels(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def v2b0():
    return keras_effnet.build("efficientnetv2-b0")


@pytest.mark.parametrize("size", [32, 33, 64, 171])
def test_one_model_runs_at_every_image_size(v2b0, size):
    assert v2b0.input_shape == (None, None, None, 3)
    out = v2b0.predict(pixels(2, size), verbose=0)
    assert out.shape == (2, 1000)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("size", [33, 171, 224])
def test_feature_map_is_ceil_of_size_over_32(size):
    model = keras_effnet.build(arch=TINY + ["r1_k3_s2_e4_i24_o32", "r1_k3_s2_e4_i32_o40"],
                               include_top=False)
    out = model(pixels(1, size))
    side = -(-size // 32)
    assert tuple(out.shape) == (1, side, side, 1280)


@pytest.mark.parametrize("pooling, shape", [(None, (2, 4, 4, 1280)), ("avg", (2, 1280)),
                                            ("max", (2, 1280))])
def test_pooling(pooling, shape):
    model = keras_effnet.build(arch=TINY, include_top=False, pooling=pooling)
    out = keras.ops.convert_to_numpy(model(pixels(2, 32)))  # TINY downsamples by 8
    assert out.shape == shape
    if pooling == "max":
        features = keras_effnet.build(arch=TINY, include_top=False)
        features.set_weights(model.get_weights())
        np.testing.assert_allclose(out, keras.ops.convert_to_numpy(
            features(pixels(2, 32))).max(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite4", "efficientnet-b1"])
def test_built_counts_equal_profile(name):
    model = keras_effnet.build(name)
    p = profile(name)
    assert model.count_params() == p.params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == p.trainable_params


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-b8", "efficientnetv2-xl"])
def test_large_variants_build_with_default_recursion_limit(name):
    limit = sys.getrecursionlimit()
    model = keras_effnet.build(name, input_shape=(32, 32, 3))
    assert model.count_params() == profile(name).params
    assert sys.getrecursionlimit() == limit  # restored after the build
    if name == "efficientnetv2-xl":
        names = [layer.name for layer in model.layers]
        assert "stage6_block32_project_conv" in names  # no chr(97 + j) overflow
        assert len(model.layers) > 1000


def test_layer_names_are_stable_unique_and_sortable(v2b0):
    names = [layer.name for layer in v2b0.layers]
    assert len(names) == len(set(names))
    pattern = re.compile(r"^(image|preprocessing|stem_\w+|top_\w+|avg_pool|predictions|"
                         r"stage\d_block\d\d_[a-z_]+)$")
    assert all(pattern.match(n) for n in names), [n for n in names if not pattern.match(n)]
    blocks = sorted({n[:len("stageX_blockXX")] for n in names if n.startswith("stage")})
    assert len(blocks) == 21


def test_block_structure_follows_the_papers():
    model = keras_effnet.build(arch=["r1_k3_s1_e1_i16_o16_f", "r1_k3_s2_e4_i16_o24_f",
                                     "r1_k5_s1_e6_i24_o24_se0.25"], include_preprocessing=False)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    # Fused, expand 1: one kxk conv -> BN -> act, identity skip (16 -> 16, stride 1).
    assert model.get_layer("stage1_block01_project_conv").kernel_size == (3, 3)
    assert kinds["stage1_block01_project_activation"] == "Activation"
    assert "stage1_block01_add" in kinds
    # Fused, expand 4: kxk stride-2 expand conv, then 1x1 project without activation.
    expand = model.get_layer("stage2_block01_expand_conv")
    assert expand.kernel_size == (3, 3) and expand.strides == (2, 2) and expand.filters == 64
    assert model.get_layer("stage2_block01_project_conv").kernel_size == (1, 1)
    assert "stage2_block01_project_activation" not in kinds
    assert "stage2_block01_add" not in kinds  # stride 2: no skip
    # MBConv with SE: reduce width is int(block input filters * ratio) = 6, on 144 channels.
    assert model.get_layer("stage3_block01_dwconv").kernel_size == (5, 5)
    assert model.get_layer("stage3_block01_se_reduce").filters == 6
    assert model.get_layer("stage3_block01_se_expand").filters == 144
    assert model.get_layer("stage3_block01_se_reduce").use_bias
    assert not model.get_layer("stage3_block01_project_conv").use_bias
    assert all(layer.padding == "same" for layer in model.layers
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"))


def test_drop_path_rates_follow_the_automl_rule(v2b0):
    variant = get_variant("efficientnetv2-b0")
    expected = dict(zip([b for b in variant.scaled_blocks()], variant.drop_path_rates()))
    found = {layer.name: layer.rate for layer in v2b0.layers if layer.name.endswith("drop_path")}
    want = {f"stage{b.stage}_block{b.index:02d}_drop_path": r for b, r in expected.items()
            if b.has_skip and r > 0}
    assert found == pytest.approx(want)
    assert v2b0.get_layer("top_dropout").rate == 0.2


def test_drop_path_is_per_sample():
    model = keras_effnet.build(arch=["r3_k3_s1_e1_i8_o8_f"], drop_path_rate=0.5,
                               include_top=False, include_preprocessing=False)
    layer = model.get_layer("stage1_block03_drop_path")
    assert layer.rate == pytest.approx(0.5 * 2 / 3)
    x = np.ones((64, 4, 4, 8), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    # each example is either dropped entirely or kept and rescaled by 1 / (1 - rate)
    assert np.all((per_sample.min(1) == per_sample.max(1)))
    assert set(np.round(np.unique(per_sample), 4)) <= {0.0, round(1 / (1 - layer.rate), 4)}
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_overrides_reach_the_model():
    model = keras_effnet.build("efficientnetv2-b0", dropout=0.45, drop_path_rate=0.0,
                               classes=7, classifier_activation=None, name="mine")
    assert model.name == "mine"
    assert model.get_layer("top_dropout").rate == 0.45
    assert not [layer for layer in model.layers if layer.name.endswith("drop_path")]
    assert model.output_shape == (None, 7)
    assert model.get_layer("predictions").activation.__name__ == "linear"
    wider = keras_effnet.build("efficientnetv2-b0", width=1.5, depth=0.5, include_top=False)
    assert wider.count_params() == profile("efficientnetv2-b0", width=1.5, depth=0.5,
                                           include_top=False).params


@pytest.mark.parametrize("name, expected", [
    ("efficientnet-b0", lambda x: (x / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)),
    ("efficientnetv2-b2", lambda x: (x / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)),
    ("efficientnetv2-s", lambda x: (x - 128.0) / 128.0),
    ("efficientnet-lite0", lambda x: (x - 127.0) / 128.0),
    # AdvProp's weights: x * 2 / 255 - 1 (tensorflow/tpu's eval).
    (keras_effnet.get_variant("efficientnet-b0").replace(preprocessing="inception"),
     lambda x: x * 2.0 / 255.0 - 1.0),
])
def test_preprocessing_constants(name, expected):
    model = keras_effnet.build(name, input_shape=(8, 8, 3))
    layer = model.get_layer("preprocessing")
    x = pixels(2, 8)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected(x.astype("float64")), rtol=1e-5, atol=1e-5)
    assert layer.weights == []  # fixed constants: no adapt, no state


def test_include_preprocessing_false_has_no_preprocessing_layer():
    model = keras_effnet.build(arch=TINY, include_preprocessing=False)
    assert "preprocessing" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    top = keras_effnet.build(arch=TINY, classes=10)
    assert top.get_layer("stage2_block01_expand_conv").compute_dtype == policy.split("_")[1]
    assert top(pixels()).dtype == "float32"
    features = keras_effnet.build(arch=TINY, include_top=False, pooling="avg")
    assert features(pixels()).dtype == "float32"
    out = keras.ops.convert_to_numpy(top(pixels()))
    assert np.all(np.isfinite(out)) and np.allclose(out.sum(1), 1, atol=1e-3)


def test_model_from_config_reproduces_outputs(v2b0):
    clone = keras.Model.from_config(v2b0.get_config())
    clone.set_weights(v2b0.get_weights())
    x = pixels(2, 48)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), v2b0.predict(x, verbose=0))
    for layer in v2b0.layers:  # every layer's constructor arguments survive get_config
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_weights_argument_loads_a_weights_file(tmp_path):
    model = keras_effnet.build(arch=TINY, classes=5)
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    again = keras_effnet.build(arch=TINY, classes=5, weights=path)
    x = pixels()
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.slow
def test_keras_file_round_trip_in_a_fresh_process_safe_mode(tmp_path):
    model = keras_effnet.build("efficientnetv2-b0", classes=10)
    path = str(tmp_path / "model.keras")
    model.save(path)
    x = pixels(2, 64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    script = textwrap.dedent(f"""
        import numpy as np, keras
        model = keras.saving.load_model({path!r}, safe_mode=True)  # no custom objects
        y = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        np.testing.assert_array_equal(y, np.load({str(tmp_path / 'y.npy')!r}))
        print("OK", model.name, model.count_params())
    """)
    # A fresh interpreter that never imports keras_effnet.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"OK efficientnetv2-b0 {profile('efficientnetv2-b0', classes=10).params}" \
        in result.stdout


def test_tf_keras_twin_has_the_same_weights_and_outputs():
    import tf_keras

    ours = keras_effnet.build("efficientnet-lite0", input_shape=(32, 32, 3), classes=10)
    twin = keras_effnet.build("efficientnet-lite0", input_shape=(32, 32, 3), classes=10,
                              keras_module=tf_keras)
    assert isinstance(twin, tf_keras.Model)
    assert twin.count_params() == ours.count_params()
    assert [layer.name for layer in twin.layers] == [layer.name for layer in ours.layers]
    twin.set_weights(ours.get_weights())
    x = pixels(2, 32)
    np.testing.assert_allclose(twin.predict(x, verbose=0), ours.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert "tf_keras" not in type(ours).__module__


@pytest.mark.parametrize("kwargs, words", [
    (dict(name_or_arch="efficientnet-b9"), "Unknown model"),
    (dict(name_or_arch=None), "needs a model name"),
    (dict(name_or_arch="efficientnet-b0", arch=TINY), "not both"),
    (dict(name_or_arch="r1_k4_s1_e1_i8_o8"), "odd"),
    (dict(arch=TINY, pooling="mean", include_top=False), "pooling"),
    (dict(arch=TINY, pooling="avg"), "include_top=False"),
    (dict(arch=TINY, classes=0), "classes"),
    (dict(arch=TINY, weights="imagenet"), "custom architecture has none"),
    (dict(arch=TINY, classes=True), "classes"),
    (dict(arch=TINY, input_shape=(True, True, 3)), "input_shape"),
    (dict(arch=TINY, weights="/nonexistent.weights.h5"), "existing weights file"),
    (dict(arch=TINY, input_shape=(32, 32)), "input_shape"),
    (dict(arch=TINY, input_shape=(32, 32, 0)), "input_shape"),
    (dict(arch=TINY, dropout=1.5), "dropout"),
    (dict(arch=TINY, keras_module="keras2"), "keras_module"),
])
def test_bad_arguments_raise_clear_value_errors(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        keras_effnet.build(**kwargs)


def test_numpy_integer_classes_are_integers():
    model = keras_effnet.build(arch=TINY, classes=np.int64(3))
    assert model.output_shape == (None, 3)


def test_arch_string_as_first_argument():
    model = keras_effnet.build("r1_k3_s1_e1_i8_o8_f r1_k3_s2_e4_i8_o16", classes=3)
    assert model.output_shape == (None, 3)
    assert json.dumps(keras_effnet.resolve_variant(arch=TINY).to_dict())


def test_initialisers_are_the_official_ones():
    model = keras_effnet.build(arch=["r1_k3_s1_e6_i64_o64"], classes=100,
                               include_preprocessing=False)
    kernel = keras.ops.convert_to_numpy(model.get_layer("stage1_block01_expand_conv").kernel)
    std = np.sqrt(2.0 / (1 * 1 * 384))  # normal, std sqrt(2 / fan_out)
    assert kernel.std() == pytest.approx(std, rel=0.05)
    assert np.abs(kernel).max() > 2.5 * std  # untruncated: tails past 2 sigma exist
    dense = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    # uniform(-1/sqrt(classes), 1/sqrt(classes)); the bound is compared in float32, where a
    # draw can round to exactly float32(0.1), a hair above the float64 0.1
    assert np.abs(dense).max() <= np.float32(1 / np.sqrt(100))
    assert dense.std() > 0.5 / np.sqrt(300)


def test_any_channel_count_with_rgb_weights_adapted_as_timm(tmp_path):
    rgb = keras_effnet.build(arch=TINY, classes=3, include_preprocessing=False)
    path = str(tmp_path / "rgb.weights.h5")
    rgb.save_weights(path)
    x = pixels(2, 16).astype("float32")
    gray = keras_effnet.build(arch=TINY, classes=3, include_preprocessing=False,
                              input_shape=(None, None, 1), weights=path)
    stem = rgb.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_allclose(gray.get_layer("stem_conv").get_weights()[0],
                               stem.sum(axis=2, keepdims=True), rtol=1e-6)
    # A gray image through the summed stem equals the RGB model on it replicated.
    g = x[..., :1]
    np.testing.assert_allclose(gray.predict(g, verbose=0),
                               rgb.predict(np.repeat(g, 3, axis=-1), verbose=0), atol=1e-5)
    six = keras_effnet.build(arch=TINY, classes=3, include_preprocessing=False,
                             input_shape=(16, 16, 6), weights=path)
    np.testing.assert_allclose(six.predict(np.concatenate([x, x], -1), verbose=0),
                               rgb.predict(x, verbose=0), atol=1e-5)
    # The normalisation inside the model follows the channels: the mean for one.
    gray = keras_effnet.build("efficientnet-b0", input_shape=(32, 32, 1))
    config = gray.get_layer("preprocessing").get_config()
    scale, offset = keras_effnet.builder.preprocessing_constants("imagenet")
    np.testing.assert_allclose(config["scale"], [np.mean(scale)], rtol=1e-6)
    four = keras_effnet.build("efficientnet-b0", input_shape=(32, 32, 4), include_top=False)
    assert len(four.get_layer("preprocessing").get_config()["offset"]) == 4
    assert four.output_shape == (None, 1, 1, 1280)


def test_input_tensor_as_keras_applications():
    image = keras.Input((32, 32, 3), name="photo")
    scaled = keras.layers.Rescaling(255.0)(image)  # a model on another layer's output
    model = keras_effnet.build(arch=TINY, classes=3, input_tensor=scaled)
    assert model.inputs[0].name == image.name and model.input_shape == (None, 32, 32, 3)
    x = pixels(2, 32) / 255.0
    assert model.predict(x, verbose=0).shape == (2, 3)
    with pytest.raises(ValueError, match="disagrees with input_tensor"):
        keras_effnet.build(arch=TINY, input_tensor=image, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="rank 4"):
        keras_effnet.build(arch=TINY, input_tensor=keras.Input((32, 3)))
