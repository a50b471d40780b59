"""Pretrained weights through a mirror on 127.0.0.1: keras.applications' files and Google's
checkpoints downloaded, verified, cached, converted; failures leave nothing behind."""

import dataclasses
import os
import stat
import time

import numpy as np
import pytest

from urllib.parse import urlsplit

from weights_fixtures import (files_below, images, keras_md5_slot, keras_pair, md5,
                              official_variables, umask, weight_server, write_tarball)

import keras_effnet
from keras_effnet.names import CLASSIFIER_LAYER
from keras_effnet.weights import (WEIGHTS, WeightsDownloadError, converted_path,
                                  get_weight_tag, official_cache_path)
from keras_effnet.weights import table as table_lib

SIZE = 32


def _patch_md5(monkeypatch, variant, top, notop):
    """The table's md5s (and keras' own, for its weights="imagenet") set to the files the
    test made."""
    row = WEIGHTS[(variant, "imagenet")]
    monkeypatch.setitem(WEIGHTS, (variant, "imagenet"), dataclasses.replace(row, md5=(top, notop)))
    monkeypatch.setitem(*keras_md5_slot(variant), (top, notop))


def _keras_files(root, variant):
    """keras.applications-layout top and notop files of ``variant`` (random weights)."""
    row = WEIGHTS[(variant, "imagenet")]
    paths = [root / urlsplit(origin).path.lstrip("/") for origin in (row.origin,
                                                                      row.origin_notop)]
    return keras_pair(variant, *paths), paths


def _logits(model, x):
    return model.predict(x, verbose=0)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root, cache = tmp_path / "mirror", tmp_path / "cache"
    root.mkdir()
    with weight_server(root, monkeypatch, cache) as server:
        server.cache = cache
        yield server


def test_keras_v1_imagenet_equals_keras_applications_and_is_fetched_once(mirror, monkeypatch,
                                                                         capfd):
    source, (top, notop) = _keras_files(mirror.root, "efficientnet-b0")
    _patch_md5(monkeypatch, "efficientnet-b0", md5(top), md5(notop))
    capfd.readouterr()
    ours = keras_effnet.build("efficientnet-b0", weights="imagenet", classifier_activation=None)
    assert mirror.requests == ["/keras-applications/efficientnetb0.h5"]
    # A 21 MB file: progress on stderr, ending at 100 %.
    progress = [line for line in capfd.readouterr().err.splitlines()
                if line.startswith("Downloading efficientnetb0.h5")]
    assert progress and "(100 %)" in progress[-1]
    # keras' own weights="imagenet" path (its Normalization-variance fix included) finds
    # the same file in the shared cache: no request, the same outputs.
    import keras
    theirs = keras.applications.EfficientNetB0(weights="imagenet", classifier_activation=None)
    assert len(mirror.requests) == 1
    x = images(size=224)
    a, b = _logits(ours, x), _logits(theirs, x)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    # Without keras' fix (the file's Normalization alone) the outputs differ.
    c = _logits(source, x)
    assert np.abs(a - c).max() > 1e-2 * np.abs(b).max()
    # Cached: the second call makes no request; no top / another class count: the notop file.
    again = keras_effnet.build("efficientnet-b0", weights="imagenet", classifier_activation=None)
    np.testing.assert_allclose(_logits(again, x), _logits(ours, x), atol=1e-6)
    assert len(mirror.requests) == 1
    ten = keras_effnet.build("efficientnet-b0", weights="imagenet", classes=10)
    features = keras_effnet.build("efficientnet-b0", weights="imagenet", include_top=False,
                                  pooling="avg")
    assert mirror.requests[1:] == ["/keras-applications/efficientnetb0_notop.h5"]
    assert ten.get_layer(CLASSIFIER_LAYER).units == 10
    pooled = keras.Model(ours.input, ours.get_layer("avg_pool").output)
    np.testing.assert_allclose(features.predict(x, verbose=0), pooled.predict(x, verbose=0),
                               atol=2e-5)
    assert sorted(os.listdir(mirror.cache / "models")) == ["efficientnetb0.h5",
                                                           "efficientnetb0_notop.h5"]


