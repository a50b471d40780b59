"""What a training run is asked to do: :class:`TrainConfig`, its defaults, its checks,
and :class:`TrainResult`, what a finished run returns.

Pure Python (no TensorFlow): ``scripts/train.py`` builds and checks a config in a second.
Every field declared with ``cli.option(help=...)`` is a flag of ``scripts/train.py``;
validation raises :class:`~keras_effnet.errors.ConfigError` naming the field, which the
script turns into its flag.

Defaults that depend on the run (``None`` fields) are resolved here too, by the
``resolved_*`` methods the trainer calls: the model's recipe, the dataset's small-image
defaults, and the recipe's schedule scaled to the run.

The recipe (docs/reference.md §5; google/automl ``main_tf2.py``):

* RMSProp (rho 0.9, momentum 0.9, epsilon 1e-3); peak LR ``0.016 * global_batch / 256``;
  linear warm-up then exponential decay x0.97 per 2.4 epochs (staircase), or cosine.
  The decay period is the recipe's 2.4 epochs whatever the run length. The warm-up is
  the recipe's 5 epochs, shortened for short runs to a tenth of the run (at least one
  epoch): ``min(5, max(1, epochs / 10))``, so the 12-epoch main job warms up for 1.2
  epochs instead of spending 40 % of itself there. (Compressing the whole schedule by
  ``epochs / 350`` was tried: a 12-epoch from-scratch run then spends its second half
  below 10 % of the peak LR and under-fits, 77 % on digits.)
* Weight decay 1e-5 as an L2 term added to the loss, as automl:
  ``1e-5 * sum(||w||^2 / 2)`` (``tf.nn.l2_loss``) over kernels only, i.e. not over
  BatchNorm's gamma/beta nor biases (all 1-D); the term is divided by the number of
  replicas because replica gradients are summed.
* Label smoothing 0.1; EMA of the weights with decay 0.9999 and the ``num_updates``
  warm-up ``min(decay, (1 + step) / (10 + step))`` (see ``ema.py``): for a short run this
  averages over roughly its last 10 % of steps, for ImageNet-length runs it is the
  recipe's 0.9999. Evaluation and the saved model use the EMA weights.
* BatchNorm moving statistics are averaged across replicas after every step (what
  Keras 2 did with ON_READ/MEAN variables; Keras 3 leaves each replica its own copy), so
  all replicas and workers hold identical weights. ``sync_batchnorm`` also normalises
  with cross-replica batch statistics.
* The classifier kernel starts at zero (``zero_init_head``, as BiT initialises new
  heads). The official ``uniform(+-1/sqrt(classes))`` is +-0.03 for ImageNet's 1000
  classes, nearly zero, but +-0.32 for 10 classes: initial logits with a std of ~3, a
  loss of ~4 and hundreds of steps spent shrinking the head, which a short run cannot
  afford. Set ``zero_init_head=False`` for the official initialiser.
* Mixed precision: ``auto`` = bfloat16 on TPU, float16 (with ``LossScaleOptimizer``) on
  GPU, float32 on CPU.

Fine-tuning (``init_weights``, ``freeze``, ``unfreeze_at_epoch``; see ``finetune.py``):
the keras fine-tuning guide's recipe. Start from trained weights, train the new classifier
alone (``freeze="backbone"``), then from ``unfreeze_at_epoch`` the whole network at
``unfreeze_lr_factor`` times the learning rate, BatchNorm kept in inference mode with its
statistics fixed throughout (``freeze="bn"`` from the start skips the first phase).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from keras_effnet import cli
from keras_effnet.data.detect import check_data_dir, detect_source
from keras_effnet.errors import ConfigError, check_int
from keras_effnet.train import progressive as progressive_lib
from keras_effnet.train import schedules
from keras_effnet.train import strategy as strategy_lib
from keras_effnet.train import finetune as finetune_lib
from keras_effnet.train.finetune import FREEZE_MODES

__all__ = ["TrainConfig", "TrainResult", "DEFAULT_MODEL", "DATASETS", "DEFAULT_DATASET",
           "EMBEDDED_DATASETS", "LR_SCHEDULES",
           "SMALL_DATASET_DEFAULTS", "RECIPE_WARMUP_EPOCHS"]

DEFAULT_MODEL = "efficientnetv2-b0"
DATASETS = ("mnist5k", "digits", "folder", "tfrecord", "tfds:<name>")
EMBEDDED_DATASETS = ("mnist5k", "digits")  # shipped inside a wheel: no data_dir, no download
DEFAULT_DATASET = "mnist5k"
LR_SCHEDULES = ("exponential", "cosine")
RECIPE_WARMUP_EPOCHS = 5.0

# The embedded sets are 28x28 (mnist5k) and 8x8 (digits) scans: training them at a V2's
# 192-384 px would only burn time. These defaults apply when the corresponding option is
# left unset (None); the width/depth ones only for the default model. An evaluation
# (BatchNorm recalibration on 1,024 scans, then 1,000 held-out ones) costs about a third of
# an epoch of 4,000 here, so the main job evaluates every 2 epochs (of 12: 3 per stage).
# 128 px last, 80 px first: a step at 80 px costs about 0.55 of one at 128 px on a 2-core
# CPU (0.43 of the MACs: the strided stages round 2.5 up to 3; README, "The main job,
# measured", and the benchmark's stage_cost section), so progressive learning saves time
# where pixels cost time, and at 128 px it also ended more accurate than at 64 px. The
# paper's schedule (Algorithm 1: every quantity linear from first to last, 80, 96, 112,
# 128 px) rather than automl's constant dropout: the first stages learn faster with
# weaker dropout and stochastic depth (0.1 and half the drop-path rates at 80 px), the
# paper's adaptive regularisation, and the rates change without a new trace.
_SMALL_SCANS = {"image_size": 128, "min_image_size": 80, "progressive_mode": "paper",
                "eval_every_epochs": 2, "model_scaling": {"width": 0.5, "depth": 0.5}}
SMALL_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": _SMALL_SCANS,
    "digits": _SMALL_SCANS,
}

_DATA_DIR_NEEDS = {"folder": "a folder with one sub-folder of images per class",
                   "tfrecord": "the directory of TFRecord shards"}


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; ``scripts/train.py`` fills it from flags.

    ``None`` means "resolved at run time" (the ``resolved_*`` methods): the model's
    recipe, the dataset's small-image defaults, or the recipe scaled to the run.
    """

    model: str = cli.option(
        DEFAULT_MODEL, help="Variant name (see keras_effnet.list_models()) or "
        "comma-separated block strings. The default model is shrunk (width 0.5, depth "
        "0.5) on the embedded datasets unless --width/--depth say.")
    dataset: str | None = cli.option(
        None, help="mnist5k or digits (embedded, no download), folder, tfrecord or "
        "tfds:<name> (default: what --data_dir holds, or mnist5k without --data_dir).")
    data_dir: str | None = cli.option(
        None, help="Images (folder: one sub-folder per class) or TFRecord shards; the TFDS "
        "data dir for tfds:<name>.")
    model_dir: str | None = cli.option(
        None, help="Checkpoints, logs and results (default: runs/<model>_<dataset>). The "
        "same model_dir resumes the run.")
    epochs: int = cli.option(12, help="Training epochs over all stages.")
    batch_size: int = cli.option(64, help="Global batch size (all replicas).")
    stages: int = cli.option(4, help="Progressive-learning stages (1 = off).")
    progressive_mode: str | None = cli.option(
        None, choices=progressive_lib.MODES,
        help="automl: the official code's schedule; paper: Table 6, dropout (and stochastic "
        "depth) ramped too (default: automl, or paper on the embedded scans).")
    image_size: int | None = cli.option(
        None, help="Last stage's image size (default: the model's train size; 128 on "
        "the embedded datasets).")
    min_image_size: int | None = cli.option(
        None, help="First image size of the schedule (default: automl's 128, or half "
        "the last size when that is 128 or less, never under twice the network's "
        "reduction: 64 for an EfficientNet; 80 on the embedded datasets).")
    eval_image_size: int | None = cli.option(
        None, help="Evaluation size (default: the last stage's).")
    width: float | None = cli.option(None, help="Width multiplier override.")
    depth: float | None = cli.option(None, help="Depth multiplier override.")
    dropout: float | None = cli.option(
        None, help="Head dropout of the recipe (default: the model's).")
    strategy: str = cli.option(
        "auto", choices=strategy_lib.STRATEGIES,
        help="tf.distribute strategy; auto picks tpu / multi_worker / mirrored / default.")
    tpu: str | None = cli.option(
        None, help="TPU name or address (implies --strategy=tpu with auto).")
    mixed_precision: str = cli.option(
        "auto", choices=strategy_lib.PRECISIONS,
        help="auto: bfloat16 on TPU, float16 on GPU, float32 on CPU.")
    seed: int = cli.option(0, help="Seed of initialisation, data order and augmentation.")
    max_train_steps: int | None = cli.option(
        None, help="Stop after this many steps (smoke runs).")
    checkpoint_every_steps: int = cli.option(
        0, help="Also checkpoint every N steps (0: at epoch ends only).")
    keep_checkpoints: int = 3  # not a flag
    # Recipe (docs/reference.md §5).
    learning_rate: float | None = cli.option(
        None, help="Peak learning rate (default 0.016 * batch / 256).")
    lr_schedule: str = cli.option("exponential", choices=LR_SCHEDULES,
                                  help="Decay after the linear warm-up.")
    warmup_epochs: float | None = cli.option(
        None, help="Linear warm-up length (default: the recipe's 5 epochs, or a tenth of "
        "a shorter run, at least 1).")
    decay_epochs: float = cli.option(
        2.4, help="Exponential decay: x0.97 every this many epochs.")
    decay_factor: float = 0.97  # not a flag
    weight_decay: float = cli.option(1e-5, help="L2 on kernels (not BN, biases).")
    label_smoothing: float = cli.option(0.1, help="Label smoothing.")
    ema_decay: float = cli.option(0.9999, help="Weight EMA decay (0: off).")
    recalibrate_bn: bool = cli.option(
        True, help="Recompute BatchNorm statistics for the evaluated (EMA) weights at the "
        "evaluation size before each evaluation and the final save (precise BN).")
    sync_batchnorm: bool = cli.option(
        False, help="BatchNorm statistics over the global batch (all replicas).")
    # Not a flag: see the module docstring for why the head starts at zero.
    zero_init_head: bool = True
    eval_every_epochs: int | None = cli.option(
        None, help="Evaluate every N epochs (0: only at the end; default 1, 2 on the "
        "embedded sets, where an evaluation costs a third of an epoch).")
    # Fine-tuning (finetune.py).
    init_weights: str | None = cli.option(
        None, help="Start from these weights (fresh runs; a resumed run continues its "
        "checkpoint): a pretrained tag of --model (imagenet, imagenet21k-ft1k, ...: "
        "keras_effnet.list_weights()), downloaded once and cached; a keras_effnet or "
        "keras.applications .weights.h5 / .keras / .h5 file of the same architecture; an "
        "official checkpoint (.tar.gz, directory or prefix); or a finished run's "
        "model_dir. A new class count (or another run's classes) gets a new classifier.")
    freeze: str = cli.option(
        "none", choices=FREEZE_MODES,
        help="backbone: train only the classifier (BatchNorm frozen); bn: train everything "
        "but BatchNorm, which stays in inference mode with fixed statistics.")
    unfreeze_at_epoch: int | None = cli.option(
        None, help="With --freeze=backbone: from this epoch (0-based) on, train the whole "
        "network except BatchNorm, at --unfreeze_lr_factor times the learning rate.")
    unfreeze_lr_factor: float = cli.option(
        0.1, help="Learning-rate multiplier from --unfreeze_at_epoch on.")
    verbose: int = cli.option(1, help="0: quiet, 1: progress and summaries.")

    def __post_init__(self):
        # A data_dir is never ignored: without a dataset, its contents name the source.
        if self.dataset is None:
            self.dataset = (DEFAULT_DATASET if self.data_dir is None
                            else detect_source(self.data_dir))
        elif self.dataset in EMBEDDED_DATASETS and self.data_dir is not None:
            raise ConfigError(f"{self.dataset} is embedded and reads no data_dir: pass "
                              "dataset=folder or tfrecord for your data, or leave data_dir "
                              f"unset. Received: data_dir={self.data_dir!r}", "data_dir")

    # --- checks -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the first bad field."""
        for name in ("epochs", "batch_size", "stages", "keep_checkpoints"):
            self._check_int(name, 1)
        self._check_int("checkpoint_every_steps", 0)
        self._check_int("eval_every_epochs", 0, allow_none=True)
        # Sizes below 2 px leave nothing to crop or resize (the recipe refuses them).
        for name, minimum in (("image_size", 2), ("min_image_size", 2),
                              ("eval_image_size", 2), ("max_train_steps", 1)):
            self._check_int(name, minimum, allow_none=True)
        if self.stages > self.epochs:
            raise ConfigError(f"stages ({self.stages}) must be <= epochs ({self.epochs}): "
                              "every stage trains at least one epoch.", "stages")
        for name, choices in (("progressive_mode", progressive_lib.MODES),
                              ("strategy", strategy_lib.STRATEGIES),
                              ("mixed_precision", strategy_lib.PRECISIONS),
                              ("lr_schedule", LR_SCHEDULES)):
            value = getattr(self, name)
            if value not in choices and not (name == "progressive_mode" and value is None):
                raise ConfigError(f"{name} must be one of {choices}. "
                                  f"Received: {name}={value!r}", name)
        for name in ("width", "depth", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0. Received: {name}={value!r}", name)
        for name in ("ema_decay", "label_smoothing", "dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0.0, 1.0). "
                                  f"Received: {name}={value!r}", name)
        if not self.weight_decay >= 0:
            raise ConfigError("weight_decay must be >= 0. "
                              f"Received: weight_decay={self.weight_decay!r}", "weight_decay")
        self._validate_fine_tuning()
        if self.tpu and self.strategy not in ("auto", "tpu"):
            raise ConfigError(f"tpu={self.tpu!r} needs strategy 'tpu' or 'auto'. "
                              f"Received: strategy={self.strategy!r}", "tpu")

    def _validate_fine_tuning(self) -> None:
        if self.freeze not in FREEZE_MODES:
            raise ConfigError(f"freeze must be one of {FREEZE_MODES}. "
                              f"Received: freeze={self.freeze!r}", "freeze")
        if not 0 < self.unfreeze_lr_factor < float("inf"):  # inf: NaN after an epoch
            raise ConfigError("unfreeze_lr_factor must be a finite number > 0. "
                              f"Received: unfreeze_lr_factor={self.unfreeze_lr_factor!r}",
                              "unfreeze_lr_factor")
        if self.unfreeze_at_epoch is None:
            return
        self._check_int("unfreeze_at_epoch", 1)
        if self.freeze != "backbone":
            raise ConfigError("unfreeze_at_epoch unfreezes a frozen backbone: it needs "
                              "freeze='backbone' (BatchNorm stays frozen after it, which is "
                              "freeze='bn'). Received: freeze="
                              f"{self.freeze!r}", "unfreeze_at_epoch")
        if self.unfreeze_at_epoch >= self.epochs:
            raise ConfigError(f"unfreeze_at_epoch must be < epochs ({self.epochs}): the "
                              "unfrozen phase needs an epoch. Received: "
                              f"unfreeze_at_epoch={self.unfreeze_at_epoch}",
                              "unfreeze_at_epoch")

    def _check_int(self, name: str, minimum: int, allow_none: bool = False) -> None:
        check_int(name, getattr(self, name), minimum, allow_none)

    def check_request(self) -> None:
        """:meth:`validate`, then the model name, the dataset name and its data
        directory: the mistakes that need no TensorFlow to find, found in a second."""
        from keras_effnet.builder import resolve_variant

        self.validate()
        try:
            resolve_variant(self.model)
        except ValueError as e:  # unknown names come with suggestions
            raise ConfigError(str(e), "model") from None
        dataset = self.dataset
        if not (dataset in DATASETS[:-1] or (dataset.startswith("tfds:") and len(dataset) > 5)):
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}. "
                              f"Received: dataset={dataset!r}", "dataset")
        what = _DATA_DIR_NEEDS.get(dataset)
        if what and not self.data_dir:
            raise ConfigError(f"dataset={dataset!r} needs data_dir=<{what}>.", "data_dir")
        if what:
            check_data_dir(self.data_dir)
        from keras_effnet.profile import check_buildable
        from keras_effnet.run_dir import RunDir
        variant, _ = self.resolved_model()
        check_buildable(variant, include_top=False)  # absurd sizes: refused in milliseconds
        run_dir = RunDir(self.resolved_model_dir(variant.name))
        run_dir.check_writable()
        if self.init_weights and not run_dir.checkpoints_dir.is_dir():
            # A fresh run reads them (a resumed one continues its checkpoint): the file's
            # layout now, its fit to the model when the model is built.
            from keras_effnet.weights import check_weights
            try:
                check_weights(self.init_weights, finetune_lib.weights_variant(self))
            except ValueError as e:
                raise ConfigError(str(e), "init_weights") from None

    def check_source(self, source: Any, replicas: int) -> list[str]:
        """The loaded dataset against this run: at least 2 classes, one global batch of
        training images, a batch that divides among ``replicas``, class names that fit
        labels.txt (ValueError / ConfigError). Returns warnings to log (skipped files)."""
        from keras_effnet.run_dir import has_line_break

        batch, name = self.batch_size, self.dataset
        if source.num_classes < 2:
            raise ValueError(f"Dataset {name!r} has {source.num_classes} class(es); "
                             "training needs at least 2 (one sub-folder per class).")
        if source.num_train < batch:
            raise ConfigError(f"Dataset {name!r} has {source.num_train} training images, "
                              f"fewer than one global batch (batch_size={batch}); add "
                              "images or lower batch_size.", "batch_size")
        if batch % replicas:
            raise ConfigError(f"batch_size {batch} must be divisible by the number of "
                              f"replicas ({replicas}).", "batch_size")
        bad = [n for n in source.class_names if has_line_break(n)]
        if bad:
            raise ConfigError("class names must not hold line breaks (labels.txt has one "
                              f"name per line); rename them. Received: {bad[:3]}", "data_dir")
        skipped = getattr(source, "skipped", None) or []
        return [f"Warning: skipped {len(skipped)} unreadable file(s) in {self.data_dir}, "
                f"e.g. {skipped[0][0]} ({skipped[0][1]})."] if skipped else []

    def to_dict(self) -> dict[str, Any]:
        """Every field, as config.json's ``train_config``."""
        return dataclasses.asdict(self)

    @property
    def bn_frozen(self) -> bool:
        """Whether BatchNorm stays in inference mode, statistics fixed, all run long."""
        return self.freeze != "none"

    def fine_tune_record(self) -> dict[str, Any] | None:
        """config.json's ``fine_tune`` (None for a run from scratch, unfrozen): the start
        and freeze schedule a resumed run must share."""
        if self.init_weights is None and self.freeze == "none":
            return None
        return {"init_weights": finetune_lib.init_weights_key(self.init_weights),
                "freeze": self.freeze, "unfreeze_at_epoch": self.unfreeze_at_epoch,
                "unfreeze_lr_factor": self.unfreeze_lr_factor
                if self.unfreeze_at_epoch is not None else None}

    # --- defaults resolved at run time -------------------------------------------------

    def dataset_defaults(self) -> dict[str, Any]:
        """The dataset's small-image defaults ({} for full-size datasets)."""
        return SMALL_DATASET_DEFAULTS.get(self.dataset, {})

    def resolved_model(self) -> tuple[Any, progressive_lib.Recipe]:
        """(the :class:`~keras_effnet.variants.Variant`, its progressive recipe), with
        the overrides and the dataset's defaults applied."""
        from keras_effnet.builder import resolve_variant

        defaults = self.dataset_defaults()
        scaling = dict(width=self.width, depth=self.depth)
        if self.model == DEFAULT_MODEL and finetune_lib.init_weights_tag(self) is None:
            # The small embedded-set scaling, unless pretrained weights need the variant.
            for key, value in defaults.get("model_scaling", {}).items():
                if scaling[key] is None:
                    scaling[key] = value
        variant = resolve_variant(self.model, dropout=self.dropout, **scaling)
        tag = finetune_lib.init_weights_tag(self)
        if tag is not None:  # the pretrained weights' input normalisation (AdvProp's differs)
            variant = variant.replace(preprocessing=tag.preprocessing)
        if scaling["width"] not in (None, 1.0) or scaling["depth"] not in (None, 1.0):
            suffix = f"-w{variant.width:g}-d{variant.depth:g}"
            variant = variant.replace(name=variant.name + suffix)
        image_size = self.image_size or defaults.get("image_size")
        recipe = progressive_lib.resolve_recipe(variant)
        if image_size is not None:
            # Overridden sizes: not the paper's Table 6 row any more.
            recipe = dataclasses.replace(recipe, train_size=image_size, name="custom")
        return variant, recipe

    def resolved_progressive_mode(self) -> str:
        """The option, else the dataset's default, else automl (the official code)."""
        return (self.progressive_mode or self.dataset_defaults().get("progressive_mode")
                or "automl")

    def resolved_eval_every_epochs(self) -> int:
        """The option, else the dataset's default, else 1."""
        if self.eval_every_epochs is not None:
            return self.eval_every_epochs
        return self.dataset_defaults().get("eval_every_epochs", 1)

    def resolved_min_image_size(self, recipe: progressive_lib.Recipe) -> int | None:
        """The plan's first size: the option, else the dataset's default if it fits."""
        if self.min_image_size is not None:
            return self.min_image_size
        default = self.dataset_defaults().get("min_image_size")
        if default is not None and recipe.min_usable_size <= default <= recipe.train_size:
            return default
        return None

    def resolved_schedule(self, global_batch: int, steps_per_epoch: int) -> dict[str, Any]:
        """Keyword arguments of ``WarmupDecaySchedule`` / ``schedules.learning_rate``."""
        warmup = self.warmup_epochs
        if warmup is None:
            warmup = min(RECIPE_WARMUP_EPOCHS, max(1.0, self.epochs / 10))
        return dict(
            base_lr=self.learning_rate or schedules.scaled_learning_rate(global_batch),
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=warmup, decay_epochs=self.decay_epochs,
            decay_factor=self.decay_factor, kind=self.lr_schedule,
            total_steps=steps_per_epoch * self.epochs)

    def resolved_model_dir(self, variant_name: str) -> str:
        """``model_dir``, else ``runs/<variant>_<dataset>``."""
        return self.model_dir or os.path.join(
            "runs", f"{variant_name}_{self.dataset}".replace(":", "_").replace("/", "_"))


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns (also written to ``model_dir/metrics.json``)."""

    top1: float | None
    top5: float | None
    loss: float | None
    raw_top1: float | None
    eval_count: int
    steps: int
    epochs_completed: int
    history: list[dict[str, Any]]
    plan: list[progressive_lib.Stage]
    model_dir: str
    model_name: str
    final_model_path: str | None
    resumed_from: str | None
    wall_time_s: float
    model: Any = dataclasses.field(default=None, repr=False)
