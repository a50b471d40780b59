"""The benchmark's search section: its scoring (pure, hand-made inputs), the arms of the
Figure 3 comparison, and the section end to end at the quick preset's tiny size."""

import dataclasses
import json
from types import SimpleNamespace

import pytest

from keras_effnet.bench import config as config_lib
from keras_effnet.bench.report import json_ready
from keras_effnet.bench.sections import search as section
from keras_effnet.errors import ConfigError


def test_matched_factor_takes_the_closest_and_the_smaller_on_a_tie():
    # MACs grow in steps (rounding): 100 up to 1.2, 180 up to 1.5, 260 beyond
    def macs_of(f):
        return 100 if f < 1.25 else 180 if f < 1.55 else 260
    assert section.matched_factor(macs_of, 200, factors=(1.0, 1.2, 1.3, 1.5, 1.6)) == \
        (1.3, 180)
    assert section.matched_factor(macs_of, 220, factors=(1.0, 1.3, 1.6)) == (1.3, 180)
    assert section.matched_factor(macs_of, 221, factors=(1.0, 1.3, 1.6)) == (1.6, 260)
    with pytest.raises(ValueError):
        section.matched_factor(macs_of, 1, factors=())


def _nas_runs(base_top1, winner_top1, winner_steps):
    return ([{"arm": "base", "seed": s, "top1": t, "step_time_ratio": 1.0,
              "params_count": 100, "macs": 200} for s, t in enumerate(base_top1)]
            + [{"arm": "winner", "seed": s, "top1": t, "step_time_ratio": r,
                "params_count": 150, "macs": 300}
               for s, (t, r) in enumerate(zip(winner_top1, winner_steps))])


def test_summarise_nas_scores_the_medians_with_the_searchs_reward():
    runs = _nas_runs([0.80, 0.82, 0.78], [0.85, 0.83, 0.84], [1.1, 1.2, 1.0])
    summary = section.summarise_nas(runs, reward="v2", base_params=100, target_macs=200)
    base, winner = summary["rows"]
    assert (base["arm"], base["runs"], base["median_top1"], base["min_top1"]) == \
        ("base", 3, 0.80, 0.78)
    assert base["reward"] == pytest.approx(0.80)  # step and params ratios 1
    assert winner["step_time_ratio"] == 1.1 and winner["params_ratio"] == 1.5
    assert winner["reward"] == pytest.approx(0.84 * 1.1 ** -0.07 * 1.5 ** -0.05)
    goals = summary["goals"]
    assert [g["met"] for g in goals] == [True, True]
    assert goals[0]["value"] == winner["reward"] and goals[0]["threshold"] == base["reward"]
    # mnas: A * (MACs / T)^-0.07
    mnas = section.summarise_nas(runs, reward="mnas", base_params=100, target_macs=200)
    assert mnas["rows"][1]["reward"] == pytest.approx(0.84 * 1.5 ** -0.07)
    # better reward, worse top-1: one goal met, the other not
    worse = section.summarise_nas(_nas_runs([0.80, 0.82, 0.78], [0.79, 0.90, 0.70],
                                            [0.5, 0.5, 0.5]),
                                  reward="v2", base_params=100, target_macs=200)
    assert [g["met"] for g in worse["goals"]] == [True, False]
    # equal top-1 is "not worse"; equal reward is not "better"
    same = section.summarise_nas(_nas_runs([0.8], [0.8], [1.0]), reward="mnas",
                                 base_params=100, target_macs=300)
    assert same["rows"][1]["reward"] < same["rows"][0]["reward"]  # more MACs
    assert [g["met"] for g in same["goals"]] == [False, True]
    assert section.summarise_nas([], reward="v2", base_params=1, target_macs=1) == \
        {"rows": [], "goals": []}


def _arm(name, a, b, g, macs):
    return {"arm": name, "alpha": a, "beta": b, "gamma": g, "image_size": 32,
            "macs": macs, "macs_ratio": macs / 100, "params_count": 10}


