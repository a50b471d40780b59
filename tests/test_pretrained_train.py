"""scripts/train.py --init_weights=TAG: a pretrained start fetched through the mirror,
with the freeze / unfreeze flags, resume and export; offline refusals as one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weights_fixtures import official_variables, weight_server, write_tarball

import keras_effnet
from keras_effnet.weights import get_weight_tag

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "scripts" / "train.py"
EXPORT = ROOT / "scripts" / "export.py"
ARGS = ["--model=efficientnet-lite0", "--init_weights=imagenet", "--freeze=backbone",
        "--unfreeze_at_epoch=1", "--epochs=2", "--stages=1", "--image_size=32",
        "--batch_size=16", "--max_train_steps=6", "--eval_every_epochs=0", "--noexport"]


def _run(script, *args, env, timeout=600):
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def _env(tmp_path, **extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_HOME": str(tmp_path / "cache"), **extra}


@pytest.mark.slow
def test_train_from_a_tag_resume_and_export(tmp_path, monkeypatch):
    row = get_weight_tag("efficientnet-lite0", "imagenet")
    source = keras_effnet.build("efficientnet-lite0")
    root = tmp_path / "mirror"
    with weight_server(root, monkeypatch, tmp_path / "cache") as server:
        write_tarball(official_variables(source, "efficientnet-lite0"), server.path_of(row.origin))
        env = _env(tmp_path, KERAS_EFFNET_WEIGHTS_MIRROR=server.url)
        run = tmp_path / "run"
        first = _run(TRAIN, *ARGS, "--max_train_steps=3", f"--model_dir={run}", env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Starting weights: imagenet" in first.stdout + first.stderr
        assert server.requests == [f"/{row.origin.split('/', 3)[3]}"]
        record = json.loads((run / "config.json").read_text())
        assert record["fine_tune"]["init_weights"] == "imagenet"
        assert record["variant"]["preprocessing"] == "lite"
        # The same command continues the run (max_train_steps raised): no new request.
        second = _run(TRAIN, *ARGS, f"--model_dir={run}", env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Resum" in second.stdout + second.stderr
        assert len(server.requests) == 1
    # The backbone frozen in epoch 1 kept the checkpoint's values in its BatchNorm (frozen
    # throughout) and the run exports as any run does.
    model = keras_effnet.build("efficientnet-lite0", classes=10, weights=str(run))
    bn = "stage4_block02_dw_bn"
    np.testing.assert_allclose(model.get_layer(bn).get_weights()[3],
                               source.get_layer(bn).get_weights()[3], rtol=1e-6)
    exported = _run(EXPORT, f"--model_dir={run}", "--formats=saved_model",
                    f"--saved_models={tmp_path / 'served'}", env=_env(tmp_path))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert list((tmp_path / "served").rglob("saved_model.pb"))


def test_offline_tag_without_a_cache_is_one_line_before_training(tmp_path):
    result = _run(TRAIN, *ARGS, f"--model_dir={tmp_path / 'run'}",
                  env=_env(tmp_path, KERAS_EFFNET_OFFLINE="1"), timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --init_weights: ")
    assert "lite/efficientnet-lite0.tar.gz" in errors[0] and "KERAS_EFFNET_OFFLINE" in errors[0]
    assert not (tmp_path / "run").exists() and "Traceback" not in result.stderr
    result = _run(TRAIN, "--model=efficientnet-b0", "--init_weights=imagenet21k",
                  f"--model_dir={tmp_path / 'run'}", env=_env(tmp_path), timeout=120)
    assert result.returncode == 2
    assert "'efficientnet-b0' has 'imagenet', 'noisy-student', 'advprop'" in result.stderr