def test_keras_v2_imagenet_equals_keras_applications(mirror, monkeypatch):
    source, (top, notop) = _keras_files(mirror.root, "efficientnetv2-b0")
    _patch_md5(monkeypatch, "efficientnetv2-b0", md5(top), md5(notop))
    import keras
    ours = keras_effnet.build("efficientnetv2-b0", weights="imagenet", include_top=False)
    theirs = keras.applications.EfficientNetV2B0(weights="imagenet", include_top=False)
    x = images(size=64)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               atol=2e-5)
    assert mirror.requests == ["/tensorflow/keras-applications/efficientnet_v2/"
                               "efficientnetv2-b0_notop.h5"]


def test_wrong_hash_or_a_dropped_connection_leaves_no_file(mirror, monkeypatch):
    _, (top, notop) = _keras_files(mirror.root, "efficientnet-b0")
    _patch_md5(monkeypatch, "efficientnet-b0", "0" * 32, md5(notop))
    with pytest.raises(WeightsDownloadError, match="does not match the published md5"):
        keras_effnet.build("efficientnet-b0", weights="imagenet")
    assert files_below(mirror.cache) == []
    _patch_md5(monkeypatch, "efficientnet-b0", md5(top), md5(notop))
    mirror.drop["/keras-applications/efficientnetb0.h5"] = top.stat().st_size // 3
    with pytest.raises(WeightsDownloadError, match="nothing was kept"):
        keras_effnet.build("efficientnet-b0", weights="imagenet")
    assert files_below(mirror.cache) == []
    # The mirror is healthy again: the next call fetches a good file, with the umask's mode.
    del mirror.drop["/keras-applications/efficientnetb0.h5"]
    keras_effnet.build("efficientnet-b0", weights="imagenet")
    cached = mirror.cache / "models" / "efficientnetb0.h5"
    assert md5(cached) == md5(top)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o666 & ~umask()


def test_a_corrupt_cached_file_is_fetched_again(mirror, monkeypatch, capfd):
    _, (top, notop) = _keras_files(mirror.root, "efficientnet-b0")
    _patch_md5(monkeypatch, "efficientnet-b0", md5(top), md5(notop))
    keras_effnet.build("efficientnet-b0", weights="imagenet")
    cached = mirror.cache / "models" / "efficientnetb0.h5"
    cached.write_bytes(cached.read_bytes()[:1000])  # a truncated cache (keras #6221)
    model = keras_effnet.build("efficientnet-b0", weights="imagenet")
    assert len(mirror.requests) == 2 and md5(cached) == md5(top)
    assert "corrupt" in capfd.readouterr().err
    assert model.get_layer(CLASSIFIER_LAYER).units == 1000


