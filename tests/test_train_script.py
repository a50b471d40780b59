"""scripts/train.py as a user runs it: errors, kill -9 and Ctrl-C, resume, outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_trainer_support import TINY_ARCH

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


@pytest.mark.parametrize("args,message", [
    (["--bogus=1"], "error: Unknown command line flag 'bogus' (see --helpfull)"),
    (["--model=efficientnetv2-q"],
     "error: --model: Unknown model 'efficientnetv2-q'. Did you mean"),
    (["--dataset=folder"], "error: --data_dir: dataset='folder' needs data_dir="),
    (["--dataset=folder", "--data_dir=/no/such/dir"],
     "error: --data_dir: data_dir /no/such/dir does not exist"),
    (["--data_dir=/no/such/dir"], "error: --data_dir: data_dir /no/such/dir does not exist"),
    (["--data_dir=scripts"], "error: --data_dir: data_dir scripts holds neither class "
     "sub-folders of images"),
    (["--dataset=digits", "--data_dir=scripts"],
     "error: --data_dir: digits is embedded and reads no data_dir"),
    (["--dataset=mnist5k", "--data_dir=scripts"],
     "error: --data_dir: mnist5k is embedded and reads no data_dir"),
    (["--epochs=2", "--stages=3"], "error: --stages: stages (3) must be <= epochs (2)"),
    (["--dataset=imagenet"], "error: --dataset: dataset must be one of mnist5k, digits, folder"),
    (["--batch_size=0"], "error: --batch_size: batch_size must be an integer >= 1"),
    (["--image_size=1"], "error: --image_size: image_size must be an integer >= 2"),
    (["--export_quantize=int9"],
     "error: --export_quantize: quantize must be a list of none, float16"),
    (["--export_prune=1.5"], "error: --export_prune: target_sparsity must be in (0, 1)"),
    (["--export_prune_epochs=0"], "error: --export_prune_epochs: epochs must be >= 1"),
    (["extra"], "error: unexpected arguments ['extra']"),
    (["--model_dir=README.md"], "error: --model_dir: README.md is a file, not a directory"),
    (["--depth=1e6"], "error: --depth: efficientnetv2-b0-w0.5-d1e+06 would have 21,000,000 "
     "blocks, more than the limit of 1,000"),
])
def test_mistakes_print_one_line_and_exit_2(args, message):
    result = _run(*args, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_empty_dataset_is_a_one_line_error(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    result = _run("--dataset=folder", f"--data_dir={tmp_path}",
                  f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No readable images" in lines[0]
    assert "Traceback" not in result.stderr


def _interactive_sigint():
    # As a terminal starts a command: Ctrl-C at its default. A test run launched in the
    # background of a non-interactive shell (`pytest ... &`) inherits SIGINT ignored, and
    # Python then keeps ignoring it, as POSIX asks of background jobs.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args):
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT,
                            preexec_fn=_interactive_sigint)


def _wait_for(proc, predicate, timeout=400):
    """Read the process' output until a line satisfies predicate; returns all lines."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if predicate(line):
            return lines
    proc.kill()
    raise AssertionError("never saw the expected line:\n" + "\n".join(lines[-40:]))


@pytest.mark.slow
def test_kill_9_then_ctrl_c_then_finish(tmp_path):
    model_dir = tmp_path / "run"
    args = ["--dataset=digits", f"--model={TINY_ARCH}", "--image_size=16",
            "--min_image_size=8", "--epochs=2", "--stages=2", "--batch_size=32",
            "--checkpoint_every_steps=10",
            f"--model_dir={model_dir}", "--eval_every_epochs=0", "--noexport"]
    steps_per_epoch = 1438 // 32  # the digits split: 1438 train / 359 held-out

    # 1. kill -9 right after the first checkpoint.
    first = _start(args)
    _wait_for(first, lambda line: line.startswith("Saved checkpoint"))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    state = (model_dir / "checkpoints" / "checkpoint").read_text()
    assert "ckpt-1" in state

    # 2. The same command resumes; Ctrl-C after its next checkpoint saves and exits 130.
    second = _start(args)
    lines = _wait_for(second, lambda line: line.startswith("Saved checkpoint"))
    resumed = [line for line in lines if line.startswith("Resumed from")]
    assert resumed and "ckpt-1" in resumed[0] and "step 10," in resumed[0], lines
    second.send_signal(signal.SIGINT)
    rest, _ = second.communicate(timeout=120)
    assert second.returncode == 130, rest
    assert "Interrupted: checkpoint saved" in rest
    saved = [line for line in rest.splitlines() if "(interrupted;" in line]
    assert saved, rest
    interrupted_step = int(saved[0].split("step ")[1].split(",")[0])
    assert 20 <= interrupted_step < 2 * steps_per_epoch

    # 3. Again: resumes at the interrupted step and finishes the run.
    third = _run(*args, timeout=600)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"step {interrupted_step}," in next(
        line for line in third.stdout.splitlines() if line.startswith("Resumed from"))
    assert "Stage 2/2" in third.stdout and "Held-out top-1" in third.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 * steps_per_epoch and metrics["epochs_completed"] == 2
    config = json.loads((model_dir / "config.json").read_text())
    assert {"model", "dataset", "data_dir", "eval_image_size", "num_classes"} <= set(config)
    assert config["dataset"] == "digits" and config["num_classes"] == 10
    assert config["eval_image_size"] == 16
    assert (model_dir / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    for name in ("final_model.keras", "training_curves.png"):
        assert (model_dir / name).stat().st_size > 0
    last = third.stdout.strip().splitlines()[-1]
    assert last.startswith("top-1 ") and "held-out images" in last


@pytest.mark.slow
def test_the_run_ends_by_exporting_a_serving_version_and_a_pruned_tflite(tmp_path):
    saved, lite = tmp_path / "saved_models", tmp_path / "tflite"
    result = _run("--dataset=digits", f"--model={TINY_ARCH}", "--image_size=16",
                  "--min_image_size=8", "--epochs=2", "--stages=2", "--batch_size=64",
                  "--eval_every_epochs=0",
                  f"--model_dir={tmp_path / 'run'}", f"--saved_models={saved}",
                  f"--tflite_dir={lite}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    version = saved / "efficientnet-custom" / "1"
    tflite_file = lite / "efficientnet-custom" / "1" / "efficientnet-custom-pruned50-int8.tflite"
    assert (version / "saved_model.pb").is_file() and tflite_file.stat().st_size > 0
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.startswith("  saved_model ") or line.startswith("  tflite ")}
    # Where they are, their sizes and their held-out accuracy, one row each.
    assert str(version) in rows["saved_model"] and str(tflite_file) in rows["tflite"]
    for row in rows.values():
        assert " MB " in row or " kB " in row
        assert row.count("%") == 2
    assert "top-1 on 359 held-out images" in out
    assert "kernel sparsity >= 50.00% in every one" in out
    # The main job skips the dense comparison (one conversion less); export.py keeps it.
    assert "sparse encoding" in out and "unpruned gzipped" not in out
