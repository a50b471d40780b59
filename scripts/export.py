"""Exports a trained model for TF-Serving and TFLite, and measures every artifact.

    # a training run -> TF-Serving version + pruned int8 TFLite, accuracy of each
    python scripts/export.py --model_dir=runs/digits --formats=saved_model,tflite \\
        --quantize=int8 --prune=0.5

    # an untrained build (smoke test of the serving stack)
    python scripts/export.py --model=efficientnet-lite0 --num_classes=10 --formats=saved_model

    # every TFLite flavour, no pruning
    python scripts/export.py --model_dir=runs/digits --formats=tflite \\
        --quantize=none,float16,dynamic,int8

Prints where the artifacts are, their sizes and their top-1 on the held-out split of the
run's dataset. A mistake in the request (flags, run directory, existing version) prints
one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

from absl import app, flags

from keras_effnet.cli import fail, parse_flags
from keras_effnet.export.job import ExportConfig, ExportError, parse_list
from keras_effnet.export.prune import LEARNING_RATE_DECAYS, PruneConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Training run directory (final_model.keras, "
                    "labels.txt, config.json).")
flags.DEFINE_string("model", None, "Instead of --model_dir: a variant name (or block "
                    "strings) to export untrained.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width for --model.")
flags.DEFINE_list("formats", ["saved_model", "tflite"], "saved_model and/or tflite.")
flags.DEFINE_list("quantize", ["none"], "TFLite flavours: none, float16, dynamic, int8 "
                  "(a list writes one file each).")
flags.DEFINE_float("prune", 0.0, "Target sparsity (e.g. 0.5): prune + fine-tune, then write "
                   "sparse TFLite files. 0 = no pruning.")
flags.DEFINE_integer("prune_epochs", PruneConfig.epochs, "Fine-tuning epochs while pruning.")
flags.DEFINE_integer("prune_steps", None, "Fine-tuning steps per epoch (default: one pass "
                     "over the training split).")
flags.DEFINE_float("prune_learning_rate", PruneConfig.learning_rate,
                   "Fine-tuning learning rate (Adam).")
flags.DEFINE_enum("prune_learning_rate_decay", PruneConfig.learning_rate_decay,
                  list(LEARNING_RATE_DECAYS), "cosine: decay to 0 once the target "
                  "sparsity is reached; constant: keep --prune_learning_rate.")
flags.DEFINE_float("prune_end_fraction", PruneConfig.prune_end_fraction,
                   "The sparsity schedule reaches --prune after this fraction of the "
                   "fine-tuning; the rest fine-tunes at the target.")
flags.DEFINE_enum("prune_policy", "magnitude", ["magnitude", "xnnpack"],
                  "xnnpack: 1x1 convolutions only, model in XNNPACK sparse-inference form.")
flags.DEFINE_bool("serve_pruned", False, "Also serve the pruned weights (default: the "
                  "TF-Serving version is the dense trained model).")
flags.DEFINE_string("saved_models", "saved_models", "TF-Serving base directory.")
flags.DEFINE_string("tflite_dir", "tflite", "Where TFLite files go (<dir>/<name>/<version>/).")
flags.DEFINE_string("model_name", None, "Served model name (default: the variant name).")
flags.DEFINE_integer("version", None, "Version to write (default: the next free one).")
flags.DEFINE_string("dataset", None, "Held-out data (default: the run's dataset).")
flags.DEFINE_string("data_dir", None, "Its directory (default: the run's).")
flags.DEFINE_integer("image_size", None, "Evaluation size (default: the run's).")
flags.DEFINE_integer("max_eval_images", None, "Evaluate on at most this many held-out "
                     "images per artifact (default: all).")
flags.DEFINE_integer("representative_images", 100, "int8 calibration images (>= 100).")
flags.DEFINE_string("serving_base_path", "/models", "Where TF-Serving sees --saved_models "
                    "(models.config base paths): /models in the official Docker image.")
flags.DEFINE_integer("max_pixels", 50_000_000, "Serving refuses larger images.")
flags.DEFINE_integer("top_k", 5, "Classes returned per image by serving_default.")


def config_from_flags() -> ExportConfig:
    return ExportConfig(
        model_dir=FLAGS.model_dir, model=FLAGS.model, num_classes=FLAGS.num_classes,
        formats=parse_list(FLAGS.formats), quantize=parse_list(FLAGS.quantize),
        prune=FLAGS.prune, prune_epochs=FLAGS.prune_epochs, prune_steps=FLAGS.prune_steps,
        prune_learning_rate=FLAGS.prune_learning_rate,
        prune_learning_rate_decay=FLAGS.prune_learning_rate_decay,
        prune_end_fraction=FLAGS.prune_end_fraction, prune_policy=FLAGS.prune_policy,
        serve_pruned=FLAGS.serve_pruned, saved_models=FLAGS.saved_models,
        tflite_dir=FLAGS.tflite_dir, model_name=FLAGS.model_name, version=FLAGS.version,
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
        max_eval_images=FLAGS.max_eval_images,
        representative_images=FLAGS.representative_images,
        serving_base_path=FLAGS.serving_base_path, max_pixels=FLAGS.max_pixels,
        top_k=FLAGS.top_k)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter (saver timings)
    config = config_from_flags()
    try:
        config.validate()
    except ExportError as e:
        return fail(str(e))
    from keras_effnet.export import job
    from keras_effnet.export.saved_model import VersionExistsError
    try:
        job.run(config)
    except (ExportError, VersionExistsError, FileExistsError, ImportError) as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
