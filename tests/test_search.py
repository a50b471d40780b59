"""keras_effnet.search, the pure parts: the constrained grid, the NAS space and its
encoding to and from block strings, network identity, rewards, the config, result.json."""

import dataclasses
import itertools
import json
import random
from types import SimpleNamespace

import pytest

from keras_effnet import cli, spec
from keras_effnet.errors import ConfigError
from keras_effnet.profile import profile
from keras_effnet.search import SearchConfig, reward, space
from keras_effnet.search import result as result_lib
from keras_effnet.search.config import redacted
from keras_effnet.variants import resolve_variant

V2_B0 = ("r1_k3_s1_e1_i32_o16_f", "r2_k3_s2_e4_i16_o32_f", "r2_k3_s2_e4_i32_o48_f",
         "r3_k3_s2_e4_i48_o96_se0.25", "r5_k3_s1_e6_i96_o112_se0.25",
         "r8_k3_s2_e6_i112_o192_se0.25")


# --- the scaling grid -----------------------------------------------------------------

def test_flops_ratio_counts_width_and_resolution_twice():
    assert space.flops_ratio(1.2, 1.1, 1.15) == pytest.approx(1.2 * 1.21 * 1.3225)
    assert space.flops_ratio(1.2, 1.1, 1.15) == pytest.approx(1.92027)
    assert space.flops_ratio(2.0, 1.0, 1.0) == 2.0


def test_coefficient_grid_by_hand():
    # target 1.1 +- 5 % = [1.045, 1.155]: by hand, alpha alone 1.05, 1.1, 1.15 (1.0 is
    # too little); beta or gamma alone 1.05 (1.1025); 1.05 * 1.05^2 = 1.158 is over.
    assert space.coefficient_grid(1.1, 0.05, 0.05) == [
        (1.0, 1.0, 1.05), (1.0, 1.05, 1.0), (1.05, 1.0, 1.0), (1.1, 1.0, 1.0),
        (1.15, 1.0, 1.0)]


def test_default_grid_holds_the_papers_point_and_only_valid_points():
    grid = space.coefficient_grid(2.0, 0.05, 0.05)
    assert len(grid) == 111
    assert (1.2, 1.1, 1.15) in grid
    assert (2.0, 1.0, 1.0) in grid and (1.0, 1.0, 1.4) in grid  # one dimension alone
    for a, b, g in grid:
        assert min(a, b, g) >= 1.0
        assert 1.9 - 1e-9 <= a * b * b * g * g <= 2.1 + 1e-9
        for value in (a, b, g):  # on the grid, no float residue
            assert round(value, 2) == value
    # Every grid point in range that satisfies the constraint is there.
    steps = [round(1 + 0.05 * k, 2) for k in range(30)]
    expected = [(a, b, g) for a, b, g in itertools.product(steps, repeat=3)
                if 1.9 - 1e-9 <= a * b * b * g * g <= 2.1 + 1e-9]
    assert sorted(grid) == sorted(expected)


def test_coefficient_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target_ratio must be a finite number > 1"):
        space.coefficient_grid(1.0)


@pytest.mark.parametrize("target_ratio,step,tolerance,size", [
    (float("inf"), 0.05, 0.05, "finite number"),  # looped forever, memory growing
    (1e12, 0.05, 0.05, "has more than 10,000 points"),
    (2.0, 1e-9, 0.05, "has more than 10,000 points"),
    (2.0, 0.002, 0.05, "has more than 10,000 points"),  # 1.2 M points: 45 min profiling
    (2.0, 1e-6, 1e-12, "takes walking more than 40,000 points"),  # few kept, many walked
])
def test_a_huge_grid_is_refused_before_it_is_walked(target_ratio, step, tolerance, size):
    with pytest.raises(ValueError, match=size):
        space.coefficient_grid(target_ratio, step, tolerance)
    field = "target_ratio" if size == "finite number" else "grid_step"
    config = SearchConfig(target_ratio=target_ratio, grid_step=step,
                          ratio_tolerance=tolerance)
    with pytest.raises(ConfigError, match=size) as info:
        config.validate()
    assert info.value.field == field
    SearchConfig(search="nas", target_ratio=1e12, grid_step=1e-9).validate()  # unused


def test_grid_points_past_the_block_limit_are_left_out():
    # depth 60: the base has 960 blocks, alpha 1.05 would give 1,008 (MAX_BLOCKS 1,000).
    base = resolve_variant("efficientnet-b0", width=0.25, depth=60)
    grid = space.scaling_grid(base, 16, 10)
    assert grid.too_large and all(a > 1.0 for a, _, _ in grid.too_large)
    assert grid.candidates and all(c.alpha == 1.0 for c in grid.candidates)
    assert len(grid.candidates) + len(grid.off_macs) + len(grid.too_large) == 111


