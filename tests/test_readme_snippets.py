"""The README's quick start, spec and scaling examples run as written (weights from a
mirror on 127.0.0.1, a folder of JPEGs in the working directory)."""

import dataclasses

import keras
import numpy as np
import pytest

from test_readme_weights import example
from weights_fixtures import md5, weight_server, write_keras_h5, write_photos

from keras_effnet.port import keras_applications_model
from keras_effnet.weights import WEIGHTS


def _run(marker: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(example(marker), f"README.md ({marker})", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_the_quick_start_trains_exports_and_serves(tmp_path, monkeypatch):
    row = WEIGHTS[("efficientnetv2-b0", "imagenet")]
    with weight_server(tmp_path / "mirror", monkeypatch, tmp_path / "cache") as server:
        notop = keras_applications_model("efficientnetv2-b0", include_top=False)
        path = write_keras_h5(notop, server.path_of(row.origin_notop))
        monkeypatch.setitem(WEIGHTS, (row.variant, row.tag),
                            dataclasses.replace(row, md5=(row.md5[0], md5(path))))
        write_photos(tmp_path, classes=3, per_class=5)
        monkeypatch.chdir(tmp_path)
        keras.backend.clear_session()
        namespace = _run("quickstart")
    assert namespace["classes"] == ["class_0", "class_1", "class_2"]
    assert namespace["model"].output_shape == (None, 3)
    # The SavedModel answers JPEG bytes with the folder's class names, in a fresh load.
    import tensorflow as tf
    served = tf.saved_model.load(str(tmp_path / "saved_models" / "photos" / "1"))
    jpeg = (tmp_path / "photos" / "class_1" / "0.jpg").read_bytes()
    out = served.signatures["serving_default"](image_bytes=tf.constant([jpeg]))
    assert {label.decode() for label in out["labels"].numpy()[0]} <= set(namespace["classes"])
    # The TFLite file runs in the real interpreter and agrees with the Keras model.
    from keras_effnet.export import LiteRunner
    runner = LiteRunner((tmp_path / "photos.tflite").read_bytes())
    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(runner.predict(x), namespace["model"].predict(x, verbose=0),
                               atol=2e-2)


def test_the_spec_and_scaling_examples():
    namespace = _run("spec-example")
    assert namespace["format_spec"](namespace["b"]) == "r4_k3_s2_e4_i24_o48_f"
    assert namespace["model"].output_shape == (None, 10)
    _run("scaling-example", namespace)
    v = namespace["v"]
    ratio = namespace["profile"](v).macs / namespace["profile"]("efficientnet-b0").macs
    assert abs(ratio - 2.0) < 0.05
    assert namespace["model"].name == v.name


@pytest.mark.slow
def test_the_progressive_fit_example_runs_its_plan():
    keras.backend.clear_session()
    namespace = _run("progressive-fit-example")
    sizes = [stage.image_size for stage in namespace["plan"]]
    assert sizes == [80, 96, 112, 128]
    history = namespace["history"].history
    assert history["image_size"] == sizes and len(history["loss"]) == 4
    assert np.isfinite(history["loss"]).all() and "val_accuracy" in history
