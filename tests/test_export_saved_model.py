"""TF-Serving export: layout, signatures, fidelity in a fresh process, REST bodies, atomicity."""

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from test_export_support import png_header_only, tiny_model

from keras_effnet.export import images, saved_model, serving_config

CLASS_NAMES = [f"class {i}" for i in range(10)]
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _fake_write(model, spec, path, *args):
    """Stands in for the slow SavedModel write: a plausible version directory."""
    (path / "variables").mkdir()
    (path / "saved_model.pb").write_bytes(b"fake")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(base dir, Keras model, real export v1, stand-in export v2) of the tiny model."""
    base = tmp_path_factory.mktemp("serving") / "saved_models"
    model = tiny_model(size=None)
    first = saved_model.export_saved_model(model, base, class_names=CLASS_NAMES, image_size=32,
                                           top_k=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(saved_model, "_write_version", _fake_write)
        second = saved_model.export_saved_model(model, base, class_names=CLASS_NAMES,
                                                image_size=32)
    return base, model, first, second


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[2].path))


def _keras_on_jpeg(model, jpeg: bytes) -> np.ndarray:
    image = tf.function(lambda b: images.decode_and_center_crop(b, 32), autograph=False)(
        tf.constant(jpeg))
    return model.predict(image.numpy()[None], verbose=0)


def test_versioned_layout_and_serving_files(exported):
    base, _, first, second = exported
    assert (first.version, second.version) == (1, 2)
    assert first.path == base / "tiny" / "1" and second.path == base / "tiny" / "2"
    assert (first.path / "saved_model.pb").is_file() and (first.path / "variables").is_dir()
    assert (first.path / "assets" / "labels.txt").read_text().splitlines() == CLASS_NAMES
    assert (first.path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    info = json.loads((first.path / "assets.extra" / "keras_effnet_export.json").read_text())
    assert info["image_size"] == 32 and info["classes"] == 10 and info["top_k"] == 3
    assert first.size_bytes > 0
    assert not list((base / "tiny").glob(".tmp-*"))

    from tensorflow_serving.config import model_server_config_pb2
    config = text_format.Parse((base / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "tiny" and entry.base_path == "/models/tiny"
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 2, "previous": 1}
    batching = (base / "batching_parameters.txt").read_text()
    assert "max_batch_size { value: 32 }" in batching
    assert "batch_timeout_micros" in batching


def test_saved_model_cli_lists_the_signatures(exported):
    path = exported[2].path
    cli = Path(sys.executable).with_name("saved_model_cli")
    command = ([str(cli)] if cli.exists()
               else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"])
    out = subprocess.run(command + ["show", "--all", "--dir", str(path)], env=_env(),
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "signature_def['serving_default']" in out
    assert "signature_def['predict_images']" in out
    assert "inputs['image_bytes']" in out and "dtype: DT_STRING" in out
    assert "inputs['images']" in out and "shape: (-1, 32, 32, 3)" in out
    for output in ("probabilities", "classes", "labels", "scores"):
        assert f"outputs['{output}']" in out
    assert "shape: (-1, 10)" in out and "shape: (-1, 3)" in out


@pytest.mark.slow
def test_fresh_process_matches_keras(exported, tmp_path):
    _, model, first, _ = exported
    jpeg = saved_model.sample_image_bytes()
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import tensorflow as tf
        path, folder = sys.argv[1:]
        loaded = tf.saved_model.load(path)
        jpeg = open(folder + "/photo.jpg", "rb").read()
        served = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg, jpeg]))
        pixels = np.load(folder + "/pixels.npy")
        direct = loaded.signatures["predict_images"](images=tf.constant(pixels))
        np.savez(folder + "/out.npz", served=served["probabilities"].numpy(),
                 labels=served["labels"].numpy(), classes=served["classes"].numpy(),
                 direct=direct["probabilities"].numpy())
    """)
    subprocess.run([sys.executable, "-c", script, str(first.path), str(tmp_path)],
                   env=_env(), check=True, timeout=300, capture_output=True)
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    np.testing.assert_allclose(out["direct"], model.predict(pixels, verbose=0), atol=1e-5)
    expected = _keras_on_jpeg(model, jpeg)
    np.testing.assert_allclose(out["served"], np.repeat(expected, 2, 0), atol=1e-5)
    top = np.argsort(-expected[0])[:3]
    assert out["classes"][0].tolist() == top.tolist()
    assert [s.decode() for s in out["labels"][0]] == [CLASS_NAMES[i] for i in top]


