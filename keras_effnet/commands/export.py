"""Exports a trained model for TF-Serving and TFLite, and measures every artifact.

``keras-effnet-export``, ``python -m keras_effnet.commands.export`` and, in a checkout,
``python scripts/export.py`` are the same command.

    # a training run -> TF-Serving version + pruned int8 TFLite, accuracy of each
    keras-effnet-export --model_dir=runs/digits --formats=saved_model,tflite \\
        --quantize=int8 --prune=0.5

    # an untrained build (smoke test of the serving stack)
    keras-effnet-export --model=efficientnet-lite0 --num_classes=10 --formats=saved_model

    # every TFLite flavour, no pruning
    keras-effnet-export --model_dir=runs/digits --formats=tflite \\
        --quantize=none,float16,dynamic,int8

Prints where the artifacts are, their sizes and their top-1 on the held-out split of the
run's dataset. A mistake in the request (flags, run directory, existing version) prints
one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

from keras_effnet import cli, commands
from keras_effnet.export.config import ExportConfig  # no TensorFlow: checks come first

EXPORT = cli.FlagSet(ExportConfig)
EXPORT.define()


def main() -> int:
    config = ExportConfig(**EXPORT.values())
    from keras_effnet.export import job
    try:
        job.run(config)  # checks the request before importing TensorFlow
    except (FileExistsError, ImportError) as e:  # a version written meanwhile, an extra
        return cli.fail(str(e))
    return 0


def run() -> None:
    """The console script ``keras-effnet-export``."""
    commands.run(main, __doc__, flagsets=(EXPORT,))


if __name__ == "__main__":
    run()
