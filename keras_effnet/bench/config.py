"""What a benchmark run measures: :class:`BenchConfig`, every knob, with full and quick
presets; ``--set name=value`` changes any of them. Which sections run, and where the
results go, is :class:`keras_effnet.bench.runner.BenchRequest`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Sequence

from keras_effnet.cli import option, parse_value
from keras_effnet.errors import ConfigError
from keras_effnet.search.config import REWARDS

__all__ = ["BenchConfig", "TFLITE_FLAVOURS", "full_config", "quick_config", "apply_overrides"]

TFLITE_FLAVOURS = ("float32", "float16", "int8", "pruned50", "pruned75", "xnnpack")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure and how hard. ``quick_config()`` is a few minutes on 2 cores."""

    mode: str = "full"
    repeats: int = 5  # timed rounds per comparison, after `warmup` untimed rounds
    warmup: int = 1
    seed: int = 0
    # 1. training throughput: keras_effnet vs keras.applications, one train step
    train_models: tuple[str, ...] = ("efficientnet-b0", "efficientnetv2-b0",
                                     "efficientnetv2-s")
    train_image_size: int = 128
    train_batch: int = 32
    train_steps: int = 3  # steps per timed round
    train_jit: tuple[bool, ...] = (False, True)
    train_classes: int = 1000
    # an A/A arm without XLA: keras_effnet's model built twice (the noise floor)
    train_control: bool = True
    # 2. input pipeline vs train step
    pipeline_model: str = "efficientnetv2-b0"
    pipeline_image_size: int = 128
    pipeline_batch: int = 32
    pipeline_images: int = 512  # JPEG files written for the folder source
    pipeline_randaug: float = 15.0  # efficientnetv2-m's last stage: RandAugment 15,
    pipeline_mixup: float = 0.2  # mixup = cutmix 0.2
    pipeline_train_steps: int = 3
    # 3. progressive vs fixed size, digits (keras_effnet.train.train)
    progressive_model: str = "efficientnetv2-b0"  # shrunk to w0.5 d0.5 on digits
    progressive_epochs: int = 12
    progressive_stages: int = 4
    # 128 px: at 64 px a digits epoch is bound by per-step overhead on a CPU (40-px
    # epochs took 0.76 of a 64-px one's time for 0.39 of its pixels), which measures the
    # overhead rather than progressive learning; at 128 px compute dominates (80-px
    # epochs: 0.49 of the time for 0.39 of the pixels).
    progressive_image_size: int = 128
    progressive_min_image_size: int = 64
    progressive_batch: int = 64
    progressive_repeats: int = 3  # pairs of runs (each run trains a model from scratch)
    # "equal final accuracy (± 0.5 point)": the progressive run has reached the fixed
    # run's accuracy when it is within this many points of the fixed run's final one.
    progressive_tolerance: float = 0.5
    progressive_warmup: bool = True  # one step of each run first (pipeline traces)
    # 0. the main job (scripts/train.py as the README runs it) vs fixed size,
    # keras.applications + fit and scikit-learn, on the digits' own split
    main_job_seeds: tuple[int, ...] = (0, 1, 2)
    main_job_flags: tuple[str, ...] = ()  # extra scripts/train.py flags for every run
    main_job_epochs: int = 12  # the main job's default; keras.applications gets the same
    main_job_image_size: int = 128  # keras.applications' fixed size (the main job's last)
    main_job_batch: int = 64
    main_job_apps_model: str = "EfficientNetV2B0"
    # The seeds keras.applications trains (empty: every main_job_seeds one). Its 7.2M
    # parameters take ~6x the main job's training time a seed on 2 cores.
    main_job_apps_seeds: tuple[int, ...] = ()
    main_job_export: bool = True  # seed 0's progressive run ends with its export
    main_job_tolerance: float = 0.5  # target: fixed's median final top-1 less this
    # 9. the trainer's step at each size of the main job's plan (main_job_flags)
    stage_cost_steps: int = 5  # steps per timed round
    stage_cost_double_batch: bool = True  # also at twice main_job_batch
    # 4. serving: SavedModel serving_default on JPEG bytes vs the Keras model
    serving_model: str = "efficientnetv2-b0"
    serving_width: float = 0.5
    serving_depth: float = 0.5
    serving_image_size: int = 224
    serving_batches: tuple[int, ...] = (1, 32)
    serving_calls: int = 5  # calls per timed round
    # 5. TFLite (child process)
    tflite_model: str = "efficientnet-lite0"
    tflite_image_size: int = 224
    tflite_runs: int = 20  # invokes per timed round
    tflite_threads: int = 1
    # Which models: float32 (the baseline, always), float16, int8, pruned50 and pruned75
    # (magnitude pruning), xnnpack (lite models: the XNNPACK-sparse model and its twin).
    tflite_flavours: tuple[str, ...] = TFLITE_FLAVOURS
    prune_epochs: int = 2
    prune_steps_per_epoch: int = 0  # 0: one pass over the digits train split
    # Convert and prune in a child process started with the run, overlapping the first
    # sections (untimed work; those sections' ratios hold, their absolute times suffer).
    tflite_background: bool = False
    # 6. build time
    build_models: tuple[str, ...] = ("all",)
    # 7. model FLOP utilisation
    mfu_models: tuple[str, ...] = ("efficientnet-b0", "efficientnetv2-b0", "efficientnetv2-s")
    mfu_batch: int = 32
    mfu_image_size: int = 0  # 0: each model's evaluation size
    matmul_size: int = 2048
    matmul_calls: int = 3
    # search: issue 14's goals, measured side by side on the digits proxy. A NAS study and
    # a compound-scaling study (keras_effnet.search, seed `seed`), then the NAS winner
    # and the base retrained, and the scaling winner against width-, depth- and
    # resolution-only scaling of the base to the same MACs, each with `search_seeds`
    # (fresh seeds: the studies chose their winners on seed `seed`'s results).
    search_nas_model: str = "efficientnetv2-b0"
    search_scaling_model: str = "efficientnet-b0"
    search_width: float = 0.5  # both bases are shrunk for the proxy
    search_depth: float = 0.5
    search_image_size: int = 0  # 0: the search's default (64 px on digits)
    search_trials: int = 20  # distinct candidates per study (the default)
    search_epochs: int = 10  # per candidate and per retraining (the default)
    search_batch: int = 64
    search_max_train_steps: int = 0  # 0: whole epochs
    search_reward: str = "v2"  # the NAS reward: v2 or mnas
    search_seeds: tuple[int, ...] = (1, 2, 3)
    search_timing_rounds: int = 5  # interleaved step-time rounds per NAS candidate
    search_dataset: str = "digits"  # the proxy: any --dataset the search takes
    search_studies: tuple[str, ...] = ("nas", "scaling")  # which studies (and goals) run
    # transfer: pretrain on digits 0-4, then digits 5-9 from transfer_per_class labelled
    # images per class, fine-tuned vs from scratch at equal steps, one pair per seed
    transfer_model: str = "efficientnetv2-b0"
    transfer_width: float = 0.5
    transfer_depth: float = 0.5
    transfer_image_size: int = 32
    transfer_pretrain_epochs: int = 10
    transfer_pretrain_batch: int = 32
    transfer_per_class: int = 15
    transfer_epochs: int = 20  # both arms: the same epochs and batch, so the same steps
    transfer_batch: int = 15
    # freeze=bn from the start: in a one-seed trial (seed 1) it beat freeze=backbone with
    # unfreeze_at_epoch=5 at x1 the LR by 3 points, and at x0.1 by 25 (100 steps at this
    # recipe's small LR leave a head trained alone for 25 of them under-fitted)
    transfer_freeze: str = "bn"
    transfer_unfreeze_at_epoch: int = 0  # 0: never unfreeze
    transfer_unfreeze_lr_factor: float = 0.1
    transfer_seeds: tuple[int, ...] = (1, 2, 3)
    # pretrained weights: variant:tag pairs, loaded from a local mirror (no download)
    weights_tags: tuple[str, ...] = (
        "efficientnet-b0:imagenet", "efficientnet-b0:advprop", "efficientnet-b4:noisy-student",
        "efficientnet-lite0:imagenet", "efficientnetv2-b0:imagenet",
        "efficientnetv2-s:imagenet", "efficientnetv2-s:imagenet21k-ft1k")
    weights_images: int = 8
    # reliability
    kill_points: int = 3
    serving_fuzz: int = 1000
    spec_fuzz: int = 10000
    # accelerator
    gpu_model: str = "efficientnetv2-s"
    gpu_image_size: int = 300
    # Tried largest first; each try that does not fit costs a build and an XLA compile,
    # so the list is short (add larger ones with --set=gpu_batches=256,192,128).
    gpu_batches: tuple[int, ...] = (128, 64, 32, 16, 8)
    gpu_steps: int = 5

    def __post_init__(self):
        def fail(field: str, rule: str) -> None:
            raise ConfigError(f"{field} {rule}. Received: {field}={getattr(self, field)!r}",
                              field)

        from keras_effnet.weights.table import WEIGHTS
        for item in self.weights_tags:
            if tuple(item.split(":", 1)) not in WEIGHTS:
                fail("weights_tags", f"must be variant:tag pairs of keras_effnet."
                     f"list_weights() ({item!r} is none)")

        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int",) and (isinstance(value, bool) or not isinstance(value, int)):
                fail(field.name, "must be an integer")
        positive = ("repeats", "train_image_size", "train_batch", "train_steps",
                    "train_classes", "pipeline_image_size", "pipeline_batch",
                    "pipeline_images", "pipeline_train_steps", "progressive_epochs",
                    "progressive_stages", "progressive_image_size",
                    "progressive_min_image_size", "progressive_batch", "progressive_repeats",
                    "main_job_epochs", "main_job_image_size", "main_job_batch",
                    "stage_cost_steps", "weights_images",
                    "serving_image_size", "serving_calls", "tflite_image_size",
                    "tflite_runs", "tflite_threads", "prune_epochs", "mfu_batch",
                    "matmul_size", "matmul_calls", "gpu_image_size", "gpu_steps",
                    "search_trials", "search_epochs", "search_batch",
                    "search_timing_rounds", "transfer_image_size", "transfer_pretrain_epochs",
                    "transfer_pretrain_batch", "transfer_per_class", "transfer_epochs",
                    "transfer_batch")
        for name in positive:
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        for name in ("warmup", "prune_steps_per_epoch", "mfu_image_size", "kill_points",
                     "serving_fuzz", "spec_fuzz", "search_image_size",
                     "search_max_train_steps", "transfer_unfreeze_at_epoch"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if not self.main_job_seeds:
            fail("main_job_seeds", "must name at least one seed")
        if not set(self.main_job_apps_seeds) <= set(self.main_job_seeds):
            fail("main_job_apps_seeds", "must be some of main_job_seeds (empty: all)")
        if not 0.0 <= self.main_job_tolerance < 100.0:
            fail("main_job_tolerance", "is in accuracy points, 0 <= it < 100")
        if not 0.0 <= self.progressive_tolerance < 100.0:
            fail("progressive_tolerance", "is in accuracy points, 0 <= it < 100")
        if self.progressive_stages > self.progressive_epochs:
            fail("progressive_stages", f"must be <= progressive_epochs "
                 f"({self.progressive_epochs})")
        if self.progressive_min_image_size > self.progressive_image_size:
            fail("progressive_min_image_size", f"must be <= progressive_image_size "
                 f"({self.progressive_image_size})")
        if self.pipeline_images < 2 * self.pipeline_batch:
            fail("pipeline_images", f"must be at least 2 * pipeline_batch "
                 f"({2 * self.pipeline_batch}): the folder source keeps 80 % for training")
        for name in ("search_width", "search_depth", "transfer_width", "transfer_depth",
                     "transfer_unfreeze_lr_factor"):
            if not getattr(self, name) > 0:
                fail(name, "must be > 0")
        if self.transfer_freeze not in ("none", "backbone", "bn"):
            fail("transfer_freeze", "must be one of none, backbone, bn")
        if self.transfer_unfreeze_at_epoch and (self.transfer_freeze != "backbone" or
                                                self.transfer_unfreeze_at_epoch >=
                                                self.transfer_epochs):
            fail("transfer_unfreeze_at_epoch", "needs transfer_freeze=backbone and must be "
                 f"< transfer_epochs ({self.transfer_epochs}), or 0")
        if self.transfer_per_class * 5 < self.transfer_batch:
            fail("transfer_batch", "must be <= 5 * transfer_per_class (the 5 classes' "
                 "labelled images)")
        if not self.transfer_seeds or len(set(self.transfer_seeds)) != len(self.transfer_seeds):
            fail("transfer_seeds", "must name at least one seed, each once")
        if self.search_reward not in REWARDS:
            fail("search_reward", f"must be one of {', '.join(REWARDS)}")
        if not self.search_studies or len(set(self.search_studies)) != len(
                self.search_studies) or not set(self.search_studies) <= {"nas", "scaling"}:
            fail("search_studies", "must name nas, scaling or both, each once")
        if not self.search_dataset.strip():
            fail("search_dataset", "must name a dataset (digits, mnist5k, ...)")
        seeds = self.search_seeds
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            fail("search_seeds", "must name at least one seed, each >= 0 and once")
        unknown = set(self.tflite_flavours) - set(TFLITE_FLAVOURS)
        if unknown or "float32" not in self.tflite_flavours:
            fail("tflite_flavours", f"must include float32 and be among "
                 f"{', '.join(TFLITE_FLAVOURS)}")
        for name in ("serving_batches", "gpu_batches"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                fail(name, "must be positive integers")

    def build_model_names(self) -> tuple[str, ...]:
        """``build_models`` with ``("all",)`` spelled out as every variant."""
        if tuple(self.build_models) == ("all",):
            from keras_effnet.variants import list_models
            return tuple(list_models())
        return tuple(self.build_models)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-ready (results.json's ``config``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchConfig":
        """The inverse of :meth:`to_dict` (JSON lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


QUICK_PROGRESSIVE_ARCH = ("r1_k3_s1_e1_i16_o16_f,r2_k3_s2_e4_i16_o32_f,"
                          "r2_k3_s2_e4_i32_o64_se0.25")

QUICK_SEARCH_ARCH = "r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25"


def full_config() -> BenchConfig:
    """The full CPU run's settings (``BenchConfig()``'s defaults)."""
    return BenchConfig()


def quick_config() -> BenchConfig:
    """A few minutes on two CPU cores: small images, small batches, fewer models."""
    return BenchConfig(
        mode="quick", repeats=5,
        train_models=("efficientnet-b0", "efficientnetv2-b0"), train_image_size=64,
        train_batch=8, train_steps=2, train_classes=1000,
        # XLA's CPU compile of one EfficientNet train step takes minutes (187 s for B0
        # on a loaded 2-core machine): four of them do not fit a quick run.
        train_jit=(False,),
        pipeline_image_size=64, pipeline_batch=8, pipeline_images=256,
        pipeline_train_steps=2,
        # A small custom network (5 blocks): EfficientNetV2-B0, even shrunk, spends
        # ~40 s tracing and ~15 s per epoch at 16-32 px here, overhead more than pixels.
        progressive_model=QUICK_PROGRESSIVE_ARCH, progressive_epochs=6,
        progressive_stages=3, progressive_image_size=48, progressive_min_image_size=24,
        progressive_batch=32, progressive_repeats=1, progressive_warmup=False,
        serving_image_size=64, serving_calls=3,
        tflite_image_size=64, tflite_runs=10, prune_epochs=1, prune_steps_per_epoch=5,
        tflite_background=True,
        build_models=("efficientnet-b0", "efficientnetv2-b0"),
        mfu_models=("efficientnet-b0",), mfu_batch=8, mfu_image_size=128, matmul_size=1024,
        kill_points=3, serving_fuzz=1000, spec_fuzz=10000,
        # Two stages on 16 px digits: a trial is a short trace and one epoch of steps.
        search_nas_model=QUICK_SEARCH_ARCH, search_scaling_model=QUICK_SEARCH_ARCH,
        search_width=1.0, search_depth=1.0, search_image_size=16, search_trials=2,
        search_epochs=1, search_seeds=(1, 2), search_timing_rounds=2,
        # The quick progressive network at 16 px, one seed, a few steps per arm.
        transfer_model=QUICK_PROGRESSIVE_ARCH, transfer_width=1.0, transfer_depth=1.0,
        transfer_image_size=16, transfer_pretrain_epochs=2, transfer_per_class=5,
        transfer_epochs=3, transfer_batch=10, transfer_freeze="backbone",
        transfer_unfreeze_at_epoch=1,
        transfer_seeds=(1,),
        weights_tags=("efficientnet-b0:imagenet", "efficientnet-lite0:imagenet"),
        weights_images=2,
        main_job_seeds=(0,), main_job_epochs=2, main_job_image_size=32,
        main_job_flags=("--dataset=digits", f"--model={QUICK_PROGRESSIVE_ARCH}",
                        "--image_size=32", "--min_image_size=16", "--stages=2", "--export_prune=0",
                        "--export_quantize=none"))


def apply_overrides(config: BenchConfig, assignments: Sequence[str]) -> BenchConfig:
    """``config`` with ``name=value`` assignments applied, each typed by its field
    (tuples comma-separated, booleans true/false); ConfigError on a bad one."""
    hints = typing.get_type_hints(BenchConfig)
    changes = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"expects name=value. Received: {assignment!r}")
        if name not in hints or name == "mode":
            close = difflib.get_close_matches(name, [n for n in hints if n != "mode"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {name!r}.{hint}")
        changes[name] = parse_value(name, hints[name], text)
    return dataclasses.replace(config, **changes)
