"""The public API: explicit re-exports, and a light import."""

import subprocess
import sys


def test_every_public_name_resolves():
    import keras_effnet
    for name in keras_effnet.__all__:
        assert getattr(keras_effnet, name) is not None, name


def test_import_does_not_load_tensorflow():
    code = ("import sys, keras_effnet; keras_effnet.profile('efficientnetv2-s'); "
            "keras_effnet.progressive_plan('efficientnetv2-s', 350); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_the_scripts_request_checks_do_not_load_tensorflow():
    # scripts/train.py checks flags and the request before TensorFlow loads, so a mistake
    # is one line in about a second (and TensorFlow's start-up lines never precede it).
    code = ("import sys; import keras_effnet.train; from keras_effnet.train import "
            "TrainConfig; from keras_effnet.export.config import ExportConfig; "
            "import keras_effnet.train.finetune; "
            "TrainConfig(init_weights=None, freeze='bn').validate(); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
