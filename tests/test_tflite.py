"""TFLite conversion checked with ai-edge-litert: float fidelity and int8 agreement."""

import functools

import numpy as np
import pytest
from test_export_support import digits, tiny_model, top1, trained_lite

from keras_effnet.export import tflite


@functools.lru_cache(maxsize=None)
def _tiny():
    return tiny_model(size=32)


@functools.lru_cache(maxsize=None)
def _tiny_tflite(mode: str = "none") -> bytes:
    return tflite.convert(_tiny(), mode)


@functools.lru_cache(maxsize=None)
def _trained_tflite(mode: str, int8_io: bool = False) -> bytes:
    x_train = digits()[0]
    return tflite.convert(trained_lite(), mode, int8_io=int8_io,
                          representative_images=x_train[:100] if mode == "int8" else None)


def test_float_flavours_match_keras():
    model = _tiny()
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    expected = model.predict(images, verbose=0)
    tolerance = {"none": 1e-4, "float16": 1e-2, "dynamic": 5e-2}
    sizes = {}
    for mode, atol in tolerance.items():
        content = _tiny_tflite(mode)
        sizes[mode] = len(content)
        runner = tflite.LiteRunner(content)
        assert runner.input_shape == (1, 32, 32, 3) and runner.input_dtype == np.float32
        got = runner.predict(images)
        assert got.shape == (6, 10)
        np.testing.assert_allclose(got, expected, atol=atol)
        assert not tflite.sparsity_encoded(content)
    assert sizes["float16"] < sizes["none"]


def test_dynamic_batch_runner():
    model = tiny_model(size=32)
    content = tflite.convert(model, batch_size=None)
    images = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    runner = tflite.LiteRunner(content)
    np.testing.assert_allclose(runner.predict(images, batch_size=2),
                               model.predict(images, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_float_tflite_matches_keras_on_held_out_digits():
    _, _, x_test, y_test = digits()
    keras_probabilities = trained_lite().predict(x_test, verbose=0)
    assert top1(keras_probabilities, y_test) >= 0.9  # the model did learn
    lite = tflite.LiteRunner(_trained_tflite("none")).predict(x_test)
    np.testing.assert_allclose(lite, keras_probabilities, atol=1e-4)


@pytest.mark.slow
def test_int8_agrees_with_float_on_held_out_digits():
    _, _, x_test, y_test = digits()
    float_probabilities = tflite.LiteRunner(_trained_tflite("none")).predict(x_test)
    content = _trained_tflite("int8")
    assert len(content) < len(_trained_tflite("none")) / 2.5
    int8_probabilities = tflite.LiteRunner(content).predict(x_test)
    agreement = tflite.top1_agreement(int8_probabilities, float_probabilities)
    print(f"int8 vs float top-1 agreement on {len(x_test)} held-out digits: {agreement:.2%}; "
          f"top-1 float {top1(float_probabilities, y_test):.2%}, "
          f"int8 {top1(int8_probabilities, y_test):.2%}")
    assert agreement >= 0.97


@pytest.mark.slow
def test_integer_only_io():
    _, _, x_test, _ = digits()
    runner = tflite.LiteRunner(_trained_tflite("int8", int8_io=True))
    assert runner.input_dtype == np.uint8
    float_probabilities = tflite.LiteRunner(_trained_tflite("none")).predict(x_test)
    assert tflite.top1_agreement(runner.predict(x_test), float_probabilities) >= 0.95


def test_int8_needs_enough_representative_images():
    model = tiny_model(size=32)
    few = np.zeros((20, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="at least 100 representative images"):
        tflite.convert(model, "int8", representative_images=few)
    with pytest.raises(ValueError, match="needs representative_images"):
        tflite.convert(model, "int8")
    with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\]"):
        tflite.convert(model, "int8", representative_images=np.zeros((100, 16, 16, 3)))
    with pytest.raises(ValueError, match="quantize must be one of"):
        tflite.convert(model, "int4")
    with pytest.raises(ValueError, match="int8_io"):
        tflite.convert(model, "dynamic", int8_io=True)


def test_write_tflite_is_atomic_and_never_overwrites(tmp_path):
    content = _tiny_tflite("none")
    path = tmp_path / "m" / "model.tflite"
    written = tflite.write_tflite(content, path, "none")
    assert path.read_bytes() == content and written.size_bytes == len(content)
    assert 0 < written.gzipped_bytes < written.size_bytes and not written.sparse
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]
    with pytest.raises(FileExistsError):
        tflite.write_tflite(b"other", path, "none")
    assert path.read_bytes() == content


def test_xnnpack_sparse_inference_is_reported_off_on_x86_with_avx():
    reason = tflite.xnnpack_sparse_unavailable("x86_64", ["sse4_2", "avx", "avx2"])
    assert "AVX" in reason and "ARM" in reason
    assert tflite.xnnpack_sparse_unavailable("x86_64", ["sse4_2", "ssse3"]) is None
    assert tflite.xnnpack_sparse_unavailable("aarch64", ["avx"]) is None


def test_int8_export_of_a_small_dataset_is_one_config_error_before_writing(tmp_path):
    # A 16-image folder used to reach convert() and end in a traceback after training.
    import types

    import numpy as np

    from keras_effnet.errors import ConfigError
    from keras_effnet.export import tflite

    class Few:
        name = "folder"

        def representative_images(self, n, image_size):
            return np.zeros((16, image_size, image_size, 3), np.float32)

    config = types.SimpleNamespace(quantize=("int8",), representative_images=100,
                                   tflite_dir=str(tmp_path / "tflite"), prune=None)
    context = types.SimpleNamespace(config=config, source=Few(), image_size=32, name="m",
                                    version=1, is_pruned=lambda model: False)
    with pytest.raises(ConfigError, match="needs at least 100 training images and 'folder' "
                                          "has 16") as error:
        tflite.export(object(), context)
    assert error.value.field == "quantize"
    assert not (tmp_path / "tflite").exists()