def test_scaled_variant_multiplies_the_base_and_rounds_the_size():
    base = resolve_variant("efficientnet-b0", width=0.5, depth=0.5)
    variant, size = space.scaled_variant(base, 32, 1.2, 1.1, 1.15)
    assert (variant.width, variant.depth) == (pytest.approx(0.55), pytest.approx(0.6))
    assert size == 37  # round(32 * 1.15 = 36.8)
    assert space.scaled_variant(base, 16, 1.0, 1.0, 1.15)[1] == 18  # 18.4


TINY = dict(width=0.25, depth=0.25)


def test_scaling_grid_keeps_candidates_within_the_macs_tolerance():
    base = resolve_variant("efficientnet-b0", **TINY)
    grid = space.scaling_grid(base, 16, 10)
    assert grid.base_macs == profile(base, image_size=16, classes=10).macs
    assert len(grid.candidates) == 51 and len(grid.off_macs) == 60  # of the 111
    for c in grid.candidates:
        assert abs(c.macs_ratio - 2.0) <= 0.2 + 1e-9
        assert c.macs == profile(c.variant, image_size=c.image_size, classes=10).macs
        assert c.macs_ratio == pytest.approx(c.macs / grid.base_macs)
        assert c.flops_ratio == pytest.approx(space.flops_ratio(c.alpha, c.beta, c.gamma))
    for *_, ratio in grid.off_macs:
        assert abs(ratio - 2.0) > 0.2
    assert "a1.20_b1.10_g1.15" in grid.by_label()


def test_grid_points_that_round_to_one_network_share_a_key():
    base = resolve_variant("efficientnet-b0", **TINY)
    grid = space.scaling_grid(base, 16, 10)
    by_key = {}
    for c in grid.candidates:
        by_key.setdefault(c.key, []).append(c)
    assert len(by_key) == 22  # 51 grid points, 22 distinct networks
    twins = next(group for group in by_key.values() if len(group) > 1)
    a, b = twins[0], twins[1]
    assert (a.alpha, a.beta, a.gamma) != (b.alpha, b.beta, b.gamma)
    assert a.variant.scaled_blocks() == b.variant.scaled_blocks()
    assert (a.variant.stem(), a.variant.head(), a.image_size) == \
        (b.variant.stem(), b.variant.head(), b.image_size)
    # Any difference in the network, or its resolution, is another key.
    assert space.network_key(a.variant, a.image_size) != \
        space.network_key(a.variant, a.image_size + 1)
    other = next(c for c in grid.candidates if c.key != a.key)
    assert other.variant.scaled_blocks() != a.variant.scaled_blocks() or \
        other.image_size != a.image_size or other.variant.head() != a.variant.head()


# --- the NAS space ----------------------------------------------------------------------

def test_the_nas_space_around_a_base_without_squeeze_excite_has_none():
    lite = list(resolve_variant("efficientnet-lite0").blocks)
    params = space.params_from_arch(lite, lite)  # the base is in its own space
    assert space.arch_from_params(params, lite) == lite
    mbconv = {**params, "stage2_block": "mbconv", "stage1_block": "fused"}
    assert all("_se" not in b for b in space.arch_from_params(mbconv, lite))

def test_nas_space_per_stage():
    s = space.nas_space(V2_B0)
    assert len(s) == 24
    assert s["stage1_block"] == ("mbconv", "fused")
    assert s["stage4_kernel"] == (3, 5) and s["stage4_expand"] == (1, 4, 6)
    assert s["stage1_repeats"] == (0, 1)  # a one-block stage keeps its block
    assert s["stage6_repeats"] == (-1, 0, 1)
    # The base's own values are always choices.
    assert space.nas_space(["r2_k7_s2_e3_i16_o24"])["stage1_kernel"] == (3, 5, 7)
    assert space.nas_space(["r2_k7_s2_e3_i16_o24"])["stage1_expand"] == (1, 3, 4, 6)


def test_base_params_encode_back_to_the_base():
    params = space.params_from_arch(V2_B0, V2_B0)
    assert params["stage1_block"] == "fused" and params["stage4_block"] == "mbconv"
    assert params["stage5_expand"] == 6 and params["stage6_repeats"] == 0
    assert space.arch_from_params(params, V2_B0) == list(V2_B0)


