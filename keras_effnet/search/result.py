"""A search's outputs: ``result.json``, ``table.md`` and a figure, in the study directory.

``result.json``::

    {"search": "scaling" | "nas", "best": {...}, "trials": [{"number", "params", "top1",
     "macs", "params_count", "step_time_ratio", "reward", "state", ...}, ...],
     "ranking": [trial numbers, best first], "pareto": [...], "base": {...},
     "summary": {...}, "config": {...}}

``trials`` holds every trial of the study (duplicates and failures included, each
saying so); ``ranking`` the distinct candidates with a result, by reward (top-1 for the
scaling search). The scaling ``best`` carries the coefficients
:func:`keras_effnet.profile.scale_to_macs` takes; the nas ``best`` the block strings
:func:`keras_effnet.build` takes (``arch``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from keras_effnet.run_dir import atomic_path, write_json, write_text
from keras_effnet.search import reward as reward_lib
from keras_effnet.search import space as space_lib
from keras_effnet.search.config import redacted
from keras_effnet.variants import is_arch_string

__all__ = ["SearchResult", "collect", "trial_rows", "write", "table", "summary",
           "plot_scaling", "plot_nas"]


@dataclasses.dataclass
class SearchResult:
    """What a search found, as ``result.json`` holds it."""

    search: str
    study_dir: str
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    ranking: list[int]
    pareto: list[int]
    base: dict[str, Any]
    summary: dict[str, Any]
    config: dict[str, Any]
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "files"}

    def row(self, number: int) -> dict[str, Any]:
        return next(t for t in self.trials if t["number"] == number)


def trial_rows(frozen_trials: list[Any]) -> list[dict[str, Any]]:
    """One row per trial, from what the objective recorded on it."""
    rows = []
    for t in sorted(frozen_trials, key=lambda t: t.number):
        candidate = dict(t.user_attrs.get("candidate", {}))
        result = dict(t.user_attrs.get("result") or {})
        row = {"number": t.number, "state": t.state.name,
               "params": candidate.pop("params", dict(t.params)),
               "top1": result.pop("top1", None), "macs": candidate.pop("macs", None),
               "params_count": candidate.pop("params_count", None),
               "step_time_ratio": result.pop("step_time_ratio", None),
               "reward": result.pop("reward", None)}
        row.update(candidate)
        row.update({k: v for k, v in result.items() if k not in row})
        for key in ("duplicate_of", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        if "failed_trial" in t.system_attrs:
            row["retry_of"] = t.system_attrs["retry_history"][-1]
        rows.append(row)
    return rows


def _ranking(rows: list[dict[str, Any]]) -> list[int]:
    seen, distinct = set(), []
    for row in rows:
        if row["state"] == "COMPLETE" and "duplicate_of" not in row \
                and row["key"] not in seen and row["reward"] is not None:
            seen.add(row["key"])
            distinct.append(row)
    distinct.sort(key=lambda r: (-r["reward"], r["number"]))
    return [r["number"] for r in distinct]


def _summary(rows: list[dict[str, Any]], ranking: list[int]) -> dict[str, Any]:
    trained = [r for r in rows if r["number"] in ranking and "train_s" in r]
    train_s = sum(r["train_s"] for r in trained)
    other_s = sum(r.get("overhead_s", 0.0) for r in trained)
    return {"distinct": len(ranking), "proposals": len(rows),
            "duplicates": sum("duplicate_of" in r for r in rows),
            "failed": sum(r["state"] == "FAIL" for r in rows),
            "train_s": train_s, "overhead_s": other_s,
            "overhead_fraction": other_s / (train_s + other_s) if trained else None}


def collect(study: Any, ctx: Any, search: Any) -> SearchResult:
    """The study's trials as a :class:`SearchResult` (``ctx``, ``search``: the
    :mod:`~keras_effnet.search.runner` objects that ran it)."""
    config = ctx.config
    rows = trial_rows(study.get_trials(deepcopy=False))
    ranking = _ranking(rows)
    by_number = {r["number"]: r for r in rows}
    base = {"model": config.resolved_model(), "variant": ctx.base.name,
            "width": ctx.base.width, "depth": ctx.base.depth,
            "image_size": ctx.image_size, "macs": ctx.base_macs, "params": ctx.base_params,
            "classes": ctx.classes}
    best, pareto = None, []
    if config.search == "scaling":
        # (alpha, beta, gamma, MACs ratio) of every grid point, in and out of the window.
        base["grid"] = [[c.alpha, c.beta, c.gamma, c.macs_ratio]
                        for c in search.grid.candidates]
        base["off_grid"] = [list(point) for point in search.grid.off_macs]
        if ranking:
            row = by_number[ranking[0]]
            a, b, g = (row["params"][k] for k in ("alpha", "beta", "gamma"))
            best = {"trial": row["number"], "alpha": a, "beta": b, "gamma": g,
                    "top1": row["top1"], "macs_ratio": row["macs_ratio"],
                    "flops_ratio": row["flops_ratio"], "image_size": row["image_size"],
                    "coefficients": {"alpha": a, "beta": b, "gamma": g},
                    "usage": f"scale_to_macs({config.resolved_model()!r}, target_macs, "
                             f"alpha={a}, beta={b}, gamma={g})"}
    else:
        base["arch"] = list(ctx.base.blocks)
        base_key = space_lib.network_key(ctx.base, ctx.image_size)
        base["trial"] = next((n for n in ranking if by_number[n]["key"] == base_key), None)
        points = [(by_number[n]["top1"], by_number[n]["step_time_ratio"],
                   by_number[n]["params_count"]) for n in ranking]
        pareto = [ranking[i] for i in reward_lib.pareto_front(points, (True, False, False))]
        if ranking:
            row = by_number[ranking[0]]
            model = config.resolved_model()
            base_arg = "" if is_arch_string(model) else f", base={model!r}"
            best = {"trial": row["number"], "arch": row["arch"], "top1": row["top1"],
                    "reward": row["reward"], "step_time_ratio": row["step_time_ratio"],
                    "params_count": row["params_count"], "macs": row["macs"],
                    "changes": row.get("changes", ""),
                    "usage": f"keras_effnet.build(arch={row['arch']!r}{base_arg})"}
    return SearchResult(search=config.search, study_dir=ctx.study_dir, best=best,
                        trials=rows, ranking=ranking, pareto=pareto, base=base,
                        summary=_summary(rows, ranking),
                        config={**config.to_dict(), "storage": redacted(config.storage)})


def write(result: SearchResult) -> dict[str, str]:
    """Writes result.json, table.md and the figure; returns their paths."""
    os.makedirs(result.study_dir, exist_ok=True)
    files = {"result": os.path.join(result.study_dir, "result.json"),
             "table": os.path.join(result.study_dir, "table.md"),
             "figure": os.path.join(result.study_dir, f"{result.search}.png")}
    # Each written beside its path and renamed onto it: a kill -9 leaves the last
    # complete one, never a half-written one or a table of another run's result.
    write_json(files["result"], result.to_dict())
    write_text(files["table"], table(result) + "\n")
    if result.ranking:
        with atomic_path(files["figure"]) as tmp:
            (plot_scaling if result.search == "scaling" else plot_nas)(result, tmp)
    else:
        files.pop("figure")
    result.files = files
    return files


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def table(result: SearchResult) -> str:
    """The ranked candidates as a markdown table."""
    if result.search == "scaling":
        head = ("| rank | trial | alpha | beta | gamma | α·β²·γ² | MACs ratio | width | depth "
                "| image | top-1 |")
        lines = [head, "|" + "---|" * 11]
        for rank, n in enumerate(result.ranking, 1):
            r = result.row(n)
            p = r["params"]
            lines.append(f"| {rank} | {n} | {p['alpha']:.2f} | {p['beta']:.2f} | "
                         f"{p['gamma']:.2f} | {r['flops_ratio']:.3f} | {r['macs_ratio']:.3f} "
                         f"| {r['width']:.3g} | {r['depth']:.3g} | {r['image_size']} | "
                         f"{_pct(r['top1'])} |")
        return "\n".join(lines)
    head = ("| rank | trial | top-1 | step time | params | MACs (M) | reward | Pareto "
            "| changes from the base |")
    lines = [head, "|" + "---|" * 9]
    for rank, n in enumerate(result.ranking, 1):
        r = result.row(n)
        changes = r.get("changes") or "(the base)"
        lines.append(f"| {rank} | {n} | {_pct(r['top1'])} | x{r['step_time_ratio']:.3f} | "
                     f"{r['params_count']:,} | {r['macs'] / 1e6:.1f} | {r['reward']:.4f} | "
                     f"{'yes' if n in result.pareto else ''} | {changes} |")
    return "\n".join(lines)


def summary(result: SearchResult) -> str:
    """The console summary: the table, the best candidate, the cost, the files."""
    s = result.summary
    lines = ["", table(result), ""]
    if result.best is not None:
        b = result.best
        if result.search == "scaling":
            lines.append(f"best: alpha={b['alpha']:.2f}, beta={b['beta']:.2f}, gamma="
                         f"{b['gamma']:.2f} (trial {b['trial']}, top-1 {_pct(b['top1'])}, "
                         f"MACs x{b['macs_ratio']:.3f}); {b['usage']}")
        else:
            lines.append(f"best: trial {b['trial']}, top-1 {_pct(b['top1'])}, reward "
                         f"{b['reward']:.4f}, step time x{b['step_time_ratio']:.3f}; "
                         f"{b['usage']}")
    if s["overhead_fraction"] is not None:
        lines.append(f"{s['distinct']} distinct candidates from {s['proposals']} trials "
                     f"({s['duplicates']} duplicates, {s['failed']} failed); training "
                     f"{s['train_s']:.0f}s, everything else {s['overhead_s']:.0f}s "
                     f"({s['overhead_fraction']:.1%} of the trials' time).")
    lines.append("outputs: " + ", ".join(result.files.values()))
    return "\n".join(lines)


def _figure(width: float, height: float, cols: int = 1):
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def plot_scaling(result: SearchResult, path: str) -> None:
    """Width (beta) against resolution (gamma): the grid (alpha follows from the
    constraint), the trained points coloured by top-1 and labelled with depth (alpha),
    the paper's (1.2, 1.1, 1.15) and the best marked."""
    fig, (ax,) = _figure(7, 5.5)
    off = result.base.get("off_grid", [])
    ax.scatter([p[1] for p in off], [p[2] for p in off], marker="x", s=14, c="0.8",
               label=f"grid, MACs outside ±{result.config['macs_tolerance']:.0%}")
    grid = result.base.get("grid", [])
    ax.scatter([p[1] for p in grid], [p[2] for p in grid], marker="o", s=30,
               facecolors="none", edgecolors="0.5", label="grid, in the MACs window")
    rows = [result.row(n) for n in result.ranking]
    betas = [r["params"]["beta"] for r in rows]
    gammas = [r["params"]["gamma"] for r in rows]
    dots = ax.scatter(betas, gammas, c=[r["top1"] for r in rows], cmap="viridis", s=80,
                      zorder=2)
    fig.colorbar(dots, ax=ax, label="held-out top-1")
    for r, x, y in zip(rows, betas, gammas):
        ax.annotate(f"α{r['params']['alpha']:.2f}", (x, y), textcoords="offset points",
                    xytext=(5, 5), fontsize=7)
    a, b, g = space_lib.PAPER_COEFFICIENTS
    ax.scatter([b], [g], marker="*", s=260, facecolors="none", edgecolors="red",
               linewidths=1.5, zorder=3, label=f"paper (α={a}, β={b}, γ={g})")
    if result.best:
        ax.scatter([result.best["beta"]], [result.best["gamma"]], marker="o", s=240,
                   facecolors="none", edgecolors="black", linewidths=1.5, zorder=3,
                   label=f"best (α={result.best['alpha']:.2f}, β={result.best['beta']:.2f}, "
                         f"γ={result.best['gamma']:.2f})")
    ax.set_xlabel("β (width)")
    ax.set_ylabel("γ (resolution)")
    ax.set_title(f"Compound scaling of {result.base['variant']} at "
                 f"{result.base['image_size']}px: α·β²·γ² ≈ {result.config['target_ratio']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def plot_nas(result: SearchResult, path: str) -> None:
    """Top-1 against train-step time and against parameters, the Pareto front in
    red, the base and the best marked."""
    fig, axes = _figure(11, 4.5, cols=2)
    rows = [result.row(n) for n in result.ranking]
    front = sorted((r for r in rows if r["number"] in result.pareto),
                   key=lambda r: r["step_time_ratio"])
    for ax, key, label, scale in ((axes[0], "step_time_ratio", "train-step time / base's", 1),
                                  (axes[1], "params_count", "parameters (M)", 1e6)):
        ax.scatter([r[key] / scale for r in rows], [r["top1"] for r in rows], c="0.6", s=30,
                   label="candidates")
        ax.scatter([r[key] / scale for r in front], [r["top1"] for r in front], c="red",
                   s=45, label="Pareto front (top-1, step time, params)")
        base = result.base.get("trial")
        if base is not None:
            r = result.row(base)
            ax.scatter([r[key] / scale], [r["top1"]], marker="s", s=90, facecolors="none",
                       edgecolors="black", label="base")
        if result.best:
            r = result.row(result.best["trial"])
            ax.scatter([r[key] / scale], [r["top1"]], marker="*", s=200, c="gold",
                       edgecolors="black", label="best reward", zorder=3)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out top-1")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"NAS around {result.base['variant']} at {result.base['image_size']}px "
                 f"(reward {result.config['reward']})")
    fig.tight_layout()
    fig.savefig(path)
