"""Trains an EfficientNet with progressive learning, under any tf.distribute strategy.

    # the main job: a small V2 on the embedded digits, progressive 40 -> 64 px, ~minutes
    python scripts/train.py

    # your images (one sub-folder per class), EfficientNetV2-S recipe, all local GPUs
    python scripts/train.py --model=efficientnetv2-s --dataset=folder --data_dir=photos \\
        --epochs=100 --batch_size=256 --model_dir=runs/photos

    # two machines: the same command on each, TF_CONFIG describing the cluster
    python scripts/train.py --strategy=multi_worker --model_dir=gs://bucket/run ...

    # a TPU
    python scripts/train.py --strategy=tpu --tpu=my-tpu --dataset=tfrecord ...

Running the same command again resumes from the last checkpoint in --model_dir (after a
crash, ``kill -9`` or Ctrl-C). Outputs in --model_dir: checkpoints/, logs/ (TensorBoard),
config.json, metrics.json, training_curves.png, final_model.keras, labels.txt.

A mistake in the request (flags, model name, data directory, empty dataset) prints one
``error: ...`` line and exits with status 2; a diverged run (NaN loss) exits with 1;
Ctrl-C with 130 after saving a checkpoint.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import app, flags  # noqa: E402

from keras_effnet.cli import fail, parse_flags  # noqa: E402
from keras_effnet.train.trainer import TrainConfig  # noqa: E402

FLAGS = flags.FLAGS
_DEFAULTS = TrainConfig()

flags.DEFINE_string("model", _DEFAULTS.model, "Variant name (see keras_effnet.list_models()) "
                    "or comma-separated block strings. The default model is shrunk "
                    "(width 0.5, depth 0.5) on --dataset=digits unless --width/--depth say.")
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "digits (embedded, no download), folder, "
                    "tfrecord or tfds:<name>.")
flags.DEFINE_string("data_dir", None, "Images (folder: one sub-folder per class) or TFRecord "
                    "shards; the TFDS data dir for tfds:<name>.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs and results (default: "
                    "runs/<model>_<dataset>). The same model_dir resumes the run.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs over all stages.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size (all replicas).")
flags.DEFINE_integer("stages", _DEFAULTS.stages, "Progressive-learning stages (1 = off).")
flags.DEFINE_enum("progressive_mode", _DEFAULTS.progressive_mode, ["automl", "paper"],
                  "automl: the official code's schedule; paper: Table 6, dropout included.")
flags.DEFINE_integer("image_size", None, "Last stage's image size (default: the model's "
                     "train size; 64 for digits).")
flags.DEFINE_integer("min_image_size", None, "First image size of the schedule (default: "
                     "automl's 128; 32 for digits).")
flags.DEFINE_integer("eval_image_size", None, "Evaluation size (default: the last stage's).")
flags.DEFINE_float("width", None, "Width multiplier override.")
flags.DEFINE_float("depth", None, "Depth multiplier override.")
flags.DEFINE_float("dropout", None, "Head dropout of the recipe (default: the model's).")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy,
                  ["auto", "default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; auto picks tpu / multi_worker / mirrored / default.")
flags.DEFINE_string("tpu", None, "TPU name or address (implies --strategy=tpu with auto).")
flags.DEFINE_enum("mixed_precision", _DEFAULTS.mixed_precision,
                  ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "auto: bfloat16 on TPU, float16 on GPU, float32 on CPU.")
flags.DEFINE_integer("max_train_steps", None, "Stop after this many steps (smoke runs).")
flags.DEFINE_integer("checkpoint_every_steps", _DEFAULTS.checkpoint_every_steps,
                     "Also checkpoint every N steps (0: at epoch ends only).")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of initialisation, data order and "
                     "augmentation.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (default 0.016 * batch / 256).")
flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule, ["exponential", "cosine"],
                  "Decay after the linear warm-up.")
flags.DEFINE_float("warmup_epochs", None, "Linear warm-up length (default: the recipe's 5 "
                   "epochs, or a tenth of a shorter run, at least 1).")
flags.DEFINE_float("decay_epochs", _DEFAULTS.decay_epochs, "Exponential decay: x0.97 every "
                   "this many epochs.")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "L2 on kernels (not BN, biases).")
flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing, "Label smoothing.")
flags.DEFINE_float("ema_decay", _DEFAULTS.ema_decay, "Weight EMA decay (0: off).")
flags.DEFINE_bool("sync_batchnorm", _DEFAULTS.sync_batchnorm,
                  "BatchNorm statistics over the global batch (all replicas).")
flags.DEFINE_integer("eval_every_epochs", _DEFAULTS.eval_every_epochs,
                     "Evaluate every N epochs (0: only at the end).")
flags.DEFINE_bool("export", True, "End by exporting the trained model: a TF-Serving "
                  "SavedModel version under --saved_models and a pruned int8 TFLite under "
                  "--tflite_dir, each measured on the held-out split (--noexport: skip).")
flags.DEFINE_float("export_prune", 0.5, "Sparsity of the exported TFLite (0: not pruned).")
flags.DEFINE_list("export_quantize", ["int8"], "TFLite flavours written by the export "
                  "(none, float16, dynamic, int8).")
flags.DEFINE_string("saved_models", "saved_models", "TF-Serving base directory for --export.")
flags.DEFINE_string("tflite_dir", "tflite", "Where --export writes TFLite files.")
flags.DEFINE_integer("verbose", _DEFAULTS.verbose, "0: quiet, 1: progress and summaries.")

_CONFIG_FLAGS = ("model", "dataset", "data_dir", "model_dir", "epochs", "batch_size",
                 "stages", "progressive_mode", "image_size", "min_image_size",
                 "eval_image_size", "width", "depth", "dropout", "strategy", "tpu",
                 "mixed_precision", "max_train_steps", "checkpoint_every_steps", "seed",
                 "learning_rate", "lr_schedule", "warmup_epochs", "decay_epochs", "weight_decay",
                 "label_smoothing", "ema_decay", "sync_batchnorm", "eval_every_epochs",
                 "verbose")


def config_from_flags() -> TrainConfig:
    """The TrainConfig the flags describe."""
    return TrainConfig(**{name: getattr(FLAGS, name) for name in _CONFIG_FLAGS})


def check_request(config: TrainConfig) -> None:
    """Cheap checks that need no TensorFlow, so a mistake fails in a second."""
    from keras_effnet.builder import resolve_variant

    config.validate()
    resolve_variant(config.model)  # unknown names raise ValueError with suggestions
    dataset = config.dataset
    if not (dataset in ("digits", "folder", "tfrecord") or
            (dataset.startswith("tfds:") and len(dataset) > 5)):
        raise ValueError(f"unknown --dataset={dataset!r}; use digits, folder, tfrecord or "
                         "tfds:<name>.")
    if dataset in ("folder", "tfrecord"):
        what = ("a folder with one sub-folder of images per class" if dataset == "folder"
                else "the directory of TFRecord shards")
        if not config.data_dir:
            raise ValueError(f"--dataset={dataset} needs --data_dir=<{what}>.")
        if "://" not in config.data_dir and not os.path.isdir(config.data_dir):
            raise ValueError(f"--data_dir={config.data_dir} does not exist or is not a "
                             f"directory; pass {what}.")


def export_config(model_dir: str):
    """The export the --export flags describe, of the run in ``model_dir``."""
    from keras_effnet.export.job import ExportConfig, parse_list
    return ExportConfig(model_dir=model_dir, prune=FLAGS.export_prune,
                        quantize=parse_list(FLAGS.export_quantize),
                        saved_models=FLAGS.saved_models, tflite_dir=FLAGS.tflite_dir)


_EXPORT_NEEDS = {"tensorflow_serving": "the SavedModel's warm-up records",
                 "ai_edge_litert": "measuring the TFLite file",
                 "tensorflow_model_optimization": "pruning (or pass --export_prune=0)"}


def check_export_request() -> None:
    """Export flags and installed extras, checked before training rather than after."""
    import importlib.util

    from keras_effnet.export.job import ExportError
    try:
        export_config("").validate_options()
    except ExportError as e:  # name the flags of this script, not scripts/export.py's
        message = str(e).replace("--quantize", "--export_quantize")
        raise ValueError(message.replace("--prune ", "--export_prune ")) from None
    needed = dict(_EXPORT_NEEDS)
    if not FLAGS.export_prune:
        needed.pop("tensorflow_model_optimization")
    missing = [f"{module} ({why})" for module, why in needed.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ValueError(f"--export needs {', '.join(missing)}: pip install "
                         "'keras_effnet[export]', or pass --noexport.")


def _export(model_dir: str) -> int:
    try:
        from keras_effnet.export.job import ExportError
        from keras_effnet.export.job import run as run_export
        from keras_effnet.export.saved_model import VersionExistsError
    except ImportError as e:
        return fail(f"--export: keras_effnet.export is not available ({e}); the trained "
                    f"model is in {model_dir}/final_model.keras.", 1)
    print(f"exporting {model_dir} (--noexport skips this) ...")
    try:
        run_export(export_config(model_dir))
    except ImportError as e:
        return fail(f"--export: {e} (or pass --export_prune=0); the trained model is in "
                    f"{model_dir}/final_model.keras.", 1)
    except (ExportError, VersionExistsError, FileExistsError) as e:
        return fail(f"--export: {e}", 1)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter (saver timings)
    config = config_from_flags()
    try:
        check_request(config)
        if FLAGS.export:
            check_export_request()
    except ValueError as e:
        return fail(str(e))
    from keras_effnet.train.trainer import NonFiniteLossError, train

    try:
        result = train(config)
    except NonFiniteLossError as e:
        return fail(str(e), 1)
    except ValueError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("interrupted: checkpoint saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
    if result.top1 is not None:
        print(f"top-1 {result.top1:.4f} on {result.eval_count} held-out images "
              f"({result.model_name}, {result.wall_time_s:.0f}s)")
    if FLAGS.export:
        return _export(result.model_dir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