def test_arch_from_params_by_hand():
    params = space.params_from_arch(V2_B0, V2_B0)
    params.update(stage2_block="mbconv", stage2_kernel=5, stage4_block="fused",
                  stage4_expand=1, stage4_repeats=1, stage6_repeats=-1)
    arch = space.arch_from_params(params, V2_B0)
    # MBConv gains squeeze-excite (0.25), Fused-MBConv loses it; channels and strides
    # are the base's.
    assert arch == ["r1_k3_s1_e1_i32_o16_f", "r2_k5_s2_e4_i16_o32_se0.25",
                    "r2_k3_s2_e4_i32_o48_f", "r4_k3_s2_e1_i48_o96_f",
                    "r5_k3_s1_e6_i96_o112_se0.25", "r7_k3_s2_e6_i112_o192_se0.25"]
    assert space.params_from_arch(arch, V2_B0) == params


def test_every_sampled_candidate_round_trips_through_block_strings():
    s = space.nas_space(V2_B0)
    rng = random.Random(0)
    for _ in range(200):
        params = {name: rng.choice(choices) for name, choices in s.items()}
        arch = space.arch_from_params(params, V2_B0)
        assert [spec.format(b) for b in spec.parse_arch(arch)] == arch  # canonical
        assert space.params_from_arch(arch, V2_B0) == params


@pytest.mark.parametrize("arch,match", [
    (V2_B0[:5], "arch has 5 stages, the base 6"),
    (("r1_k3_s1_e1_i32_o24_f",) + V2_B0[1:], "not in the search space"),  # channels
    (("r1_k3_s2_e1_i32_o16_f",) + V2_B0[1:], "not in the search space"),  # stride
    (("r1_k3_s1_e1_i32_o16_se0.25_f",) + V2_B0[1:], "not in the search space"),  # SE
    (("r3_k3_s1_e1_i32_o16_f",) + V2_B0[1:], "not in the search space"),  # repeats +2
    (("r1_k7_s1_e1_i32_o16_f",) + V2_B0[1:], "not in the search space"),  # kernel 7
])
def test_params_from_arch_refuses_what_is_not_in_the_space(arch, match):
    with pytest.raises(ValueError, match=match):
        space.params_from_arch(arch, V2_B0)


def test_arch_from_params_checks_choices():
    params = space.params_from_arch(V2_B0, V2_B0)
    with pytest.raises(ValueError, match=r"stage1_repeats must be one of \(0, 1\)"):
        space.arch_from_params({**params, "stage1_repeats": -1}, V2_B0)
    del params["stage3_kernel"]
    with pytest.raises(ValueError, match="params lack 'stage3_kernel'"):
        space.arch_from_params(params, V2_B0)


def test_nas_variant_keeps_the_bases_rules():
    base = resolve_variant("efficientnetv2-b0", width=0.5, depth=0.5)
    arch = [b.replace("_f", "_se0.25") for b in V2_B0]  # no fused block left
    variant = space.nas_variant(base, arch)
    assert variant.blocks == tuple(arch)
    assert (variant.rounding, variant.bn_momentum, variant.width) == ("v2", 0.9, 0.5)
    # The same blocks as the base: the same network, the same key.
    assert space.network_key(space.nas_variant(base, list(V2_B0)), 32) == \
        space.network_key(base, 32)


# --- rewards --------------------------------------------------------------------------

def test_v2_reward_by_hand():
    # 0.8 * 1.25^-0.07 * 0.5^-0.05 = 0.8 * exp(-0.07 * 0.2231436) * exp(0.05 * 0.6931472)
    #                              = 0.8 * 0.9845013 * 1.0352649 = 0.8 * 1.0192197
    assert reward.v2_reward(0.8, 1.25, 0.5) == pytest.approx(0.8153758, abs=1e-6)
    assert reward.v2_reward(0.8, 1.0, 1.0) == 0.8  # the base's reward is its top-1
    # Twice as slow costs 2^-0.07 = 0.952638 of the accuracy.
    assert reward.v2_reward(1.0, 2.0, 1.0) == pytest.approx(0.952638, abs=1e-6)


def test_mnas_reward_by_hand():
    # 0.9 * 2^-0.07 = 0.857374; at the target, the accuracy itself.
    assert reward.mnas_reward(0.9, 2e6, 1e6) == pytest.approx(0.857374, abs=1e-6)
    assert reward.mnas_reward(0.9, 1e6, 1e6) == 0.9
    assert reward.mnas_reward(0.9, 5e5, 1e6) == pytest.approx(0.9 * 2 ** 0.07)


