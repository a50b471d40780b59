"""Backbone feature maps: build(..., include_top=False, pyramid_outputs=True)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_effnet
from keras_effnet.builder import pyramid_channels

HEIGHT, WIDTH = 72, 100  # non-square, not a multiple of 32
TINY = ["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e2_i8_o8_f", "r1_k3_s2_e2_i8_o16_f",
        "r1_k3_s2_e2_i16_o16_se0.25", "r1_k3_s2_e2_i16_o24_se0.25"]


def _expected_size(size, stride):
    # Every stride-2 'same' convolution rounds up.
    for _ in range(int(math.log2(stride))):
        size = math.ceil(size / 2)
    return size


def _check(model, channels):
    x = np.random.default_rng(0).uniform(0, 255, (1, HEIGHT, WIDTH, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert sorted(out) == ["P1", "P2", "P3", "P4", "P5"]
    for key, value in out.items():
        stride = 2 ** int(key[1])
        assert value.shape == (1, _expected_size(HEIGHT, stride),
                               _expected_size(WIDTH, stride), channels[key])


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0", "efficientnetv2-b0"])
def test_strides_and_channels_at_a_non_square_size(name):
    model = keras_effnet.build(name, include_top=False, pyramid_outputs=True)
    _check(model, pyramid_channels(name))
    # P5: the last block's output (its projection, plus the shortcut where it has one).
    last = [layer for layer in model.layers if layer.name.startswith("stage")][-1]
    assert last.name.endswith(("project_bn", "_add")) and model.output["P5"] is last.output
    assert not any(layer.name.startswith("top_") for layer in model.layers)


def test_channel_table():
    assert pyramid_channels("efficientnet-b0") == dict(P1=16, P2=24, P3=40, P4=112, P5=320)
    assert pyramid_channels("efficientnet-lite0") == dict(P1=16, P2=24, P3=40, P4=112, P5=320)
    assert pyramid_channels("efficientnetv2-b0") == dict(P1=16, P2=32, P3=48, P4=112, P5=192)
    assert pyramid_channels("efficientnetv2-s") == dict(P1=24, P2=48, P3=64, P4=160, P5=256)
    for name in keras_effnet.list_models():  # every variant has all five levels
        assert list(pyramid_channels(name)) == ["P1", "P2", "P3", "P4", "P5"]


def test_tiny_arch_and_refusals():
    _check(keras_effnet.build(arch=TINY, include_top=False, pyramid_outputs=True),
           pyramid_channels(TINY))
    with pytest.raises(ValueError, match=r"reaches \(2, 4, 8, 16\)"):
        keras_effnet.build(arch=TINY[:4], include_top=False, pyramid_outputs=True)
    with pytest.raises(ValueError, match="include_top=False"):
        keras_effnet.build(arch=TINY, pyramid_outputs=True)
    with pytest.raises(ValueError, match="pooling=None"):
        keras_effnet.build(arch=TINY, include_top=False, pooling="avg", pyramid_outputs=True)


_RELOAD = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)
out = model.predict(np.load(sys.argv[2]), verbose=0)
print(json.dumps({k: float(np.abs(v).sum()) for k, v in out.items()}))
"""


@pytest.mark.slow
def test_keras_file_reloads_in_safe_mode_in_a_fresh_process(tmp_path):
    model = keras_effnet.build(arch=TINY, include_top=False, pyramid_outputs=True)
    path, inputs = str(tmp_path / "pyramid.keras"), str(tmp_path / "x.npy")
    model.save(path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 40, 56, 3)).astype("float32")
    np.save(inputs, x)
    done = subprocess.run([sys.executable, "-c", _RELOAD, path, inputs], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {k: float(np.abs(v).sum()) for k, v in model.predict(x, verbose=0).items()}
    assert theirs.keys() == ours.keys()
    assert all(abs(theirs[k] - ours[k]) <= 1e-4 * ours[k] for k in ours)
