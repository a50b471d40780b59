"""``keras-effnet-benchmark`` in a checkout: the command is keras_effnet.commands.benchmark
(``--help`` prints its documentation), writing to this checkout's benchmarks/."""

from pathlib import Path

from keras_effnet.commands.benchmark import run

if __name__ == "__main__":
    run(prog="python scripts/benchmark.py",
        results_root=Path(__file__).resolve().parent.parent / "benchmarks")