def test_offline_with_an_empty_cache_is_one_error_before_any_model(mirror, monkeypatch):
    monkeypatch.setenv("KERAS_EFFNET_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsDownloadError) as error:
        keras_effnet.build("efficientnetv2-s", weights="imagenet21k-ft1k")
    elapsed = time.perf_counter() - start
    message = str(error.value)
    row = get_weight_tag("efficientnetv2-s", "imagenet21k-ft1k")
    assert row.origin in message and str(official_cache_path(row)) in message
    assert "efficientnetv2-s-21k-ft1k.tgz" in message
    assert mirror.requests == [] and files_below(mirror.cache) == []
    print(f"offline refusal: {elapsed:.3f} s")  # measured, not asserted
    # In a fresh process the refusal comes before TensorFlow is imported at all.
    import subprocess
    import sys
    code = ("import sys, keras_effnet\n"
            "try:\n    keras_effnet.build('efficientnetv2-s', weights='imagenet21k-ft1k')\n"
            "except keras_effnet.weights.WeightsDownloadError as e:\n"
            "    print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    env = {**os.environ, "KERAS_EFFNET_OFFLINE": "1", "KERAS_HOME": str(mirror.cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


def test_a_local_mirror_directory_serves_without_a_server(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    _, (top, notop) = _keras_files(root, "efficientnet-b0")
    _patch_md5(monkeypatch, "efficientnet-b0", md5(top), md5(notop))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_EFFNET_WEIGHTS_MIRROR", str(root))
    model = keras_effnet.build("efficientnet-b0", weights="imagenet", include_top=False)
    assert (tmp_path / "cache" / "models" / "efficientnetb0_notop.h5").is_file()
    assert model.name == "efficientnet-b0"


# --- Google's checkpoints ----------------------------------------------------------------

def _serve_official(mirror, variant, tag, source=None, **build_kwargs):
    row = get_weight_tag(variant, tag)
    source = source or keras_effnet.build(variant, classes=row.classes, **build_kwargs)
    write_tarball(official_variables(source, variant), mirror.path_of(row.origin))
    return row, source


def test_lite_checkpoint_is_converted_by_name_from_its_ema_shadows_and_cached(mirror):
    row, source = _serve_official(mirror, "efficientnet-lite0", "imagenet")
    model = keras_effnet.build("efficientnet-lite0", weights="imagenet")
    x = images(size=SIZE)
    np.testing.assert_allclose(_logits(model, x), _logits(source, x), atol=1e-5)
    converted = converted_path(row)
    assert files_below(converted.parent) == sorted([
        "efficientnet-lite0.tar.gz", "efficientnet-lite0.tar.gz.sha256",
        "efficientnet-lite0.weights.h5", "efficientnet-lite0.weights.h5.sha256"])
    # The converted file is Keras' own: keras loads it into the same network.
    plain = keras_effnet.build("efficientnet-lite0")
    plain.load_weights(str(converted))
    np.testing.assert_allclose(_logits(plain, x), _logits(source, x), atol=1e-5)
    # Cached: no request; a tampered conversion is redone from the cached tarball.
    keras_effnet.build("efficientnet-lite0", weights="imagenet", include_top=False)
    converted.write_bytes(converted.read_bytes()[:-100] + b"\0" * 100)
    again = keras_effnet.build("efficientnet-lite0", weights="imagenet")
    np.testing.assert_allclose(_logits(again, x), _logits(source, x), atol=1e-5)
    assert mirror.requests == ["/cloud-tpu-checkpoints/efficientnet/lite/efficientnet-lite0.tar.gz"]
    # A cached tarball that no longer matches its recorded sha256 is fetched again.
    tarball = official_cache_path(row)
    tarball.write_bytes(tarball.read_bytes()[:-10])
    converted.unlink()
    keras_effnet.build("efficientnet-lite0", weights="imagenet")
    assert len(mirror.requests) == 2 and converted.is_file()


def test_official_names_of_b0_are_the_official_codes(mirror):
    """Spot checks written from tensorflow/tpu's efficientnet_model.py by hand."""
    from keras_effnet.weights.mapping import official_variables as ours, weighted_layers
    model = keras_effnet.build("efficientnet-b0", include_top=True)
    names = ours(weighted_layers(model), "efficientnet-b0")
    assert names["stage1_block01_project_conv"] == ("efficientnet-b0/blocks_0/conv2d/kernel",)
    assert names["stage1_block01_dw_bn"][0] == "efficientnet-b0/blocks_0/tpu_batch_normalization/gamma"
    assert names["stage1_block01_project_bn"][3] == (
        "efficientnet-b0/blocks_0/tpu_batch_normalization_1/moving_variance")
    assert names["stage2_block01_expand_conv"] == ("efficientnet-b0/blocks_1/conv2d/kernel",)
    assert names["stage2_block02_project_conv"] == ("efficientnet-b0/blocks_2/conv2d_1/kernel",)
    assert names["stage2_block02_dwconv"] == (
        "efficientnet-b0/blocks_2/depthwise_conv2d/depthwise_kernel",)
    assert names["stage7_block01_se_expand"] == ("efficientnet-b0/blocks_15/se/conv2d_1/kernel",
                                                 "efficientnet-b0/blocks_15/se/conv2d_1/bias")
    assert names["stage7_block01_project_bn"][0] == (
        "efficientnet-b0/blocks_15/tpu_batch_normalization_2/gamma")
    assert names["predictions"] == ("efficientnet-b0/head/dense/kernel",
                                    "efficientnet-b0/head/dense/bias")
    v2 = keras_effnet.build("efficientnetv2-b0", include_top=False)
    names = ours(weighted_layers(v2), "efficientnetv2-b0")
    # Fused, expand ratio 1: one kxk conv; 4: kxk expand conv, then the 1x1 at conv2d_1.
    assert names["stage1_block01_project_conv"] == ("efficientnetv2-b0/blocks_0/conv2d/kernel",)
    assert names["stage2_block01_project_bn"][0] == (
        "efficientnetv2-b0/blocks_1/tpu_batch_normalization_1/gamma")
    assert names["top_conv"] == ("efficientnetv2-b0/head/conv2d/kernel",)


def test_advprop_gets_its_preprocessing_and_21k_its_classes(mirror):
    row, source = _serve_official(mirror, "efficientnet-b0", "advprop")
    model = keras_effnet.build("efficientnet-b0", weights="advprop")
    config = model.get_layer("preprocessing").get_config()
    np.testing.assert_allclose(config["scale"], [1 / 127.5] * 3)
    x = images(size=SIZE)
    # The source was built with the default (ImageNet) normalisation: compare the networks
    # on the same normalised input.
    bare = keras_effnet.build("efficientnet-b0", weights="advprop", include_preprocessing=False)
    src = keras_effnet.build("efficientnet-b0", include_preprocessing=False)
    src.set_weights(source.get_weights())
    np.testing.assert_allclose(_logits(bare, x / 127.5 - 1), _logits(src, x / 127.5 - 1),
                               atol=1e-5)
    assert model.count_params() == source.count_params()
    with pytest.raises(ValueError, match="expect 'inception' input normalisation"):
        keras_effnet.load_weights(keras_effnet.build("efficientnet-b0"), "advprop")

    row, source = _serve_official(mirror, "efficientnetv2-b0", "imagenet21k")
    model = keras_effnet.build("efficientnetv2-b0", weights="imagenet21k")
    assert model.get_layer(CLASSIFIER_LAYER).units == 21843 == row.classes
    np.testing.assert_allclose(_logits(model, x), _logits(source, x), atol=1e-5)
    five = keras_effnet.build("efficientnetv2-b0", weights="imagenet21k", classes=5)
    assert five.get_layer(CLASSIFIER_LAYER).units == 5


def test_a_checkpoint_of_another_variant_is_refused_and_not_kept(mirror):
    row = get_weight_tag("efficientnet-lite1", "imagenet")
    other = keras_effnet.build("efficientnet-lite0")
    write_tarball(official_variables(other, "efficientnet-lite1"), mirror.path_of(row.origin))
    with pytest.raises(WeightsDownloadError, match="not usable and was removed.*another architecture"):
        keras_effnet.build("efficientnet-lite1", weights="imagenet")
    assert files_below(mirror.cache) == []


def test_tarball_directory_and_prefix_paths_load_without_the_table(tmp_path):
    source = keras_effnet.build("efficientnet-lite0", classes=7)
    variables = official_variables(source, "efficientnet-lite0")
    tarball = write_tarball(variables, tmp_path / "efficientnet-lite0.tgz")
    x = images(size=SIZE)
    for weights in (tarball,):
        model = keras_effnet.build("efficientnet-lite0", classes=7, weights=str(weights))
        np.testing.assert_allclose(_logits(model, x), _logits(source, x), atol=1e-5)
    from weights_fixtures import write_checkpoint
    write_checkpoint(variables, tmp_path / "dir" / "efficientnet-lite0" / "model.ckpt", ema=False)
    for weights in (tmp_path / "dir", tmp_path / "dir" / "efficientnet-lite0" / "model.ckpt"):
        model = keras_effnet.build("efficientnet-lite0", classes=7, weights=str(weights))
        np.testing.assert_allclose(_logits(model, x), _logits(source, x), atol=1e-5)
    # A new class count keeps a new classifier; no top drops it.
    three = keras_effnet.build("efficientnet-lite0", classes=3, weights=str(tarball))
    assert three.get_layer(CLASSIFIER_LAYER).units == 3
    keras_effnet.build("efficientnet-lite0", include_top=False, weights=str(tarball))
    # A deeper checkpoint is refused, naming what it has extra.
    deeper = keras_effnet.build("efficientnet-lite1", classes=7)
    path = write_tarball(official_variables(deeper, "efficientnet-lite0"), tmp_path / "deep.tgz")
    with pytest.raises(ValueError, match="another architecture|deeper architecture"):
        keras_effnet.build("efficientnet-lite0", classes=7, weights=str(path))


def test_non_finite_or_negative_variance_weights_are_refused(tmp_path):
    source = keras_effnet.build("efficientnet-lite0", classes=3)
    variables = official_variables(source, "efficientnet-lite0")
    key = next(k for k in variables if k.endswith("blocks_3/depthwise_conv2d/depthwise_kernel"))
    variables[key] = variables[key].copy()
    variables[key].flat[0] = np.nan
    path = write_tarball(variables, tmp_path / "nan.tgz")
    fresh = keras_effnet.build("efficientnet-lite0", classes=3)
    before = [w.copy() for w in fresh.get_weights()]
    with pytest.raises(ValueError, match="non-finite values.*blocks_3/depthwise_conv2d"):
        keras_effnet.load_weights(fresh, str(path))
    assert all(np.array_equal(a, b) for a, b in zip(before, fresh.get_weights()))
    variables = official_variables(source, "efficientnet-lite0")
    key = next(k for k in variables if k.endswith("head/tpu_batch_normalization/moving_variance"))
    variables[key] = -np.abs(variables[key]) - 1
    path = write_tarball(variables, tmp_path / "neg.tgz")
    with pytest.raises(ValueError, match="negative BatchNorm variance"):
        keras_effnet.load_weights(fresh, str(path))


def test_unknown_tags_and_tags_of_custom_architectures_are_one_error():
    with pytest.raises(ValueError, match=r"'efficientnetv2-s' has 'imagenet', 'imagenet21k', "
                                         r"'imagenet21k-ft1k'"):
        keras_effnet.build("efficientnetv2-s", weights="imagenet22k")
    with pytest.raises(ValueError, match="custom architecture has none"):
        keras_effnet.build(arch=["r1_k3_s1_e1_i8_o8_f"], weights="imagenet")
    with pytest.raises(ValueError, match="no pretrained weights"):
        table_lib.get_weight_tag("efficientnet-b0-custom", "imagenet")


def test_list_weights_is_the_table():
    rows = keras_effnet.list_weights()
    assert len(rows) == len(WEIGHTS) == 55
    tags = {(r["variant"], r["tag"]) for r in rows}
    assert ("efficientnetv2-xl", "imagenet21k-ft1k") in tags
    assert ("efficientnetv2-xl", "imagenet") not in tags  # automl released none
    assert {r["tag"] for r in keras_effnet.list_weights("efficientnet-l2")} == {
        "noisy-student", "noisy-student-475"}
    assert [r["tag"] for r in keras_effnet.list_weights("EfficientNet_B8")] == ["advprop"]
    assert all(r["provenance"] and r["origin"].startswith("https://") for r in rows)
    assert all(r["md5"] for r in rows if r["source"] == "keras")
    text = table_lib.format_table(rows)
    assert "| efficientnetv2-s | `imagenet21k-ft1k` | 1,000 | symmetric | 84.9 |" in text
