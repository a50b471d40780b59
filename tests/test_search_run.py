"""Both searches end to end at a tiny size with the real trainer: result.json, the table,
the figure; scripts/search.py's one-line errors; kill -9 mid-search, then the same
command continues (finished candidates kept, the killed one resumed from its checkpoint).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keras_effnet import spec
from keras_effnet.run_dir import RunDir
from keras_effnet.search import reward

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "search.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
# A two-stage network on 16 px digits: a trial is a short trace and a few steps.
TINY = dict(model="r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25", width=1.0, depth=1.0,
            image_size=16, epochs=1, batch_size=64)


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


@pytest.mark.parametrize("args,message", [
    (["--search=nas", "--sampler=grid"],
     "error: --sampler: sampler 'grid' does not apply to search='nas'"),
    (["--grid_step=0"], "error: --grid_step: grid_step must be in (0, 1)"),
    (["--trials=0"], "error: --trials: trials must be an integer >= 1"),
    (["--model=efficientnet-b9"], "error: --model: Unknown model 'efficientnet-b9'"),
    (["--dataset=folder"], "error: --data_dir: dataset='folder' needs data_dir="),
    (["--reward=flops"], "error: flag --reward=flops: value should be one of"),
])
def test_mistakes_print_one_line_and_exit_2(args, message):
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("make,message", [
    (lambda d: ["--target_ratio=inf"], "error: --target_ratio: target_ratio must be a "
     "finite number > 1"),
    (lambda d: ["--grid_step=0.002"], "error: --grid_step: the grid has more than 10,000 "
     "points"),
    (lambda d: ["--storage=foo://bar"], "error: --storage: cannot open storage 'foo://bar' "
     "(NoSuchModuleError"),
    (lambda d: [f"--storage=sqlite:///{d}"], "error: --storage: cannot open storage "
     "'sqlite:///"),  # a directory
    (lambda d: [f"--storage=postgresql://me:secret@127.0.0.1:{_free_port()}/db"],
     "error: --storage: cannot open storage 'postgresql://me:***@127.0.0.1:"),
    (lambda d: [f"--storage={d}"], "error: --storage: storage '"),  # a directory
    (lambda d: [f"--study_dir={d / 'file'}"], "error: --study_dir: study_dir '"),
])
def test_a_bad_storage_or_grid_is_one_line_before_tensorflow(tmp_path, make, message):
    """Each refused before TensorFlow loads: a tensorflow that cannot be imported is
    first on the path, so reaching it would print another error."""
    poisoned = tmp_path / "poisoned" / "tensorflow"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('tensorflow was loaded')\n")
    (tmp_path / "file").write_text("not a directory\n")
    args = [*make(tmp_path), f"--study_dir={tmp_path / 'study'}"]
    if any(a.startswith("--study_dir") for a in args[:-1]):
        args.pop()
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(poisoned.parent), str(ROOT)])}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                            text=True, timeout=60, env=env, cwd=ROOT)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(message) and "secret" not in lines[0], lines[0]


@pytest.mark.slow
def test_nas_end_to_end(tmp_path):
    from keras_effnet import search

    options = dict(TINY, trials=2, max_train_steps=2, timing_rounds=2, timing_steps=1,
                   study_dir=str(tmp_path / "nas"))
    result = search.nas(**options)
    assert result.search == "nas" and len(result.ranking) == 2
    assert result.base["trial"] == 0  # the base architecture is trained first
    base = result.row(0)
    assert base["arch"] == result.base["arch"] and base["changes"] == ""
    assert base["step_time_ratio"] == 1.0  # its step is the reference
    for n in result.ranking:
        row = result.row(n)
        assert 0.0 <= row["top1"] <= 1.0 and row["step_time_ratio"] > 0
        assert row["reward"] == pytest.approx(reward.v2_reward(
            row["top1"], row["step_time_ratio"], row["params_count"] / result.base["params"]))
        assert RunDir(row["model_dir"]).read_metrics()["final"]["top1"] == row["top1"]
        assert spec.parse_arch(row["arch"])  # block strings build(arch=...) takes
    assert set(result.pareto) <= set(result.ranking) and result.pareto
    assert result.best["arch"] == result.row(result.ranking[0])["arch"]
    data = json.loads((tmp_path / "nas" / "result.json").read_text())
    assert data["best"]["arch"] == result.best["arch"]
    assert (tmp_path / "nas" / "nas.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1 |" in (tmp_path / "nas" / "table.md").read_text()
    # The same call again: the study is complete, nothing is trained.
    again = search.nas(**options)
    assert again.ranking == result.ranking and again.summary == result.summary
    assert len(list((tmp_path / "nas" / "trials").iterdir())) == 2


def _wait_for(predicate, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_scaling_search_resumes_after_kill_9(tmp_path):
    study_dir = tmp_path / "scaling"
    args = [f"--{k}={v}" for k, v in TINY.items()] + [
        "--search=scaling", "--trials=2", "--epochs=2", f"--study_dir={study_dir}"]
    trials = study_dir / "trials"

    def finished():  # the trainer saves the final model last
        return [d for d in trials.glob("*") if (d / "final_model.keras").exists()]

    def second_checkpointed():
        return any((d / "checkpoints" / "checkpoint").exists()
                   for d in trials.glob("*") if d not in finished())

    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        ok = _wait_for(lambda: finished() and second_checkpointed(), proc, 240)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
    assert ok, output
    first = finished()[0]
    first_metrics = (first / "metrics.json").read_text()
    assert len(finished()) == 1
    # The paper's coefficients are enqueued first.
    assert first.name == "a1.20_b1.10_g1.15"

    result = _run(*args, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (first / "metrics.json").read_text() == first_metrics  # not trained again
    data = json.loads((study_dir / "result.json").read_text())
    assert data["trials"][0]["state"] == "COMPLETE"
    killed = next(t for t in data["trials"] if t["state"] == "FAIL")
    assert "error" not in killed  # interrupted, not diverged: retried
    retry = next(t for t in data["trials"] if t.get("retry_of") == killed["number"])
    assert retry["state"] == "COMPLETE" and retry["params"] == killed["params"]
    metrics = RunDir(retry["model_dir"]).read_metrics()
    assert metrics["resumed_from"]  # training went on from the killed run's checkpoint
    assert data["summary"]["distinct"] == 2 and len(data["ranking"]) == 2
    best = data["best"]
    assert best["coefficients"] == {k: best[k] for k in ("alpha", "beta", "gamma")}
    assert (study_dir / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert f"trial {retry['number']:3d} [2/2]" in result.stdout  # the retry's line


@pytest.mark.slow
def test_candidates_train_to_the_same_weights_with_the_kernel_cache_kept(tmp_path):
    """Candidates train with TensorFlow's kernel cache kept across the seed reset (so the
    timed base step is not re-instantiated); the weights must equal a normal training's,
    and the binding must be restored afterwards."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python import pywrap_tfe

    from keras_effnet.builder import resolve_variant
    from keras_effnet.data import get_source
    from keras_effnet.search import proxy
    from keras_effnet.train.trainer import Trainer

    clear = pywrap_tfe.TFE_ContextClearCaches
    config = proxy.TrainConfig(model=TINY["model"], dataset="digits", epochs=1, stages=1,
                               image_size=16, eval_image_size=16, batch_size=64,
                               max_train_steps=3, verbose=0)
    variant = resolve_variant(TINY["model"])
    source = get_source(name="digits")
    weights = []
    for i in range(2):  # the second run finds the first one's kernels cached
        _, trainer, _ = proxy.train_candidate(config, variant, source=source,
                                              model_dir=str(tmp_path / f"kept{i}"))
        weights.append(trainer.model.get_weights())
    assert pywrap_tfe.TFE_ContextClearCaches is clear
    plain = Trainer(proxy.CandidateConfig(**{**config.__dict__, "candidate": variant,
                                             "model_dir": str(tmp_path / "plain")}),
                    source=source, strategy=tf.distribute.get_strategy())
    plain.run()
    for kept in weights:
        assert len(kept) == len(plain.model.get_weights())
        for a, b in zip(kept, plain.model.get_weights()):
            np.testing.assert_array_equal(a, b)