def _tf_serving_decode(body: str, signature) -> dict:
    """Turns a TF-Serving REST predict body into signature inputs, as the server does:
    row format ("instances") or columnar ("inputs"), {"b64": ...} -> bytes."""
    request = json.loads(body)
    names = list(signature.structured_input_signature[1])

    def value(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    if "instances" in request:
        rows = request["instances"]
        if len(names) == 1 and not (isinstance(rows[0], dict) and names[0] in rows[0]):
            columns = {names[0]: [value(r) for r in rows]}
        else:
            columns = {n: [value(r[n]) for r in rows] for n in names}
    else:
        inputs = request["inputs"]
        columns = inputs if isinstance(inputs, dict) else {names[0]: inputs}
        columns = {n: value(v) for n, v in columns.items()}
    specs = signature.structured_input_signature[1]
    return {n: tf.constant(v, dtype=specs[n].dtype) for n, v in columns.items()}


def test_readme_rest_bodies_are_accepted(exported, loaded):
    _, model, _, _ = exported
    jpeg = saved_model.sample_image_bytes()
    b64 = base64.b64encode(jpeg).decode()
    expected = _keras_on_jpeg(model, jpeg)
    serving = loaded.signatures["serving_default"]
    bodies = [
        '{"instances": [{"b64": "%s"}]}' % b64,
        '{"signature_name": "serving_default", "instances": [{"image_bytes": {"b64": "%s"}}]}'
        % b64,
        '{"inputs": {"image_bytes": [{"b64": "%s"}]}}' % b64,
    ]
    for body in bodies:
        out = serving(**_tf_serving_decode(body, serving))
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).round(2)
    body = json.dumps({"signature_name": "predict_images", "instances": pixels.tolist()})
    direct = loaded.signatures["predict_images"]
    out = direct(**_tf_serving_decode(body, direct))
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               model.predict(pixels.astype(np.float32), verbose=0), atol=1e-5)


def test_warmup_requests_are_real_images_the_signature_accepts(exported, loaded):
    path = exported[2].path / "assets.extra" / "tf_serving_warmup_requests"
    requests = serving_config.read_warmup_requests(path)
    assert len(requests) == 1
    request = requests[0]
    assert request.model_spec.name == "tiny"
    assert request.model_spec.signature_name == "serving_default"
    batch = tf.make_ndarray(request.inputs["image_bytes"])
    assert batch.shape == (1,) and batch[0][:3] == b"\xff\xd8\xff"
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(batch))
    assert out["probabilities"].shape == (1, 10)


