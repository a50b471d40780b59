"""The benchmark's main_job section: its scoring (pure) and the section end to end, tiny."""

import dataclasses
import json

import pytest

from keras_effnet.bench import config as config_lib
from keras_effnet.bench.sections import main_job


def _run(arm, seed, seconds, accuracy, sizes=(64,)):
    return {"arm": arm, "seed": seed, "seconds": seconds, "accuracy": accuracy,
            "final_top1": accuracy[-1], "train_s": seconds[-1], "sizes": list(sizes)}


def test_summarise_scores_arms_against_the_fixed_median():
    runs = [_run("progressive", 0, [10, 20, 30], [0.5, 0.97, 0.99]),
            _run("progressive", 1, [10, 20, 30], [0.6, 0.90, 0.985]),
            _run("fixed", 0, [20, 40, 60], [0.5, 0.9, 0.985]),
            _run("fixed", 1, [20, 40, 60], [0.5, 0.985, 0.99]),
            _run("keras.applications", 0, [30, 60, 90], [0.2, 0.5, 0.9]),
            _run("keras.applications", 1, [30, 60, 90], [0.2, 0.5, 0.95])]
    classical = [{"arm": "SVC (RBF)", "params": {"C": 10}, "final_top1": 0.99,
                  "train_s": 0.5},
                 {"arm": "logistic regression", "params": {}, "final_top1": 0.96,
                  "train_s": 0.1}]
    summary = main_job.summarise(runs, classical, tolerance=0.005)
    assert summary["target"] == pytest.approx(0.9875 - 0.005)
    # a run that never reached the target: half or more never -> the median is "never"
    late = main_job.summarise(runs[:1] + [_run("progressive", 1, [10], [0.5])] + runs[2:4],
                              [], tolerance=0.005)
    assert late["rows"][0]["time_to_target_s"] is None
    rows = {r["arm"]: r for r in summary["rows"]}
    # progressive: 0.99 at 30 s (seed 0), 0.985 at 30 s (seed 1) -> median 30 s
    assert rows["progressive"]["time_to_target_s"] == 30
    assert rows["progressive"]["median_top1"] == pytest.approx(0.9875)
    assert rows["progressive"]["min_top1"] == pytest.approx(0.985)
    # fixed: 60 s (seed 0), 40 s (seed 1) -> 50 s; 2 of 2 reached
    assert rows["fixed"]["time_to_target_s"] == 50 and rows["fixed"]["reached"] == "2/2"
    assert rows["fixed"]["speedup"] == pytest.approx(50 / 30)
    # keras.applications never reached 0.9825: its median is "never"
    assert rows["keras.applications"]["time_to_target_s"] is None
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["(a) median top-1 >= the best classical baseline"]["met"] is False
    assert goals["(a) median top-1 >= 98.5 %"]["met"] is True
    assert goals["(a) min top-1 >= 97.5 %"]["met"] is True
    assert goals["(a) median top-1 >= (b)'s"]["met"] is True  # 0.9875, equal
    assert goals["(a) reaches the target >= 1.5x sooner than fixed"]["met"] is True
    assert goals["(a) reaches the target >= 1.5x sooner than keras.applications"]["value"] \
        == float("inf")


def test_classical_baselines_use_the_training_split_only():
    from keras_effnet.data.digits import DigitsSource
    split = DigitsSource().split_pixels()
    assert len(split[0]) == 1438 and len(split[2]) == 359
    assert split[0].shape[1:] == (8, 8) and split[0].max() == pytest.approx(255.0)
    rows = main_job.classical_baselines(split)
    svc, logistic = rows
    assert svc["arm"] == "SVC (RBF)" and set(svc["params"]) == {"C", "gamma"}
    assert 0.95 < svc["final_top1"] <= 1.0 and 0.9 < logistic["final_top1"] < 1.0


def test_the_section_follows_the_main_jobs_dataset():
    cfg = config_lib.BenchConfig()
    assert main_job.main_job_dataset(cfg) == "mnist5k"  # the trainer's default
    assert main_job.main_job_dataset(config_lib.quick_config()) == "digits"
    named = dataclasses.replace(cfg, main_job_flags=("--dataset=digits", "--dataset=mnist5k"))
    assert main_job.main_job_dataset(named) == "mnist5k"  # the last one, as absl reads it


@pytest.mark.slow
def test_main_job_section_end_to_end(tmp_path):
    """The quick preset's section: both main-job arms as real scripts/train.py processes,
    keras.applications + fit, scikit-learn, and the main job exactly (exporting)."""
    from keras_effnet.bench.sections.base import Context
    cfg = dataclasses.replace(config_lib.quick_config(), main_job_epochs=2)
    result = main_job.run(cfg, tmp_path, Context())
    arms = [r["arm"] for r in result["rows"]]
    assert arms == ["progressive", "fixed", "keras.applications", "SVC (RBF)",
                    "logistic regression"]
    assert [r["arm"] for r in result["runs"]] == [
        "progressive", "fixed", "keras.applications", "main job"]
    progressive, fixed, _, exact = result["runs"]
    # 2 stages on the digits' default (paper) schedule: 16 px, then 32 px
    assert progressive["sizes"] == exact["sizes"] == [16, 32]
    # The arms evaluate every epoch, for the curve; the main job run as is evaluates every
    # 2 epochs on the embedded sets, then exports, and stays out of (a)'s row.
    assert progressive["evaluated_epochs"] == fixed["evaluated_epochs"] == [1, 2]
    assert not progressive["exported"] and not fixed["exported"]
    assert exact["exported"] and exact["wall_s"] > 0 and exact["evaluated_epochs"] == [2]
    assert result["rows"][0]["runs"] == 1
    # the same seed trains the same way, evaluated less often
    assert exact["final_top1"] == pytest.approx(progressive["final_top1"], abs=0.02)
    goal = next(g for g in result["goals"] if g["goal"].startswith("train + export"))
    assert goal["value"] == exact["wall_s"]
    note = next(n for n in result["notes"] if n.startswith("the main job exactly"))
    assert "evaluated every 2 epoch(s)" in note and "the same seed in (a)" in note
    assert (tmp_path / "main_job.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(result, default=str)  # results.json can hold it


def test_keras_applications_seeds_are_some_of_the_main_jobs():
    from keras_effnet.errors import ConfigError
    assert config_lib.BenchConfig(main_job_apps_seeds=(0,)).main_job_apps_seeds == (0,)
    cfg = config_lib.apply_overrides(config_lib.BenchConfig(), ["main_job_apps_seeds=0,2"])
    assert cfg.main_job_apps_seeds == (0, 2)
    with pytest.raises(ConfigError, match="main_job_apps_seeds must be some of"):
        config_lib.BenchConfig(main_job_apps_seeds=(5,))