def test_rewards_refuse_non_positive_costs():
    with pytest.raises(ValueError, match="step_time_ratio must be > 0"):
        reward.v2_reward(0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="target_macs must be > 0"):
        reward.mnas_reward(0.5, 1.0, 0.0)


def test_pareto_front_by_hand():
    # (top-1 up, step time down, params down)
    points = [(0.90, 1.0, 100), (0.85, 0.8, 100), (0.80, 0.9, 120), (0.90, 1.0, 100),
              (0.95, 1.5, 300), (0.70, 0.8, 100)]
    # 2 is dominated by 1; 5 by 1 (same time and params, lower top-1); 0 and 3 are equal.
    assert reward.pareto_front(points, (True, False, False)) == [0, 1, 3, 4]
    assert reward.pareto_front([], (True,)) == []
    with pytest.raises(ValueError, match="every point needs 2 objectives"):
        reward.pareto_front([(1.0,)], (True, False))


# --- the config -----------------------------------------------------------------------

def test_defaults_resolve_per_search():
    scaling, nas = SearchConfig(), SearchConfig(search="nas")
    assert scaling.resolved_model() == "efficientnet-b0"
    assert nas.resolved_model() == "efficientnetv2-b0"
    assert (scaling.resolved_sampler(), nas.resolved_sampler()) == ("grid", "tpe")
    assert scaling.resolved_study_dir() == "search_runs/scaling_efficientnet-b0_digits"
    assert nas.study_name() == "nas_efficientnetv2-b0_digits"
    assert SearchConfig(model=",".join(V2_B0)).resolved_study_dir() == \
        "search_runs/scaling_custom_digits"
    # the embedded sets: 64 px, the smallest size with a 2x2 final feature map
    assert scaling.resolved_image_size(224) == 64  # digits
    assert SearchConfig(dataset="mnist5k").resolved_image_size(224) == 64
    assert SearchConfig(dataset="folder").resolved_image_size(224) == 224
    assert SearchConfig(image_size=48).resolved_image_size(224) == 48


@pytest.mark.parametrize("fields,field,match", [
    (dict(search="grid"), "search", "search must be one of"),
    (dict(trials=0), "trials", "trials must be an integer >= 1. Received: trials=0"),
    (dict(epochs=1.5), "epochs", "epochs must be an integer >= 1"),
    (dict(width=0.0), "width", "width must be > 0"),
    (dict(target_ratio=1.0), "target_ratio", "target_ratio must be a finite number > 1"),
    (dict(image_size=1), "image_size", "image_size must be an integer >= 2"),
    (dict(grid_step=0.0), "grid_step", r"grid_step must be in \(0, 1\)"),
    (dict(macs_tolerance=1.5), "macs_tolerance", "macs_tolerance must be in"),
    (dict(sampler="tpe"), "sampler", "sampler 'tpe' does not apply to search='scaling'"),
    (dict(search="nas", sampler="grid"), "sampler", "does not apply to search='nas'"),
    (dict(reward="flops"), "reward", "reward must be one of"),
    (dict(model="efficientnet-b9"), "model", "Unknown model 'efficientnet-b9'"),
    (dict(dataset="folder"), "data_dir", "dataset='folder' needs data_dir"),
])
def test_mistakes_name_their_field(fields, field, match):
    with pytest.raises(ConfigError, match=match) as info:
        SearchConfig(**fields).check_request()
    assert info.value.field == field


def test_every_option_is_a_flag_and_errors_name_it():
    flagset = cli.FlagSet(SearchConfig)
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    assert set(flagset.fields) == names
    error = ConfigError("grid_step must be in (0, 1).", "grid_step")
    assert cli.describe(error, [flagset]) == "--grid_step: grid_step must be in (0, 1)."


def test_identity_holds_the_resolved_defaults():
    identity = SearchConfig(search="nas").identity()
    assert identity["model"] == "efficientnetv2-b0" and identity["sampler"] == "tpe"
    assert "trials" not in identity and "storage" not in identity  # may change on rerun


# --- result.json ------------------------------------------------------------------------

def _frozen(number, state="COMPLETE", candidate=None, result=None, **attrs):
    import optuna
    trial = optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state),
        value=result["reward"] if state == "COMPLETE" else None,
        user_attrs={k: v for k, v in dict(candidate=candidate, result=result,
                                           **attrs).items() if v is not None})
    trial.number = number
    return trial