def test_bad_requests_are_invalid_argument_and_the_model_keeps_serving(loaded):
    serving = loaded.signatures["serving_default"]
    jpeg = saved_model.sample_image_bytes()
    for bad in ([jpeg, b"not an image"], [jpeg[: len(jpeg) // 3]],
                [png_header_only(20_000, 20_000)], []):
        with pytest.raises(tf.errors.InvalidArgumentError):
            serving(image_bytes=tf.constant(bad, dtype=tf.string))
    assert serving(image_bytes=tf.constant([jpeg]))["probabilities"].shape == (1, 10)


def test_existing_version_is_never_overwritten(exported):
    base, model, first, _ = exported
    before = sorted(p.name for p in first.path.rglob("*"))
    with pytest.raises(saved_model.VersionExistsError, match="omit the version"):
        saved_model.export_saved_model(model, base, class_names=CLASS_NAMES, image_size=32,
                                       version=1)
    assert sorted(p.name for p in first.path.rglob("*")) == before


def test_failed_export_leaves_no_version(tmp_path, monkeypatch):
    def write_then_fail(model, spec, path, *args):
        _fake_write(model, spec, path)
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model, "_write_version", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        saved_model.export_saved_model(tiny_model(), tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []
    assert not (tmp_path / "models.config").exists()
    monkeypatch.setattr(saved_model, "_write_version", _fake_write)
    assert saved_model.export_saved_model(tiny_model(), tmp_path).version == 1


@pytest.mark.slow
def test_killed_export_leaves_no_version(tmp_path, monkeypatch):
    marker = tmp_path / "writing"
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from keras_effnet.export import saved_model
        import test_export_support
        base, marker = sys.argv[1:]
        def write_slowly(model, spec, path, *args):  # killed half-way through
            (path / "variables").mkdir()
            (path / "saved_model.pb").write_bytes(b"half")
            Path(marker).write_text("x")
            time.sleep(600)
        saved_model._write_version = write_slowly
        saved_model.export_saved_model(test_export_support.tiny_model(), base)
    """)
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(marker)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not marker.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the exporter never started writing"
        (tmp,) = (tmp_path / "tiny").glob(".tmp-1-*")
        assert (tmp / "saved_model.pb").is_file()  # half-written version, hidden
        assert not (tmp_path / "tiny" / "1").exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert serving_config.existing_versions(tmp_path / "tiny") == []
    # The next export removes the dead exporter's temporary and takes version 1.
    monkeypatch.setattr(saved_model, "_write_version", _fake_write)
    assert saved_model.export_saved_model(tiny_model(), tmp_path).version == 1
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["1"]


def test_models_config_keeps_hand_set_labels_and_other_models(tmp_path):
    for version in (1, 2, 3):
        (tmp_path / "a" / str(version)).mkdir(parents=True)
    (tmp_path / "a" / ".tmp-4-123").mkdir()
    (tmp_path / "models.config").write_text(textwrap.dedent("""
        model_config_list {
          config { name: "a" base_path: "gs://bucket/a" model_platform: "tensorflow"
                   version_labels { key: "canary" value: 1 }
                   version_labels { key: "gone" value: 9 } }
          config { name: "elsewhere" base_path: "/srv/elsewhere" model_platform: "tensorflow" }
        }
    """))
    serving_config.update_models_config(tmp_path, serving_base_path="/models")
    from tensorflow_serving.config import model_server_config_pb2
    config = text_format.Parse((tmp_path / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"a", "elsewhere"}
    a = entries["a"]
    assert a.base_path == "gs://bucket/a"  # hand-edited path kept
    assert list(a.model_version_policy.specific.versions) == [1, 2, 3]
    assert dict(a.version_labels) == {"canary": 1, "stable": 3, "previous": 2}
    assert entries["elsewhere"].base_path == "/srv/elsewhere"


def test_batching_parameters_are_validated_and_kept():
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        serving_config.BatchingConfig(max_batch_size=8, allowed_batch_sizes=(1, 4))
    text = serving_config.BatchingConfig(max_batch_size=8, allowed_batch_sizes=(2, 8)).to_text()
    assert "allowed_batch_sizes: 2\nallowed_batch_sizes: 8" in text


def test_bad_arguments(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="10 classes but 2 class names"):
        saved_model.export_saved_model(model, tmp_path, class_names=["a", "b"])
    with pytest.raises(ValueError, match="model_name"):
        saved_model.export_saved_model(model, tmp_path, model_name="../escape")
    with pytest.raises(ValueError, match="version must be an integer from 1 to"):
        saved_model.export_saved_model(model, tmp_path, version=0)
    with pytest.raises(ValueError, match="pass image_size"):
        saved_model.export_saved_model(tiny_model(size=None), tmp_path)


@pytest.mark.slow
def test_an_unrelated_model_is_not_added_as_a_version_of_another(tmp_path):
    # A 10-class model, then a 3-class fine-tune and another architecture under the same
    # (default) name: refused, naming both, nothing written; another name or the
    # explicit switch adds them.
    saved_model.export_saved_model(tiny_model(size=None), tmp_path, warmup=False, image_size=32)
    three = tiny_model(size=None, classes=3)
    with pytest.raises(saved_model.OtherModelError,
                       match=r"serves another model as 'tiny' \(version 1\): its classes are "
                             r"10 \[0, 1, 2, 3, \.\.\.\], this model's 3 \[cat, dog, owl\]"):
        saved_model.export_saved_model(three, tmp_path, class_names=["cat", "dog", "owl"],
                                       warmup=False, image_size=32)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]
    import keras_effnet
    wider = keras_effnet.build(arch=["r1_k3_s1_e1_i8_o16_f"], classes=10, name="tiny")
    with pytest.raises(saved_model.OtherModelError, match=r"it is tiny \([\d,]+ parameters\), "
                                                          r"this model tiny \([\d,]+ param"):
        saved_model.export_saved_model(wider, tmp_path, warmup=False, image_size=32)
    assert saved_model.export_saved_model(three, tmp_path, model_name="pets",
                                          class_names=["cat", "dog", "owl"],
                                          warmup=False, image_size=32).version == 1
    assert saved_model.export_saved_model(wider, tmp_path, allow_other_model=True,
                                          warmup=False, image_size=32).version == 2
