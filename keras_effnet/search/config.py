"""What a search is asked to do: :class:`SearchConfig`, its defaults and its checks.

Pure Python (no TensorFlow, no Optuna): ``scripts/search.py`` builds and checks a config
in a second. Every field declared with ``cli.option(help=...)`` is a flag of the script;
validation raises :class:`~keras_effnet.errors.ConfigError` naming the field.

The proxy task: every candidate trains with the package's own trainer at one fixed image
size (no progressive stages: resolution is what the scaling search varies), the same
seed for all, on ``dataset`` for ``epochs``; its held-out top-1 is the accuracy term.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from keras_effnet import cli
from keras_effnet.errors import ConfigError, check_int
from keras_effnet.variants import is_arch_string

__all__ = ["SearchConfig", "SEARCHES", "SAMPLERS", "REWARDS", "DEFAULT_MODELS",
           "RESUME_FIELDS", "redacted"]

SEARCHES = ("scaling", "nas")
# scaling walks its constrained grid (GridSampler, in a seeded random order); nas samples
# the stage-wise space.
SAMPLERS = {"scaling": ("grid",), "nas": ("tpe", "random", "nsga2")}
REWARDS = ("v2", "mnas")
DEFAULT_MODELS = {"scaling": "efficientnet-b0", "nas": "efficientnetv2-b0"}
# The embedded sets are 8x8 and 28x28 scans, so a full-size proxy would only burn time;
# but under 64 px an EfficientNet (which reduces 32x) ends on a 1x1 feature map, the
# trainer's first-size rule. A 32 px proxy measured that: at 10 epochs the same network
# scored 58-81 % over four seeds, and the "resolution only" arm won the scaling
# comparison at 33 px (85.5 %, its maps rounded up to 2x2) over every 32 px network.
_SMALL_IMAGE_SIZE = {"digits": 64, "mnist5k": 64}

# The fields a study keeps for its whole life: a rerun (or another worker) that differs
# in one of them would mix incomparable results, so it is refused.
RESUME_FIELDS = ("search", "model", "width", "depth", "image_size", "dataset", "data_dir",
                 "epochs", "batch_size", "max_train_steps", "seed", "sampler",
                 "target_ratio", "grid_step", "ratio_tolerance", "macs_tolerance",
                 "reward", "target_macs")


@dataclasses.dataclass
class SearchConfig:
    """A compound-scaling grid search or a training-aware NAS, on a proxy task."""

    search: str = cli.option(
        "scaling", choices=SEARCHES,
        help="scaling: the EfficientNet paper's grid over alpha (depth), beta (width), "
        "gamma (resolution); nas: EfficientNetV2's training-aware search over block type, "
        "kernel, expansion and repeats per stage.")
    model: str | None = cli.option(
        None, help="Base network: a variant name or comma-separated block strings "
        "(default: efficientnet-b0 for scaling, efficientnetv2-b0 for nas).")
    width: float = cli.option(
        0.5, help="Width multiplier of the base on the proxy (shrinks every candidate).")
    depth: float = cli.option(
        0.5, help="Depth multiplier of the base on the proxy.")
    image_size: int | None = cli.option(
        None, help="Base resolution of the proxy (default: 64 on digits and mnist5k, "
        "else the base's train size).")
    dataset: str = cli.option(
        "digits", help="Proxy data: digits (embedded), folder, tfrecord or tfds:<name>.")
    data_dir: str | None = cli.option(
        None, help="Images (folder: one sub-folder per class) or TFRecord shards.")
    trials: int = cli.option(
        20, help="Distinct candidates to train in the whole study; a rerun continues up "
        "to it (duplicates proposed by the sampler cost nothing and do not count).")
    epochs: int = cli.option(10, help="Proxy training epochs per candidate.")
    batch_size: int = cli.option(64, help="Batch size of the proxy training.")
    max_train_steps: int | None = cli.option(
        None, help="Stop every candidate's training after this many steps (smoke runs).")
    seed: int = cli.option(
        0, help="Seed of the sampler and of every candidate's training (one seed for all: "
        "candidates differ only in architecture).")
    study_dir: str | None = cli.option(
        None, help="Outputs (result.json, table.md, figure, one run directory per "
        "candidate) and the default journal (default: search_runs/<search>_<model>_"
        "<dataset>). The same study_dir continues the study.")
    storage: str | None = cli.option(
        None, help="Optuna storage: an RDB URL (postgresql://..., sqlite:///...) that "
        "workers on many machines share, or a journal file (default: "
        "<study_dir>/study.journal).")
    sampler: str = cli.option(
        "auto", choices=("auto", "grid", "tpe", "random", "nsga2"),
        help="auto: grid for scaling, tpe for nas. nsga2 optimises top-1, step time and "
        "parameters as three objectives.")
    # --- scaling ---
    target_ratio: float = cli.option(
        2.0, help="scaling: the FLOPs multiplier alpha * beta^2 * gamma^2 aims at (the "
        "paper's phi = 1: twice the resources).")
    grid_step: float = cli.option(0.05, help="scaling: grid spacing of alpha, beta, gamma.")
    ratio_tolerance: float = cli.option(
        0.05, help="scaling: alpha * beta^2 * gamma^2 within this fraction of "
        "target_ratio.")
    macs_tolerance: float = cli.option(
        0.10, help="scaling: profiled MACs within this fraction of target_ratio x the "
        "base's (rounding makes the product inexact).")
    # --- nas ---
    reward: str = cli.option(
        "v2", choices=REWARDS,
        help="nas: v2 = A * S^-0.07 * P^-0.05 (S train-step time, P parameters, both "
        "relative to the base); mnas = A * (MACs / T)^-0.07.")
    target_macs: float | None = cli.option(
        None, help="nas: T of the mnas reward (default: the base's MACs on the proxy).")
    timing_rounds: int = cli.option(
        5, help="nas: interleaved rounds timing a candidate's train step against the "
        "base's.")
    timing_steps: int = cli.option(2, help="nas: train steps per timing round.")
    verbose: int = cli.option(1, help="0: quiet, 1: one line per trial and the summary.")

    # --- checks -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the first bad field."""
        for name, choices in (("search", SEARCHES), ("reward", REWARDS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {choices}. "
                                  f"Received: {name}={getattr(self, name)!r}", name)
        for name in ("trials", "epochs", "batch_size", "timing_rounds", "timing_steps"):
            self._check_int(name, 1)
        self._check_int("max_train_steps", 1, allow_none=True)
        # The trainer's recipe needs 2 px at least (a 1 px size was a traceback there).
        self._check_int("image_size", 2, allow_none=True)
        self._check_int("seed", 0)
        for name in ("width", "depth", "target_macs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0. Received: {name}={value!r}", name)
        if not (math.isfinite(self.target_ratio) and self.target_ratio > 1.0):
            raise ConfigError("target_ratio must be a finite number > 1 (the search scales "
                              f"up). Received: target_ratio={self.target_ratio!r}",
                              "target_ratio")
        for name in ("grid_step", "ratio_tolerance", "macs_tolerance"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1). Received: {name}={value!r}",
                                  name)
        if self.search == "scaling":  # its size, in a second, before any is profiled
            from keras_effnet.search.space import coefficient_grid
            try:
                coefficient_grid(self.target_ratio, self.grid_step, self.ratio_tolerance)
            except ValueError as e:
                raise ConfigError(str(e), "grid_step") from None
        allowed = ("auto",) + SAMPLERS[self.search]
        if self.sampler not in allowed:
            raise ConfigError(f"sampler {self.sampler!r} does not apply to search="
                              f"{self.search!r}; choose one of {allowed}. "
                              f"Received: sampler={self.sampler!r}", "sampler")

    def _check_int(self, name: str, minimum: int, allow_none: bool = False) -> None:
        check_int(name, getattr(self, name), minimum, allow_none)

    def check_request(self) -> None:
        """:meth:`validate`, the study directory and a journal path, then the model,
        dataset and data directory as the trainer checks them (its errors name the same
        fields): no TensorFlow, in a second. (An RDB storage is opened, and so checked,
        by :func:`~keras_effnet.search.study.open_storage`.)"""
        self.validate()
        study_dir = self.resolved_study_dir()
        if os.path.exists(study_dir) and not os.path.isdir(study_dir):
            raise ConfigError(f"study_dir {study_dir!r} is a file, not a directory: pass a "
                              "directory for the study's outputs.", "study_dir")
        if self.storage and "://" not in self.storage and os.path.isdir(self.storage):
            raise ConfigError(f"storage {self.storage!r} is a directory: pass a journal "
                              "file (or an RDB URL such as postgresql://user@host/db).",
                              "storage")
        self.train_config().check_request()

    # --- defaults resolved at run time -------------------------------------------------

    def resolved_model(self) -> str:
        """``model``, else the search's default base."""
        return self.model or DEFAULT_MODELS[self.search]

    def resolved_sampler(self) -> str:
        return SAMPLERS[self.search][0] if self.sampler == "auto" else self.sampler

    def resolved_image_size(self, train_size: int) -> int:
        """The proxy's base resolution: the option, the dataset's small size, or the
        base variant's ``train_size``."""
        return self.image_size or _SMALL_IMAGE_SIZE.get(self.dataset, train_size)

    def resolved_study_dir(self) -> str:
        """``study_dir``, else ``search_runs/<search>_<model>_<dataset>``."""
        if self.study_dir:
            return self.study_dir
        model = self.resolved_model()
        if is_arch_string(model):  # block strings: too long for a directory name
            model = "custom"
        name = f"{self.search}_{model}_{self.dataset}"
        return os.path.join("search_runs", name.replace(":", "_").replace("/", "_"))

    def study_name(self) -> str:
        """The Optuna study's name: the study directory's base name, so that workers
        running the same command against one RDB share one study."""
        return os.path.basename(os.path.normpath(self.resolved_study_dir()))

    def identity(self) -> dict[str, Any]:
        """The :data:`RESUME_FIELDS` with defaults resolved, as the study records them."""
        values = {name: getattr(self, name) for name in RESUME_FIELDS}
        values.update(model=self.resolved_model(), sampler=self.resolved_sampler())
        return values

    def train_config(self, **overrides: Any):
        """The :class:`~keras_effnet.train.config.TrainConfig` of a proxy run: one stage
        at a fixed size, evaluated once at the end, quiet."""
        from keras_effnet.train.config import TrainConfig

        fields = dict(model=self.resolved_model(), width=self.width, depth=self.depth,
                      dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                      batch_size=self.batch_size, max_train_steps=self.max_train_steps,
                      seed=self.seed, stages=1, image_size=self.image_size,
                      eval_every_epochs=0, verbose=0)
        fields.update(overrides)
        return TrainConfig(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def redacted(url: str | None) -> str | None:
    """An RDB URL without its password (result.json and errors are shared; the storage
    is not)."""
    if not url or "://" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
