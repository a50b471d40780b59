"""The two searches on the proxy task, and :func:`run`, which drives either.

A search says what a trial is: how the sampler's parameters become a network
(:class:`~keras_effnet.search.study.Proposal`), how the network is trained and scored,
and which values Optuna optimises. :class:`~keras_effnet.search.study.Study` does the
rest (storage, resume, duplicates, stopping); :mod:`~keras_effnet.search.result` writes
the outputs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from keras_effnet.errors import ConfigError
from keras_effnet.search import reward as reward_lib
from keras_effnet.search import space as space_lib
from keras_effnet.search.config import SearchConfig
from keras_effnet.search.study import Proposal, Study, import_optuna, open_storage

__all__ = ["Context", "prepare", "ScalingSearch", "NasSearch", "run"]


@dataclasses.dataclass
class Context:
    """What every trial of one search shares, resolved once per process."""

    config: SearchConfig
    study_dir: str
    base: Any  # the base Variant, shrunk for the proxy
    image_size: int
    source: Any
    classes: int
    base_macs: int
    base_params: int
    storage: Any = None  # the Optuna storage, opened (and checked) before the data

    def train(self, proposal: Proposal, model: str) -> tuple[Any, Any, dict[str, Any]]:
        """Trains ``proposal`` in its run directory: ``(TrainResult, Trainer, record)``."""
        from keras_effnet.search.proxy import train_candidate

        size = proposal.image_size
        config = self.config.train_config(model=model, width=None, depth=None,
                                          image_size=size, eval_image_size=size)
        model_dir = os.path.join(self.study_dir, "trials", proposal.slug)
        result, trainer, seconds = train_candidate(config, proposal.variant,
                                                   source=self.source, model_dir=model_dir)
        record = {"top1": result.top1, "raw_top1": result.raw_top1,
                  "eval_count": result.eval_count, "steps": result.steps,
                  "train_s": seconds, "model_dir": model_dir}
        return result, trainer, record


def prepare(config: SearchConfig) -> Context:
    """Checks the request (in a second, before TensorFlow loads), then loads the data
    and profiles the base."""
    config.check_request()
    # A missing extra, a bad storage URL, an unreachable server or a damaged journal
    # fails here, before TensorFlow loads.
    storage = open_storage(config)
    from keras_effnet.data.sources import get_source
    from keras_effnet.profile import profile

    base, _ = config.train_config().resolved_model()
    image_size = config.resolved_image_size(base.train_size)
    source = get_source(name=config.dataset, data_dir=config.data_dir, seed=config.seed)
    if source.num_val == 0:
        raise ConfigError(f"dataset {config.dataset!r} has no held-out images: the search "
                          "scores candidates on them.", "data_dir")
    p = profile(base, image_size=image_size, classes=source.num_classes)
    return Context(config=config, study_dir=config.resolved_study_dir(), base=base,
                   image_size=image_size, source=source, classes=source.num_classes,
                   base_macs=p.macs, base_params=p.params, storage=storage)


class ScalingSearch:
    """The compound-coefficient grid: each trial trains the base scaled by one
    ``(alpha, beta, gamma)`` and scores its held-out top-1."""

    directions = ["maximize"]

    def __init__(self, ctx: Context):
        c = ctx.config
        self.ctx = ctx
        self.grid = space_lib.scaling_grid(
            ctx.base, ctx.image_size, ctx.classes, target_ratio=c.target_ratio,
            step=c.grid_step, ratio_tolerance=c.ratio_tolerance,
            macs_tolerance=c.macs_tolerance)
        if not self.grid.candidates and not self.grid.off_macs:
            raise ConfigError(
                f"every grid point scales {ctx.base.name} past a size limit (depth x "
                f"alpha, width x beta): lower depth or width. Received: depth={c.depth}, "
                f"width={c.width}", "depth")
        if not self.grid.candidates:
            raise ConfigError(
                f"no grid point scales {ctx.base.name} at {ctx.image_size}px to within "
                f"{c.macs_tolerance:.0%} of {c.target_ratio}x its MACs (rounding at this "
                "width is coarse): raise macs_tolerance, or width / image_size.",
                "macs_tolerance")
        self.by_label = self.grid.by_label()
        paper = space_lib.coefficient_label(*space_lib.PAPER_COEFFICIENTS)
        # The paper's coefficients go first when they are on the grid: the comparison
        # every reader wants.
        self.first = {"coefficients": paper} if paper in self.by_label else None

    def sampler(self, seed: int) -> Any:
        optuna = import_optuna()
        return optuna.samplers.GridSampler({"coefficients": sorted(self.by_label)},
                                           seed=seed)

    def propose(self, trial: Any) -> Proposal:
        c = self.by_label[trial.suggest_categorical("coefficients", sorted(self.by_label))]
        return Proposal(params=c.params_dict(), variant=c.variant, image_size=c.image_size,
                        key=c.key, slug=c.label,
                        info={"macs": c.macs, "params_count": c.params,
                              "macs_ratio": c.macs_ratio, "flops_ratio": c.flops_ratio,
                              "width": c.variant.width, "depth": c.variant.depth})

    def evaluate(self, proposal: Proposal, trial: Any) -> dict[str, Any]:
        _, _, record = self.ctx.train(proposal, self.ctx.base.name)
        record["reward"] = record["top1"]
        return record

    @staticmethod
    def values(result: dict[str, Any]) -> float:
        return result["top1"]


class NasSearch:
    """Training-aware NAS around the base: each trial trains one candidate's block
    strings, times its train step against the base's and scores the reward."""

    def __init__(self, ctx: Context):
        from keras_effnet.search.proxy import StepTimer

        self.ctx = ctx
        c = ctx.config
        self.base_arch = list(ctx.base.blocks)
        self.space = space_lib.nas_space(self.base_arch)
        self.first = space_lib.params_from_arch(self.base_arch, self.base_arch)
        self.base_key = space_lib.network_key(ctx.base, ctx.image_size)
        self.multi = c.resolved_sampler() == "nsga2"
        self.directions = (["maximize", "minimize", "minimize"] if self.multi
                           else ["maximize"])
        self.target_macs = c.target_macs or ctx.base_macs
        steps_per_epoch = max(1, ctx.source.num_train // c.batch_size)
        self.timer = StepTimer(c.train_config(image_size=ctx.image_size), ctx.base,
                               classes=ctx.classes, image_size=ctx.image_size,
                               steps_per_epoch=steps_per_epoch, rounds=c.timing_rounds,
                               steps=c.timing_steps)

    def sampler(self, seed: int) -> Any:
        optuna = import_optuna()
        kind = self.ctx.config.resolved_sampler()
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def changes(self, params: dict[str, Any]) -> str:
        """The stages that differ from the base, e.g. ``s2:mbconv,k5 s5:r+1``."""
        out = []
        for i in range(1, len(self.base_arch) + 1):
            diff = []
            for key in ("block", "kernel", "expand", "repeats"):
                name = f"stage{i}_{key}"
                value = params[name]
                if value != self.first[name]:
                    diff.append(f"r{value:+d}" if key == "repeats" else
                                f"{key[0]}{value}" if key != "block" else value)
            if diff:
                out.append(f"s{i}:" + ",".join(diff))
        return " ".join(out)

    def propose(self, trial: Any) -> Proposal:
        from keras_effnet.profile import profile

        params = {name: trial.suggest_categorical(name, choices)
                  for name, choices in self.space.items()}
        arch = space_lib.arch_from_params(params, self.base_arch)
        variant = space_lib.nas_variant(self.ctx.base, arch)
        p = profile(variant, image_size=self.ctx.image_size, classes=self.ctx.classes)
        key = space_lib.network_key(variant, self.ctx.image_size)
        return Proposal(params=params, variant=variant, image_size=self.ctx.image_size,
                        key=key, slug=f"arch-{key}",
                        info={"arch": arch, "macs": p.macs, "params_count": p.params,
                              "macs_ratio": p.macs / self.ctx.base_macs,
                              "params_ratio": p.params / self.ctx.base_params,
                              "changes": self.changes(params)})

    def evaluate(self, proposal: Proposal, trial: Any) -> dict[str, Any]:
        import time

        _, trainer, record = self.ctx.train(proposal, ",".join(proposal.info["arch"]))
        started = time.perf_counter()
        record.update(self.timer.ratio(trainer, is_base=proposal.key == self.base_key))
        record["timing_s"] = time.perf_counter() - started
        del trainer
        info, c = proposal.info, self.ctx.config
        if c.reward == "v2":
            record["reward"] = reward_lib.v2_reward(
                record["top1"], record["step_time_ratio"], info["params_ratio"])
        else:
            record["reward"] = reward_lib.mnas_reward(record["top1"], info["macs"],
                                                      self.target_macs)
        record["params_count"] = info["params_count"]
        return record

    def values(self, result: dict[str, Any]) -> Any:
        if self.multi:
            return result["top1"], result["step_time_ratio"], result["params_count"]
        return result["reward"]


def _label(candidate: dict[str, Any]) -> str:
    """A short label for console lines: coefficients, or the stages that differ from
    the base."""
    params = candidate.get("params", {})
    if "alpha" in params:
        return space_lib.coefficient_label(params["alpha"], params["beta"], params["gamma"])
    return candidate.get("changes") or "base"


def _trial_line(study: Study, frozen: Any) -> str:
    attrs = frozen.user_attrs
    candidate, result = attrs.get("candidate", {}), attrs.get("result")
    head = f"trial {frozen.number:3d} [{study.distinct()}/{study.config.trials}] " \
           f"{_label(candidate):<22}"
    if result is None:
        return f"{head} {frozen.state.name.lower()}: {attrs.get('error', 'interrupted')}"
    if "duplicate_of" in attrs:
        return (f"{head} same network as trial {attrs['duplicate_of']} "
                f"(top-1 {result['top1']:.2%}): not trained again")
    if "macs_ratio" in candidate and "step_time_ratio" not in result:
        cost = f"MACs x{candidate['macs_ratio']:.2f} (product {candidate['flops_ratio']:.3f})"
    else:
        cost = (f"step x{result['step_time_ratio']:.3f} params "
                f"x{candidate['params_ratio']:.2f} reward {result['reward']:.4f}")
    return (f"{head} {candidate['image_size']}px {cost}  top-1 {result['top1']:.2%}  "
            f"({result['train_s']:.0f}s training + {result['overhead_s']:.1f}s other)")


def run(config: SearchConfig, log: Callable[[str], None] | None = None) -> Any:
    """Runs (or continues) the search ``config`` describes; returns its
    :class:`~keras_effnet.search.result.SearchResult` (also written to the study
    directory: result.json, table.md, the figure)."""
    from keras_effnet.search import result as result_lib

    log = log or print
    say = log if config.verbose else (lambda message: None)
    ctx = prepare(config)
    search = ScalingSearch(ctx) if config.search == "scaling" else NasSearch(ctx)
    study = Study(config, directions=search.directions, sampler_fn=search.sampler,
                  propose=search.propose, evaluate=search.evaluate,
                  objective_values=search.values, first=search.first, log=say,
                  storage=ctx.storage)
    space = (f"{len(search.grid.candidates)} grid points within "
             f"{config.macs_tolerance:.0%} of {config.target_ratio}x MACs"
             if isinstance(search, ScalingSearch) else
             f"{len(search.space) // 4} stages x (block, kernel, expansion, repeats), "
             f"reward {config.reward}")
    say(f"keras_effnet search ({config.search}): base {ctx.base.name} at {ctx.image_size}px "
        f"({ctx.base_params:,} params, {ctx.base_macs / 1e6:.1f}M MACs), {space}; "
        f"{config.epochs} epoch(s) on {config.dataset!r} per candidate; study "
        f"{study.study.study_name!r} in {ctx.study_dir}")
    study.run(on_trial=lambda s, frozen: say(_trial_line(s, frozen)))
    result = result_lib.collect(study.study, ctx, search)
    result_lib.write(result)
    say(result_lib.summary(result))
    return result
