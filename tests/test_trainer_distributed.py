"""The same training step under MirroredStrategy and MultiWorkerMirroredStrategy.

Each test runs in fresh subprocesses: logical devices and TF_CONFIG must be set before
TensorFlow initialises, and a process holds one multi-worker strategy for its life.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
    [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}


def _run(code: str, timeout: int = 400, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env or ENV,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.slow
def test_mirrored_over_two_cpus_equals_default_strategy(tmp_path):
    # Same global batch of 8: the default strategy sees it whole, each of the two
    # replicas half of it. With synchronized BatchNorm (batch statistics over the global
    # batch), no dropout and the loss scaled by the global batch, the updates agree.
    result = _run(f"""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = tf.config.LogicalDeviceConfiguration()
        tf.config.set_logical_device_configuration(cpu, [logical, logical])
        from test_trainer_support import ArraySource, tiny_config, model_weights
        from keras_effnet.train import train
        common = dict(epochs=2, dropout=0.0, sync_batchnorm=True, max_train_steps=6,
                      eval_every_epochs=0, verbose=0)
        default = train(tiny_config(r"{tmp_path}/default", strategy="default", **common),
                        source=ArraySource())
        mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        mirrored = train(tiny_config(r"{tmp_path}/mirrored", **common), source=ArraySource(),
                         strategy=mirrored_strategy)
        diffs = [float(np.abs(a - b).max()) for a, b in
                 zip(model_weights(default.model), model_weights(mirrored.model))]
        print(json.dumps({{"replicas": mirrored_strategy.num_replicas_in_sync,
                          "max_diff": max(diffs), "steps": [default.steps, mirrored.steps],
                          "top1": [default.top1, mirrored.top1]}}))
    """)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["steps"] == [6, 6]
    assert report["max_diff"] < 1e-4, report
    assert report["top1"][0] == pytest.approx(report["top1"][1], abs=1e-6)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_localhost_workers_end_with_identical_weights(tmp_path):
    # Plain (unsynchronized) BatchNorm: each worker normalises its own shard, and the
    # trainer averages the moving statistics across workers every step, so every
    # weight, BatchNorm statistics and EMA included, must be identical.
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from test_trainer_support import ArraySource, tiny_config, model_weights
        from keras_effnet.train import train
        result = train(tiny_config(r"{tmp_path}/run", strategy="multi_worker", epochs=2,
                                   max_train_steps=5, dropout=0.2, checkpoint_every_steps=2),
                       source=ArraySource(num_train=64, num_val=20))
        np.savez(sys.argv[1], *model_weights(result.model))
        print("STEPS", result.steps, "TOP1", result.top1, "CHIEF_FILES",
              result.final_model_path is not None)
    """)
    procs = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"w{index}.npz")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=500)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append((proc.returncode, out, err))
    for code_, out, err in outputs:
        assert code_ == 0, out[-2000:] + err[-5000:]
    lines = [next(l for l in out.splitlines() if l.startswith("STEPS")) for _, out, _ in outputs]
    assert lines[0].split()[1] == lines[1].split()[1] == "5"
    assert lines[0].endswith("True") and lines[1].endswith("False")  # chief writes
    assert lines[0].split()[3] == lines[1].split()[3]  # evaluation reduced over both
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) == len(w1.files) > 10
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name])
    assert (tmp_path / "run" / "final_model.keras").exists()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint").exists()
