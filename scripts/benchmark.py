"""Benchmarks keras_effnet: speed against keras.applications, the input pipeline,
progressive learning, serving, TFLite, build time, FLOP utilisation and reliability.

    python scripts/benchmark.py --quick                  # a few minutes on a CPU
    python scripts/benchmark.py                          # the full CPU run
    python scripts/benchmark.py --quick --reliability    # + kill -9, fuzzing, bad files
    python scripts/benchmark.py --only=train,mfu         # rerun pieces (others are kept)
    python scripts/benchmark.py --only=build --set=build_models=efficientnetv2-l
    python scripts/benchmark.py --gpu                    # the accelerator part alone
    python scripts/benchmark.py --only=mfu --set=mfu_batch=4 --set=matmul_size=512

Writes benchmarks/<cpu|gpu>/results.json and results.md (command, machine, date, one
table per section) and the figures next to them. Every comparison is A/B interleaved in
one process, medians of --repeats rounds after a warm-up; the machine may be shared and
noisy, so read the ratios. Nothing is asserted on timings.

Sections: plots, build, train, pipeline, mfu, serving, progressive, main_job, stage_cost,
transfer, search, tflite (default, in that order), reliability (with --reliability), gpu
(with --gpu). Every setting of
keras_effnet.bench.BenchConfig can be changed with --set=name=value.

A mistake in the request prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import flags  # noqa: E402

from keras_effnet import cli  # noqa: E402
from keras_effnet.bench.runner import BenchRequest, run  # noqa: E402
from keras_effnet.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

REQUEST = cli.FlagSet(BenchRequest)
REQUEST.define()
# Repeatable, and a value may hold commas (tuples): a multi-string flag, outside FlagSet.
flags.DEFINE_multi_string("set", [], "Override a BenchConfig setting: --set=name=value "
                          "(tuples comma-separated), repeatable.")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silences file descriptor 2 (C++ logging writes there, past ``sys.stderr``), so a
    refusal stays one line."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main() -> int:
    request = BenchRequest(**REQUEST.values(), overrides=tuple(flags.FLAGS.set))
    sections = request.sections()
    try:
        config = request.config()
    except ConfigError as e:
        if e.field != "overrides":
            raise
        return cli.fail(f"--set: {e}")
    out_dir = Path(request.out_dir) if request.out_dir else ROOT / "benchmarks" / request.device
    if request.gpu:
        from keras_effnet.bench.sections.gpu import gpu_name
        with _quiet_native_stderr():  # TensorFlow's C++ start-up lines
            name = gpu_name()
        if name is None:
            return cli.fail("--gpu needs a visible GPU; TensorFlow sees none "
                            "(tf.config.list_physical_devices('GPU') is empty).")
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run(config, sections, out_dir, command.strip(), device=request.device,
        merge=request.merge)
    return 0


if __name__ == "__main__":
    cli.run(main, flagsets=(REQUEST,))
