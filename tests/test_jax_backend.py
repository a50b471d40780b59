"""The model library on Keras 3's JAX backend: build, fit, save there; load under
TensorFlow with equal outputs (and the other way round), in real fresh processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCH = ["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e2_i8_o16_se0.25", "r1_k3_s2_e4_i16_o24_se0.25",
        "r1_k3_s2_e2_i24_o24_f", "r1_k3_s2_e2_i24_o32_se0.25"]


def _python(code: str, backend: str, tmp_path: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_built_and_trained_under_jax_loads_under_tensorflow_with_equal_outputs(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    trained = _python(f"""
        import json, keras, numpy as np, keras_effnet
        assert keras.backend.backend() == "jax"
        model = keras_effnet.build(arch={ARCH!r}, classes=3, name="jax_net")
        x = np.load("x.npy")
        model.compile("adam", "sparse_categorical_crossentropy")
        history = model.fit(x, np.array([0, 1, 2, 0]), epochs=2, verbose=0)
        model.save("jax.keras")
        np.save("jax_out.npy", model.predict(x, verbose=0))
        pyramid = keras_effnet.build(arch={ARCH!r}, include_top=False, pyramid_outputs=True,
                                     input_shape=(32, 32, 3))
        assert sorted(pyramid.predict(x, verbose=0)) == ["P1", "P2", "P3", "P4", "P5"]
        print(json.dumps({{"backend": keras.backend.backend(),
                          "loss": [float(v) for v in history.history["loss"]],
                          "params": model.count_params()}}))
    """, "jax", tmp_path)
    assert trained["backend"] == "jax" and all(np.isfinite(trained["loss"]))
    loaded = _python("""
        import json, keras, numpy as np
        assert keras.backend.backend() == "tensorflow"
        model = keras.saving.load_model("jax.keras", safe_mode=True)  # no custom objects
        out = model.predict(np.load("x.npy"), verbose=0)
        print(json.dumps({"diff": float(np.abs(out - np.load("jax_out.npy")).max()),
                          "params": model.count_params(), "name": model.name}))
    """, "tensorflow", tmp_path)
    assert loaded["name"] == "jax_net" and loaded["params"] == trained["params"]
    assert loaded["diff"] <= 1e-5


@pytest.mark.slow
def test_tensorflow_weights_load_under_jax_with_equal_outputs(tmp_path):
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    code = f"""
        import json, keras, numpy as np, keras_effnet
        model = keras_effnet.build(arch={ARCH!r}, classes=3, name="net")
        if keras.backend.backend() == "tensorflow":
            model.save_weights("tf.weights.h5")
        else:
            keras_effnet.load_weights(model, "tf.weights.h5")  # the package's own loader
        np.save(keras.backend.backend() + ".npy", model.predict(np.load("x.npy"), verbose=0))
        print(json.dumps({{"backend": keras.backend.backend()}}))
    """
    assert _python(code, "tensorflow", tmp_path)["backend"] == "tensorflow"
    assert _python(code, "jax", tmp_path)["backend"] == "jax"
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"),
                               np.load(tmp_path / "tensorflow.npy"), atol=1e-5)
