"""The benchmark's transfer section: its summary (pure), its settings, and the section end
to end, tiny."""

import dataclasses
import json

import pytest

from keras_effnet.bench import config as config_lib
from keras_effnet.bench import sections as registry
from keras_effnet.bench.sections import transfer
from keras_effnet.errors import ConfigError


def _run(arm, seed, top1, steps=60, train_s=10.0, wall_s=20.0):
    return {"arm": arm, "seed": seed, "top1": top1, "steps": steps, "train_s": train_s,
            "wall_s": wall_s}


def test_summarise_gives_median_min_and_max_per_arm_in_arm_order():
    runs = [_run("scratch", 1, 0.50, train_s=8.0), _run("fine-tuned", 1, 0.90),
            _run("fine-tuned", 2, 0.80, train_s=12.0), _run("scratch", 2, 0.70),
            _run("fine-tuned", 3, 0.95, train_s=14.0), _run("scratch", 3, 0.40)]
    rows = transfer.summarise(runs)
    assert [r["arm"] for r in rows] == ["fine-tuned", "scratch"]
    tuned, scratch = rows
    assert (tuned["median_top1"], tuned["min_top1"], tuned["max_top1"]) == (0.90, 0.80, 0.95)
    assert (scratch["median_top1"], scratch["min_top1"]) == (0.50, 0.40)
    assert tuned["seeds"] == 3 and tuned["steps"] == 60
    assert tuned["train_s"] == 12.0 and scratch["train_s"] == 10.0
    # Unequal steps are shown, not hidden.
    assert transfer.summarise([_run("scratch", 1, 0.5, steps=60),
                               _run("scratch", 2, 0.5, steps=59)])[0]["steps"] == [59, 60]


def test_gains_pair_the_arms_by_seed():
    runs = [_run("fine-tuned", 1, 0.9), _run("scratch", 1, 0.6), _run("fine-tuned", 2, 0.7),
            _run("scratch", 2, 0.75), _run("fine-tuned", 3, None), _run("scratch", 3, 0.5)]
    gains = transfer.gains(runs)
    assert gains[1] == pytest.approx(0.3) and gains[2] == pytest.approx(-0.05)
    assert gains[3] is None


def test_transfer_settings_are_checked():
    quick = config_lib.quick_config()
    for change, field in [(dict(transfer_freeze="head"), "transfer_freeze"),
                          (dict(transfer_unfreeze_at_epoch=3), "transfer_unfreeze_at_epoch"),
                          (dict(transfer_freeze="bn", transfer_unfreeze_at_epoch=1),
                           "transfer_unfreeze_at_epoch"),
                          (dict(transfer_batch=26), "transfer_batch"),
                          (dict(transfer_seeds=(1, 1)), "transfer_seeds"),
                          (dict(transfer_per_class=0), "transfer_per_class")]:
        with pytest.raises(ConfigError) as error:
            dataclasses.replace(quick, **change)
        assert error.value.field == field, change
    full = config_lib.full_config()
    assert len(full.transfer_seeds) == 3 and full.transfer_freeze in ("bn", "backbone")
    assert "transfer" in registry.CPU_SECTIONS


@pytest.mark.slow
def test_tiny_transfer_section_end_to_end(tmp_path):
    cfg = config_lib.apply_overrides(config_lib.quick_config(), [
        f"transfer_model={config_lib.QUICK_SEARCH_ARCH}", "transfer_pretrain_epochs=1",
        "transfer_per_class=4", "transfer_batch=10", "transfer_epochs=2",
        "transfer_unfreeze_at_epoch=1"])
    result = transfer.run(cfg, tmp_path, registry.Context())
    json.dumps(result)  # JSON-ready
    assert [r["arm"] for r in result["rows"]] == ["fine-tuned", "scratch"]
    runs = result["runs"]
    assert {(r["arm"], r["seed"]) for r in runs} == {("fine-tuned", 1), ("scratch", 1)}
    # Equal steps: 20 labelled images, batch 10, 2 epochs; the rest of 5-9 held out.
    assert all(r["steps"] == 4 for r in runs)
    assert all(r["held_out"] > 800 and 0.0 <= r["top1"] <= 1.0 for r in runs)
    assert result["pretrain"]["steps"] == 721 // 32 and result["pretrain"]["held_out"] == 180
    assert set(result["gain_points"]) == {"1"}
    assert "freeze=backbone" in result["notes"][1] and "from epoch 2" in result["notes"][1]
