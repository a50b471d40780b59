"""8. Search: issue 14's goals, measured side by side in one run on a proxy task
(``search_dataset``: the digits by default; ``search_studies`` runs one study alone).

* (a) NAS: a study (``keras_effnet.search``, seed ``seed``), then its winner and the base
  architecture retrained with each of ``search_seeds`` (fresh seeds: the study chose its
  winner on seed ``seed``'s result, so reusing it would flatter the winner), each pair in
  one process with the winner's train step timed against the base's, as the search
  times it. Goal: the winner is better on the reward and not worse on held-out top-1.
* (b) Compound scaling (the paper's Figure 3): a study, then its winner (a grid point:
  alpha * beta^2 * gamma^2 ~ 2, twice the resources) against the base scaled by width
  only, depth only and resolution only to the winner's MACs, each retrained with
  ``search_seeds``. Goal: the winner beats every single-dimension scaling on top-1.
* (c) Overhead: per trial of both studies, everything but the candidate's training
  (Optuna, profiling, duplicate checks, the NAS step timing) as a fraction of the
  trial's time. Goal: under 10 % for every trial.

Training, timing and rewards are the search's own (:mod:`keras_effnet.search.runner`):
a retraining is a search trial outside any study. The scoring functions are pure.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "DIMENSIONS", "matched_factor", "summarise_nas",
           "summarise_scaling", "trial_overhead", "OVERHEAD_LIMIT"]

OVERHEAD_LIMIT = 0.10
# Each single dimension as (alpha, beta, gamma) of a factor f; the factors tried.
DIMENSIONS: dict[str, Callable[[float], tuple[float, float, float]]] = {
    "width only": lambda f: (1.0, f, 1.0),
    "depth only": lambda f: (f, 1.0, 1.0),
    "resolution only": lambda f: (1.0, 1.0, f),
}
_FACTORS = tuple(round(1 + k * 0.01, 2) for k in range(301))  # 1.00 .. 4.00


# --- pure scoring ---------------------------------------------------------------------


def matched_factor(macs_of: Callable[[float], int], target_macs: float,
                   factors: Sequence[float] = _FACTORS) -> tuple[float, int]:
    """The factor whose network's MACs (``macs_of(factor)``) come closest to
    ``target_macs``, the smaller factor on a tie (widths, repeats and sizes round, so
    many factors build one network): ``(factor, macs)``."""
    best = None
    for f in factors:
        macs = macs_of(f)
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (f, macs)
    if best is None:
        raise ValueError("matched_factor needs at least one factor.")
    return best


def _goal(goal: str, value: float | None, threshold: float | None, met: bool | None
          ) -> dict[str, Any]:
    return {"goal": goal, "value": value, "threshold": threshold,
            "met": None if value is None or threshold is None else met}


def _arm_row(arm: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    top1 = [r["top1"] for r in group]
    return {"arm": arm, "runs": len(group), "median_top1": timing.median(top1),
            "min_top1": min(top1)}


def summarise_nas(runs: list[dict[str, Any]], *, reward: str, base_params: int,
                  target_macs: float) -> dict[str, Any]:
    """Rows for the base and the winner (median and min top-1 over seeds, median
    step-time ratio, parameters, MACs, the reward of the medians) and the goals.

    ``runs``: ``{"arm": "base" | "winner", "seed", "top1", "step_time_ratio",
    "params_count", "macs"}``; the reward is ``reward`` ("v2" or "mnas") with the
    search's exponents, parameters relative to ``base_params``.
    """
    from keras_effnet.search import reward as reward_lib

    rows = {}
    for arm in ("base", "winner"):
        group = [r for r in runs if r["arm"] == arm]
        if not group:
            continue
        row = _arm_row(arm, group)
        row.update(step_time_ratio=timing.median([r["step_time_ratio"] for r in group]),
                   params_count=group[0]["params_count"], macs=group[0]["macs"],
                   params_ratio=group[0]["params_count"] / base_params)
        if reward == "v2":
            row["reward"] = reward_lib.v2_reward(row["median_top1"], row["step_time_ratio"],
                                                 row["params_ratio"])
        else:
            row["reward"] = reward_lib.mnas_reward(row["median_top1"], row["macs"],
                                                   target_macs)
        rows[arm] = row
    base, winner = rows.get("base"), rows.get("winner")
    goals = []
    if base and winner:
        goals = [_goal(f"(a) the NAS winner's reward ({reward}) > the base's",
                       winner["reward"], base["reward"], winner["reward"] > base["reward"]),
                 _goal("(a) the NAS winner's median top-1 >= the base's",
                       winner["median_top1"], base["median_top1"],
                       winner["median_top1"] >= base["median_top1"] - 1e-12)]
    return {"rows": list(rows.values()), "goals": goals}


def summarise_scaling(runs: list[dict[str, Any]], arms: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """Rows per arm (its scaling, MACs against the base's and the winner's, median and
    min top-1 over seeds) and one goal per single-dimension arm.

    ``arms``: ``{"arm", "alpha", "beta", "gamma", "image_size", "macs", "macs_ratio",
    "params_count"}``, the compound winner first; ``runs``: ``{"arm", "seed", "top1"}``.
    """
    if not arms:
        return {"rows": [], "goals": []}
    winner = arms[0]
    rows = []
    for arm in arms:
        group = [r for r in runs if r["arm"] == arm["arm"]]
        row = {**arm, "vs_winner_macs": arm["macs"] / winner["macs"]}
        row.update(_arm_row(arm["arm"], group) if group else
                   {"runs": 0, "median_top1": None, "min_top1": None})
        rows.append(row)
    top = rows[0]["median_top1"]
    goals = [_goal(f"(b) the scaling winner's median top-1 > {r['arm']} scaling's "
                   f"(MACs x{r['vs_winner_macs']:.2f} the winner's)", top, r["median_top1"],
                   None if top is None or r["median_top1"] is None
                   else top > r["median_top1"])
             for r in rows[1:]]
    return {"rows": rows, "goals": goals}


def trial_overhead(study: str, trials: list[dict[str, Any]],
                   limit: float = OVERHEAD_LIMIT) -> tuple[dict[str, Any], dict[str, Any]]:
    """A study's per-trial overhead (everything but training) as a fraction of the
    trial's time, over the trials that trained a candidate: ``(row, goal)``; the goal
    holds the worst trial."""
    fractions = [t["overhead_s"] / (t["train_s"] + t["overhead_s"]) for t in trials
                 if t.get("train_s") is not None and t.get("overhead_s") is not None
                 and t["train_s"] + t["overhead_s"] > 0]
    train_s = sum(t["train_s"] for t in trials if t.get("train_s") is not None)
    other_s = sum(t["overhead_s"] for t in trials if t.get("overhead_s") is not None)
    worst = max(fractions, default=None)
    row = {"study": study, "trials": len(fractions), "train_s": train_s,
           "overhead_s": other_s, "median_fraction": timing.median(fractions),
           "worst_fraction": worst,
           "total_fraction": timing.ratio(other_s, train_s + other_s)}
    goal = _goal(f"(c) {study}: overhead < {limit:.0%} of every trial's time (worst trial)",
                 worst, limit, None if worst is None else worst < limit)
    return row, goal


# --- the runs -------------------------------------------------------------------------


def _search_config(cfg: BenchConfig, search: str, study_dir: Path, **extra: Any):
    from keras_effnet.search import SearchConfig

    model = cfg.search_nas_model if search == "nas" else cfg.search_scaling_model
    return SearchConfig(
        search=search, model=model, width=cfg.search_width, depth=cfg.search_depth,
        image_size=cfg.search_image_size or None, dataset=cfg.search_dataset,
        trials=cfg.search_trials, epochs=cfg.search_epochs, batch_size=cfg.search_batch,
        max_train_steps=cfg.search_max_train_steps or None, seed=cfg.seed,
        study_dir=str(study_dir), reward=cfg.search_reward,
        timing_rounds=cfg.search_timing_rounds, **extra)


def _say(message: str) -> None:
    for line in message.splitlines():
        print(f"[benchmark] search: {line}", flush=True)


def _with_seed(ctx: Any, seed: int, study_dir: Path) -> Any:
    """The study's context (same data split, same base) training with ``seed`` into
    ``study_dir``."""
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, seed=seed),
                               study_dir=str(study_dir))


def _retrain_nas(ctx: Any, result: Any, seeds: Sequence[int], work: Path
                 ) -> list[dict[str, Any]]:
    """The base and the NAS winner, one :class:`NasSearch` per seed: its timer takes the
    base's traced step as the reference, then times the winner's against it. A winner
    that is the base shares the base's run."""
    import optuna

    from keras_effnet.search.runner import NasSearch

    winner_params = result.row(result.best["trial"])["params"]
    runs = []
    for seed in seeds:
        search = NasSearch(_with_seed(ctx, seed, work / f"nas-seed{seed}"))
        trained: dict[str, dict[str, Any]] = {}
        for arm, params in (("base", search.first), ("winner", winner_params)):
            proposal = search.propose(optuna.trial.FixedTrial(params))
            if proposal.key not in trained:
                trained[proposal.key] = search.evaluate(proposal, None)
            record = trained[proposal.key]
            runs.append({"arm": arm, "seed": seed, "top1": record["top1"],
                         "step_time_ratio": record["step_time_ratio"],
                         "params_count": record["params_count"],
                         "macs": proposal.info["macs"], "reward": record["reward"],
                         "train_s": record["train_s"]})
            _say(f"NAS retraining, seed {seed}: {arm} top-1 {record['top1']:.2%}, step "
                 f"x{record['step_time_ratio']:.3f}")
    return runs


