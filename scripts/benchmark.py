"""Benchmarks keras_effnet: speed against keras.applications, the input pipeline,
progressive learning, serving, TFLite, build time, FLOP utilisation and reliability.

    python scripts/benchmark.py --quick                  # a few minutes on a CPU
    python scripts/benchmark.py                          # the full CPU run
    python scripts/benchmark.py --quick --reliability    # + kill -9, fuzzing, bad files
    python scripts/benchmark.py --only=train,mfu         # rerun pieces (others are kept)
    python scripts/benchmark.py --gpu                    # the accelerator part alone
    python scripts/benchmark.py --only=mfu --set=mfu_batch=4 --set=matmul_size=512

Writes benchmarks/<cpu|gpu>/results.json and results.md (command, machine, date, one
table per section) and the figures next to them. Every comparison is A/B interleaved in
one process, medians of --repeats rounds after a warm-up; the machine may be shared and
noisy, so read the ratios. Nothing is asserted on timings.

Sections: plots, build, train, pipeline, mfu, serving, progressive, tflite (default, in
that order), reliability (with --reliability), gpu (with --gpu). Every setting of
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

from absl import app, flags  # noqa: E402

from keras_effnet.cli import fail, parse_flags  # noqa: E402
from keras_effnet.bench.config import (CPU_SECTIONS, SECTIONS, apply_overrides,  # noqa: E402
                                       full_config, quick_config)

FLAGS = flags.FLAGS
ROOT = Path(__file__).resolve().parent.parent

flags.DEFINE_bool("quick", False, "Small settings: a few minutes on two CPU cores.")
flags.DEFINE_list("only", None, f"Sections to run, of: {', '.join(SECTIONS)}. Results of "
                  "sections not rerun are kept from the existing results.json.")
flags.DEFINE_bool("reliability", False, "Also run the reliability checks (kill -9 and "
                  "resume, serving and block-string fuzzing, a messy image folder).")
flags.DEFINE_bool("gpu", False, "Run only the accelerator part (needs a visible GPU); "
                  "results go to benchmarks/gpu/.")
flags.DEFINE_string("out_dir", None, "Output folder (default: benchmarks/cpu, or "
                    "benchmarks/gpu with --gpu, in the repository).")
flags.DEFINE_integer("repeats", None, "Timed rounds per comparison (default: 5).")
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


def chosen_sections() -> list[str]:
    """The sections the flags ask for, in run order; ValueError on a bad request."""
    only = [s.strip() for s in FLAGS.only or [] if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise ValueError(f"--only: unknown section(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SECTIONS)}")
    if FLAGS.only is not None and not only:
        raise ValueError(f"--only is empty; choose from {', '.join(SECTIONS)}")
    if FLAGS.gpu:
        if only and set(only) != {"gpu"}:
            raise ValueError("--gpu runs the accelerator part on its own; drop --only "
                             f"(received --only={','.join(only)})")
        return ["gpu"]
    if "gpu" in only:
        raise ValueError("the gpu section runs with --gpu (results go to benchmarks/gpu)")
    wanted = set(only or CPU_SECTIONS)
    if FLAGS.reliability:
        wanted.add("reliability")
    return [s for s in SECTIONS if s in wanted]


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
    try:
        sections = chosen_sections()
        config = quick_config() if FLAGS.quick else full_config()
        assignments = list(FLAGS.set)
        if FLAGS.repeats is not None:
            assignments.append(f"repeats={FLAGS.repeats}")
        config = apply_overrides(config, assignments)
    except ValueError as e:
        return fail(str(e))
    device = "gpu" if FLAGS.gpu else "cpu"
    out_dir = Path(FLAGS.out_dir) if FLAGS.out_dir else ROOT / "benchmarks" / device
    if FLAGS.gpu:
        from keras_effnet.bench.sections import gpu_name
        with _quiet_native_stderr():  # TensorFlow's C++ start-up lines
            name = gpu_name()
        if name is None:
            return fail("--gpu needs a visible GPU; TensorFlow sees none "
                        "(tf.config.list_physical_devices('GPU') is empty).")
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    from keras_effnet.bench.runner import run
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run(config, sections, out_dir, command.strip(), device=device,
        merge=FLAGS.only is not None)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
