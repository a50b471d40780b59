"""scripts/export.py: one-line errors before TensorFlow loads, and a whole run end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_export_support import TINY_ARCH, make_run_dir, tiny_model

from keras_effnet.export import job

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "export.py"


def _export(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _tiny_variant():
    from keras_effnet.variants import custom_variant
    return custom_variant(TINY_ARCH)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    variant = _tiny_variant()  # the model is named after it, as the trainer names it
    return make_run_dir(tmp_path_factory.mktemp("run") / "run",
                        tiny_model(size=None, name=variant.name), variant,
                        eval_image_size=16)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args,fragments", [
    ([], ["--model_dir:", "exactly one of"]),
    (["--model_dir=/no/such/run"], ["--model_dir:", "does not exist"]),
    (["--prune=abc"], ["--prune=abc"]),
    (["--no_such_flag=1"], ["no_such_flag"]),
    (["--model=efficientnet-lite0", "--quantize=int4"], ["--quantize:", "int4"]),
    (["--model=efficientnet-lite0", "--formats=onnx"], ["--formats:", "onnx"]),
    (["--model=efficientnet-lite9"], ["--model:", "Did you mean"]),
    (["--model=efficientnet-lite0", "--prune=1.5"], ["--prune:", "(0, 1)"]),
    (["--model=efficientnet-lite0", "--quantize=int8"], ["--dataset:"]),
    (["--model=efficientnet-lite0", "stray"], ["unexpected arguments"]),
    (["--model=efficientnet-lite0", "--prune=0.5", "--prune_end_fraction=0"],
     ["--prune_end_fraction:", "(0, 1]"]),
    (["--model=efficientnet-lite0", "--prune=0.5", "--prune_learning_rate=-1"],
     ["--prune_learning_rate:", "> 0"]),
    (["--model=efficientnet-lite0", "--prune=0.5", "--prune_learning_rate_decay=step"],
     ["prune_learning_rate_decay", "cosine"]),
])
def test_bad_requests_fail_with_one_line(args, fragments):
    _assert_one_line_error(_export(*args, timeout=120), *fragments)


def test_run_dir_without_model_and_existing_version(tmp_path, run_dir):
    (tmp_path / "empty_run").mkdir()
    _assert_one_line_error(_export(f"--model_dir={tmp_path / 'empty_run'}", timeout=120),
                           "--model_dir:", "final_model.keras", "training run finished")
    (tmp_path / "saved_models" / "efficientnet-custom" / "3").mkdir(parents=True)
    _assert_one_line_error(_export(f"--model_dir={run_dir}", "--version=3",
                                   f"--saved_models={tmp_path / 'saved_models'}",
                                   timeout=120), "--version:", "already exists")


def test_untrained_build_without_dataset(tmp_path):
    report = job.run(job.ExportConfig(
        model=",".join(TINY_ARCH), num_classes=10, image_size=32, formats=("tflite",),
        quantize=("none",), tflite_dir=str(tmp_path),
        saved_models=str(tmp_path / "saved_models")), log=lambda line: None)
    (artifact,) = [a for a in report.artifacts if a.kind.startswith("tflite")]
    assert Path(artifact.path) == tmp_path / "efficientnet-custom" / "1" / \
        "efficientnet-custom-none.tflite"
    assert artifact.top1 is None and artifact.size_bytes > 0
    assert (tmp_path / "efficientnet-custom" / "1" / "labels.txt").read_text().split() == \
        [str(i) for i in range(10)]


@pytest.mark.slow
def test_whole_export_of_a_training_run(tmp_path, run_dir):
    saved, lite = tmp_path / "saved_models", tmp_path / "tflite"
    result = _export(f"--model_dir={run_dir}", "--formats=saved_model,tflite",
                     "--quantize=none", "--prune=0.5", "--prune_epochs=1", "--prune_steps=8",
                     "--max_eval_images=32", f"--saved_models={saved}",
                     f"--tflite_dir={lite}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    version_dir = saved / "efficientnet-custom" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (saved / "models.config").is_file() and (saved / "batching_parameters.txt").is_file()
    for mode in ("none",):
        path = lite / "efficientnet-custom" / "1" / f"efficientnet-custom-pruned50-{mode}.tflite"
        assert path.is_file()
        assert str(path) in out
    assert str(version_dir) in out
    assert "top-1 on 32 held-out images" in out
    rows = [line for line in out.splitlines()
            if line.startswith(("  keras ", "  saved_model ", "  tflite "))]
    assert len(rows) == 4 and all("%" in row for row in rows), out
    assert "kernel sparsity >= 5" in out and "smaller" in out
    # The same request again: the next version, nothing overwritten.
    again = _export(f"--model_dir={run_dir}", "--formats=saved_model", "--version=1",
                    f"--saved_models={saved}", timeout=120)
    _assert_one_line_error(again, "--version:", "already exists")