def _scaling_arms(ctx: Any, best: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """The scaling winner and the base scaled by one dimension to its MACs:
    ``[(arm record, Proposal)]``, the winner first."""
    from keras_effnet.profile import profile
    from keras_effnet.search import space as space_lib
    from keras_effnet.search.study import Proposal

    def build(coefficients: tuple[float, float, float]) -> tuple[Any, int, int, int]:
        variant, size = space_lib.scaled_variant(ctx.base, ctx.image_size, *coefficients)
        p = profile(variant, image_size=size, classes=ctx.classes)
        return variant, size, p.macs, p.params

    chosen = {"compound (the search's winner)": (best["alpha"], best["beta"],
                                                 best["gamma"])}
    target = build(chosen["compound (the search's winner)"])[2]
    for arm, of in DIMENSIONS.items():
        factor, _ = matched_factor(lambda f, of=of: build(of(f))[2], target)
        chosen[arm] = of(factor)
    out = []
    for arm, (alpha, beta, gamma) in chosen.items():
        variant, size, macs, params = build((alpha, beta, gamma))
        label = space_lib.coefficient_label(alpha, beta, gamma)
        out.append(({"arm": arm, "alpha": alpha, "beta": beta, "gamma": gamma,
                     "image_size": size, "macs": macs, "macs_ratio": macs / ctx.base_macs,
                     "params_count": params},
                    Proposal(params={"alpha": alpha, "beta": beta, "gamma": gamma},
                             variant=variant, image_size=size,
                             key=space_lib.network_key(variant, size), slug=label, info={})))
    return out


def _retrain_scaling(ctx: Any, arms: list[tuple[dict[str, Any], Any]],
                     seeds: Sequence[int], work: Path) -> list[dict[str, Any]]:
    """Every arm with every seed; an arm that rounds to a network already trained with
    that seed (the winner may itself scale one dimension) shares its run."""
    runs = []
    for seed in seeds:
        seeded = _with_seed(ctx, seed, work / f"scaling-seed{seed}")
        trained: dict[str, dict[str, Any]] = {}
        for arm, proposal in arms:
            if proposal.key not in trained:
                trained[proposal.key] = seeded.train(proposal, ctx.base.name)[2]
            record = trained[proposal.key]
            runs.append({"arm": arm["arm"], "seed": seed, "top1": record["top1"],
                         "train_s": record["train_s"]})
            _say(f"scaling retraining, seed {seed}: {arm['arm']} ({proposal.slug}, "
                 f"{proposal.image_size}px) top-1 {record['top1']:.2%}")
    return runs


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """The studies of ``search_studies``, their retrainings, the overhead, the goals."""
    from keras_effnet import search
    from keras_effnet.search.runner import prepare

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        studies, figures = {}, []
        for kind in cfg.search_studies:
            config = _search_config(cfg, kind, work / kind)
            studies[kind] = (search.run(config, log=_say), prepare(config))
            figure = studies[kind][0].files.get("figure")
            if figure:
                name = f"search_{kind}.png"
                shutil.copyfile(figure, out / name)
                figures.append(name)
        nas_runs, scaling_runs, arms = [], [], []
        if "nas" in studies:
            nas_result, nas_ctx = studies["nas"]
            nas_runs = (_retrain_nas(nas_ctx, nas_result, cfg.search_seeds,
                                     work / "retrain") if nas_result.best else [])
        if "scaling" in studies:
            scaling_result, scaling_ctx = studies["scaling"]
            arms = (_scaling_arms(scaling_ctx, scaling_result.best)
                    if scaling_result.best else [])
            scaling_runs = _retrain_scaling(scaling_ctx, arms, cfg.search_seeds,
                                            work / "retrain")
    overhead = [trial_overhead(kind, [result.row(n) for n in result.ranking])
                for kind, (result, _) in studies.items()]
    seeds = ", ".join(map(str, cfg.search_seeds))
    tables, goals = [], []
    if "nas" in studies:
        nas = summarise_nas(nas_runs, reward=cfg.search_reward,
                            base_params=nas_ctx.base_params,
                            target_macs=nas_ctx.config.target_macs or nas_ctx.base_macs)
        goals += nas["goals"]
        for row in nas["rows"]:
            row["changes"] = ("(the base)" if row["arm"] == "base" else
                              nas_result.best.get("changes") or "(the base itself)")
        tables.append(
            {"caption": f"(a) NAS around {nas_ctx.base.name} at {nas_ctx.image_size}px: "
                        f"the study's winner and the base, retrained with seeds {seeds}",
             "columns": [("arm", "arm"), ("runs", "seeds"),
                         ("median_top1", "median held-out top-1"), ("min_top1", "min top-1"),
                         ("step_time_ratio", "train-step time / base's (median)"),
                         ("params_count", "params"), ("reward", f"reward ({cfg.search_reward})"),
                         ("changes", "changes from the base")],
             "rows": nas["rows"]})
    if "scaling" in studies:
        scaling = summarise_scaling(scaling_runs, [arm for arm, _ in arms])
        goals += scaling["goals"]
        tables.append(
            {"caption": f"(b) Scaling {scaling_ctx.base.name} at {scaling_ctx.image_size}px "
                        f"to the search winner's MACs, retrained with seeds {seeds}",
             "columns": [("arm", "scaling"), ("alpha", "alpha (depth)"),
                         ("beta", "beta (width)"), ("gamma", "gamma (resolution)"),
                         ("image_size", "image"), ("macs_ratio", "MACs / base's"),
                         ("vs_winner_macs", "MACs / winner's"), ("runs", "seeds"),
                         ("median_top1", "median held-out top-1"), ("min_top1", "min top-1")],
             "rows": scaling["rows"]})
    goals += [goal for _, goal in overhead]
    tables.append(
        {"caption": "(c) Per-trial overhead of the studies (everything but the "
                    "candidate's training)",
         "columns": [("study", "study"), ("trials", "trials trained"),
                     ("train_s", "training (s)"), ("overhead_s", "everything else (s)"),
                     ("median_fraction", "median trial's share"),
                     ("worst_fraction", "worst trial's share"),
                     ("total_fraction", "share of all trials' time")],
         "rows": [row for row, _ in overhead]})
    return {
        "tables": tables,
        "goals": goals, "nas_runs": nas_runs, "scaling_runs": scaling_runs,
        "studies": {kind: {"best": result.best, "summary": result.summary,
                           "ranking": result.ranking}
                    for kind, (result, _) in studies.items()},
        "figures": figures,
        "notes": [f"keras_effnet.search on {cfg.search_dataset} (the proxy): "
                  f"{cfg.search_trials} distinct "
                  f"candidates per study (fewer when the grid has fewer), "
                  f"{cfg.search_epochs} epoch(s) each, batch {cfg.search_batch}, bases shrunk "
                  f"to width {cfg.search_width:g}, depth {cfg.search_depth:g}, study seed "
                  f"{cfg.seed}. Retrainings use seeds {seeds}, the study's data split, and "
                  "the search's own training (and, for NAS, its interleaved step timing). "
                  "Single-dimension arms: the factor (1.00-4.00 in steps of 0.01) whose "
                  "profiled MACs come closest to the winner's; widths, repeats and feature "
                  "maps round, so 'MACs / winner's' says how close each came."]
        + [_goal_line(g) for g in goals]}


def _goal_line(goal: dict[str, Any]) -> str:
    verdict = {True: "met", False: "NOT met", None: "n/a"}[goal["met"]]
    return (f"goal: {goal['goal']}: {_fmt(goal['value'])} vs {_fmt(goal['threshold'])} "
            f"-> {verdict}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


SECTION = Section("search", "8. Search: NAS winner vs base, compound vs single-dimension "
                  "scaling, per-trial overhead", cpu_only=True, run=run, display=10)