def _nas_trials():
    def cand(key, params_count, changes=""):
        return {"key": key, "params": {"stage1_block": "fused"}, "image_size": 16,
                "macs": params_count * 2, "params_count": params_count,
                "arch": list(V2_B0), "changes": changes, "params_ratio": 1.0}

    def res(top1, ratio):
        return {"top1": top1, "step_time_ratio": ratio, "train_s": 10.0,
                "overhead_s": 0.5, "reward": reward.v2_reward(top1, ratio, 1.0)}
    return [_frozen(0, candidate=cand("base", 100), result=res(0.80, 1.0)),
            _frozen(1, candidate=cand("b", 90, "s1:mbconv"), result=res(0.85, 1.1)),
            _frozen(2, candidate=cand("base", 100), result=res(0.80, 1.0),
                    duplicate_of=0),
            _frozen(3, "FAIL", candidate=cand("c", 80), error="Loss became nan"),
            _frozen(4, candidate=cand("d", 120, "s6:r+1"), result=res(0.70, 1.2))]


def test_result_json_of_a_nas_study(tmp_path):
    base = resolve_variant("efficientnetv2-b0", width=0.25, depth=0.25)
    config = SearchConfig(search="nas", study_dir=str(tmp_path))
    ctx = SimpleNamespace(config=config, base=base, image_size=16, base_macs=200,
                          base_params=100, classes=10, study_dir=str(tmp_path))
    study = SimpleNamespace(get_trials=lambda deepcopy=False: _nas_trials())
    result = result_lib.collect(study, ctx, SimpleNamespace())
    assert result.ranking == [1, 0, 4]  # by reward; the duplicate and the failure left out
    assert result.pareto == [1, 0]  # 4 is slower, larger and less accurate than 0
    assert result.best["trial"] == 1 and result.best["arch"] == list(V2_B0)
    assert "base='efficientnetv2-b0'" in result.best["usage"]
    assert result.summary["duplicates"] == 1 and result.summary["failed"] == 1
    assert result.summary["overhead_fraction"] == pytest.approx(1.5 / 31.5)
    files = result_lib.write(result)
    data = json.load(open(files["result"]))
    assert set(data) >= {"search", "best", "trials"} and data["search"] == "nas"
    for row in data["trials"]:
        assert set(row) >= {"number", "params", "top1", "macs", "params_count",
                            "step_time_ratio", "reward", "state"}
    assert data["trials"][2]["duplicate_of"] == 0
    assert data["trials"][3]["state"] == "FAIL" and "nan" in data["trials"][3]["error"]
    table = open(files["table"]).read()
    assert "| 1 | 1 | 85.00% | x1.100 | 90 |" in table and "(the base)" in table
    assert open(files["figure"], "rb").read(4) == b"\x89PNG"


def test_result_json_hides_an_rdb_password():
    assert redacted("postgresql://me:secret@db:5432/optuna") == \
        "postgresql://me:***@db:5432/optuna"
    assert redacted("sqlite:///study.db") == "sqlite:///study.db"
    assert redacted(None) is None


def test_result_json_of_a_scaling_study(tmp_path):
    base = resolve_variant("efficientnet-b0", **TINY)
    grid = space.scaling_grid(base, 16, 10)
    config = SearchConfig(study_dir=str(tmp_path), **TINY)
    ctx = SimpleNamespace(config=config, base=base, image_size=16, base_macs=grid.base_macs,
                          base_params=grid.base_params, classes=10, study_dir=str(tmp_path))
    trials = []
    for number, (label, top1) in enumerate([("a1.20_b1.10_g1.15", 0.5),
                                            ("a1.05_b1.20_g1.15", 0.6)]):
        c = grid.by_label()[label]
        candidate = {"key": c.key, "params": c.params_dict(), "image_size": c.image_size,
                     "macs": c.macs, "params_count": c.params, "macs_ratio": c.macs_ratio,
                     "flops_ratio": c.flops_ratio, "width": c.variant.width,
                     "depth": c.variant.depth}
        trials.append(_frozen(number, candidate=candidate,
                              result={"top1": top1, "reward": top1, "train_s": 1.0}))
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials)
    result = result_lib.collect(study, ctx, SimpleNamespace(grid=grid))
    assert result.ranking == [1, 0] and result.pareto == []
    assert result.best["coefficients"] == {"alpha": 1.05, "beta": 1.2, "gamma": 1.15}
    assert result.best["usage"] == ("scale_to_macs('efficientnet-b0', target_macs, "
                                    "alpha=1.05, beta=1.2, gamma=1.15)")
    assert len(result.base["grid"]) == 51 and len(result.base["off_grid"]) == 60
    files = result_lib.write(result)
    assert "| 1 | 1 | 1.05 | 1.20 | 1.15 | 2.000 |" in open(files["table"]).read()
    assert open(files["figure"], "rb").read(4) == b"\x89PNG"
