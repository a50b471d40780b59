"""Benchmarks keras_effnet: speed against keras.applications, the input pipeline,
progressive learning, serving, TFLite, build time, FLOP utilisation and reliability.

``keras-effnet-benchmark``, ``python -m keras_effnet.commands.benchmark`` and, in a
checkout, ``python scripts/benchmark.py`` are the same command.

    keras-effnet-benchmark --quick                  # a few minutes on a CPU
    keras-effnet-benchmark                          # the full CPU run
    keras-effnet-benchmark --quick --reliability    # + kill -9, fuzzing, bad files
    keras-effnet-benchmark --only=train,mfu         # rerun pieces (others are kept)
    keras-effnet-benchmark --only=build --set=build_models=efficientnetv2-l
    keras-effnet-benchmark --gpu                    # the accelerator part alone
    keras-effnet-benchmark --only=mfu --set=mfu_batch=4 --set=matmul_size=512

Writes benchmarks/<cpu|gpu>/results.json and results.md (below the current directory; in
the checkout's benchmarks/ for scripts/benchmark.py) (command, machine, date, one
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
import functools
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import flags  # noqa: E402

from keras_effnet import cli, commands  # noqa: E402
from keras_effnet.bench.runner import BenchRequest, run as run_benchmark  # noqa: E402
from keras_effnet.errors import ConfigError  # noqa: E402

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


def main(prog: str = "keras-effnet-benchmark", results_root: Path = Path("benchmarks")
         ) -> int:
    """Runs the requested sections; ``prog`` is the command recorded with the results,
    ``results_root`` holds ``cpu/`` and ``gpu/`` when --out_dir is not given."""
    request = BenchRequest(**REQUEST.values(), overrides=tuple(flags.FLAGS.set))
    sections = request.sections()
    try:
        config = request.config()
    except ConfigError as e:
        if e.field != "overrides":
            raise
        return cli.fail(f"--set: {e}")
    out_dir = Path(request.out_dir) if request.out_dir else results_root / request.device
    if request.gpu:
        from keras_effnet.bench.sections.gpu import gpu_name
        with _quiet_native_stderr():  # TensorFlow's C++ start-up lines
            name = gpu_name()
        if name is None:
            return cli.fail("--gpu needs a visible GPU; TensorFlow sees none "
                            "(tf.config.list_physical_devices('GPU') is empty).")
    command = prog + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_benchmark(config, sections, out_dir, command.strip(), device=request.device,
                  merge=request.merge)
    return 0


def run(prog: str = "keras-effnet-benchmark", results_root: Path = Path("benchmarks")
        ) -> None:
    """The console script ``keras-effnet-benchmark`` (``prog`` and ``results_root`` as
    :func:`main` takes them)."""
    commands.run(functools.partial(main, prog, results_root), __doc__, flagsets=(REQUEST,))


if __name__ == "__main__":
    run(prog="python -m keras_effnet.commands.benchmark")