def test_summarise_scaling_compares_the_winner_with_each_dimension():
    arms = [_arm("compound", 1.2, 1.3, 1.0, 220), _arm("width only", 1.0, 1.48, 1.0, 230),
            _arm("depth only", 2.3, 1.0, 1.0, 210), _arm("resolution only", 1, 1, 1.03, 228)]
    top1 = {"compound": (0.6, 0.7, 0.65), "width only": (0.5, 0.66, 0.6),
            "depth only": (0.65, 0.62, 0.7), "resolution only": (0.4, 0.4, 0.4)}
    runs = [{"arm": arm, "seed": s, "top1": t} for arm, ts in top1.items()
            for s, t in enumerate(ts)]
    summary = section.summarise_scaling(runs, arms)
    rows = {r["arm"]: r for r in summary["rows"]}
    assert rows["compound"]["median_top1"] == 0.65 and rows["compound"]["min_top1"] == 0.6
    assert rows["width only"]["vs_winner_macs"] == pytest.approx(230 / 220)
    assert rows["depth only"]["median_top1"] == 0.65 and rows["depth only"]["runs"] == 3
    goals = summary["goals"]
    assert [g["met"] for g in goals] == [True, False, True]  # a tie does not beat
    assert "width only scaling's (MACs x1.05 the winner's)" in goals[0]["goal"]
    assert goals[1]["value"] == 0.65 and goals[1]["threshold"] == 0.65
    # an arm never trained: no number, no verdict
    partial = section.summarise_scaling(runs[:3], arms[:2])
    assert partial["rows"][1]["median_top1"] is None and partial["goals"][0]["met"] is None
    assert section.summarise_scaling([], []) == {"rows": [], "goals": []}


def test_trial_overhead_holds_the_worst_trial():
    trials = [{"train_s": 90.0, "overhead_s": 10.0}, {"train_s": 99.0, "overhead_s": 1.0},
              {"train_s": 95.0, "overhead_s": 5.0},
              {"train_s": None, "overhead_s": None}]  # a duplicate: nothing trained
    row, goal = section.trial_overhead("nas", trials)
    assert row["trials"] == 3 and row["train_s"] == 284.0 and row["overhead_s"] == 16.0
    assert row["median_fraction"] == pytest.approx(0.05)
    assert row["worst_fraction"] == pytest.approx(0.10)
    assert row["total_fraction"] == pytest.approx(16.0 / 300.0)
    assert goal["met"] is False and goal["threshold"] == 0.10  # 10 % is not under 10 %
    assert section.trial_overhead("nas", trials[1:])[1]["met"] is True
    empty_row, empty_goal = section.trial_overhead("scaling", [])
    assert empty_row["worst_fraction"] is None and empty_goal["met"] is None


def test_single_dimension_arms_reach_the_winners_macs():
    """B0 at width 0.5, depth 0.5, 32 px on digits (the full preset's base): each arm is
    the factor whose MACs come closest to the winner's (1.2, 1.3, 1.0)."""
    from keras_effnet.profile import profile
    from keras_effnet.variants import resolve_variant

    base = resolve_variant("efficientnet-b0", width=0.5, depth=0.5)
    ctx = SimpleNamespace(base=base, image_size=32, classes=10,
                          base_macs=profile(base, image_size=32, classes=10).macs)
    arms = section._scaling_arms(ctx, {"alpha": 1.2, "beta": 1.3, "gamma": 1.0})
    records = {arm["arm"]: arm for arm, _ in arms}
    assert list(records) == ["compound (the search's winner)", *section.DIMENSIONS]
    winner = records["compound (the search's winner)"]
    assert winner["macs_ratio"] == pytest.approx(2.196, abs=1e-3)  # the README's grid
    width, depth, res = (records[d] for d in section.DIMENSIONS)
    assert (width["alpha"], width["gamma"]) == (1.0, 1.0) and width["beta"] > 1
    assert (depth["beta"], depth["gamma"]) == (1.0, 1.0) and depth["alpha"] > 1
    assert (res["alpha"], res["beta"]) == (1.0, 1.0) and res["image_size"] > 32
    # at 32 px one more pixel already rounds every feature map up: 2.28x, the closest
    assert res["image_size"] == 33 and res["macs_ratio"] == pytest.approx(2.279, abs=1e-3)
    assert width["beta"] == 1.49 and width["macs_ratio"] == pytest.approx(2.155, abs=1e-3)
    # depth x2.00 is 1.64x the base's MACs, x2.01 (one more block per stage) 2.45x
    assert depth["alpha"] == 2.01 and depth["macs_ratio"] == pytest.approx(2.448, abs=1e-3)
    assert len({proposal.key for _, proposal in arms}) == 4


def test_search_settings_are_checked():
    cfg = config_lib.quick_config()
    for setting, field in (("search_seeds=1,1", "search_seeds"),
                           ("search_reward=flops", "search_reward"),
                           ("search_width=0", "search_width"),
                           ("search_trials=0", "search_trials"),
                           ("search_image_size=-1", "search_image_size"),
                           ("search_studies=nas,nas", "search_studies"),
                           ("search_studies=grid", "search_studies"),
                           ("search_dataset= ", "search_dataset")):
        with pytest.raises(ConfigError) as info:
            config_lib.apply_overrides(cfg, [setting])
        assert info.value.field == field
    full = config_lib.full_config()
    assert (full.search_trials, full.search_epochs, full.search_seeds) == (20, 10, (1, 2, 3))
    assert (full.search_dataset, full.search_studies) == ("digits", ("nas", "scaling"))


@pytest.mark.slow
def test_search_section_end_to_end(tmp_path):
    """The quick preset's section, one retraining seed: both studies, the retrainings,
    the overhead, the goals, the figures."""
    from keras_effnet.bench.sections.base import Context

    cfg = dataclasses.replace(config_lib.quick_config(), search_seeds=(1,))
    result = section.run(cfg, tmp_path, Context())
    nas, scaling, overhead = result["tables"]
    assert [r["arm"] for r in nas["rows"]] == ["base", "winner"]
    assert nas["rows"][0]["step_time_ratio"] == 1.0
    assert [r["arm"] for r in scaling["rows"]] == ["compound (the search's winner)",
                                                   *section.DIMENSIONS]
    assert all(r["runs"] == 1 and 0.0 <= r["median_top1"] <= 1.0 for r in scaling["rows"])
    assert [r["study"] for r in overhead["rows"]] == ["nas", "scaling"]
    assert all(r["trials"] == 2 for r in overhead["rows"])
    assert len(result["goals"]) == 2 + 3 + 2
    assert sum(note.startswith("goal: ") for note in result["notes"]) == 7
    for name in ("search_nas.png", "search_scaling.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert result["figures"] == ["search_nas.png", "search_scaling.png"]
    json.dumps(json_ready(result))  # results.json can hold it


@pytest.mark.slow
def test_search_section_runs_one_study_alone_on_another_dataset(tmp_path, monkeypatch):
    """``search_studies=scaling``: no NAS study, table or goal; the proxy is
    ``search_dataset``."""
    from keras_effnet import search
    from keras_effnet.bench.sections.base import Context

    seen = []
    real_run = search.run
    monkeypatch.setattr(search, "run", lambda config, **kw: (seen.append(
        (config.search, config.dataset)), real_run(config, **kw))[1])
    cfg = dataclasses.replace(config_lib.quick_config(), search_seeds=(1,),
                              search_studies=("scaling",), search_dataset="mnist5k",
                              search_trials=1)
    result = section.run(cfg, tmp_path, Context())
    assert seen == [("scaling", "mnist5k")]
    scaling, overhead = result["tables"]
    assert scaling["caption"].startswith("(b) Scaling")
    assert [r["study"] for r in overhead["rows"]] == ["scaling"]
    assert result["nas_runs"] == [] and list(result["studies"]) == ["scaling"]
    assert len(result["goals"]) == 3 + 1
    assert result["figures"] == ["search_scaling.png"]
    assert result["notes"][0].startswith("keras_effnet.search on mnist5k")
