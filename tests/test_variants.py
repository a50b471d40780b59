"""The variant table: names, rows, lookups, custom architectures."""

import dataclasses

import pytest

from keras_effnet.variants import VARIANTS, Variant, custom_variant, get_variant, list_models

EXPECTED_NAMES = (
    [f"efficientnet-b{i}" for i in range(9)] + ["efficientnet-l2"]
    + [f"efficientnet-lite{i}" for i in range(5)]
    + [f"efficientnetv2-b{i}" for i in range(4)]
    + [f"efficientnetv2-{s}" for s in ("s", "m", "l", "xl")])


def test_list_models_names_every_variant_as_automl_writes_them():
    assert list_models() == EXPECTED_NAMES


@pytest.mark.parametrize("name, blocks", [
    ("efficientnet-b0", 16), ("efficientnetv2-b0", 21), ("efficientnetv2-s", 40),
    ("efficientnetv2-m", 57), ("efficientnetv2-l", 79), ("efficientnetv2-xl", 100),
])
def test_block_counts_after_depth_scaling(name, blocks):
    assert len(get_variant(name).scaled_blocks()) == blocks


def test_rows_hold_the_reference_values():
    s = get_variant("efficientnetv2-s")
    assert (s.width, s.depth, s.train_size, s.eval_size, s.dropout, s.randaug_magnitude,
            s.mixup_alpha, s.rounding, s.preprocessing) == \
        (1.0, 1.0, 300, 384, 0.2, 10, 0.0, "v2", "symmetric")
    b3 = get_variant("efficientnet-b3")
    assert (b3.width, b3.depth, b3.eval_size, b3.dropout, b3.rounding) == \
        (1.2, 1.4, 300, 0.3, "v1")
    lite4 = get_variant("efficientnet-lite4")
    assert (lite4.activation, lite4.use_se, lite4.fix_stem_head, lite4.preprocessing) == \
        ("relu6", False, True, "lite")
    assert lite4.stem() == 32 and lite4.head() == 1280
    assert get_variant("efficientnet-b4").head() == 1792
    assert get_variant("efficientnetv2-b0").preprocessing == "imagenet"
    l2 = get_variant("efficientnetv2-l")
    assert (l2.mixup_alpha, l2.cutmix_alpha, l2.randaug_magnitude, l2.dropout) == \
        (0.5, 0.5, 20, 0.4)


def test_lite_keeps_first_and_last_stage_repeats():
    stages = [b.stage for b in get_variant("efficientnet-lite4").scaled_blocks()]
    assert stages.count(1) == 1 and stages.count(7) == 1
    assert stages.count(6) == 8  # ceil(4 * 1.8)


def test_drop_path_rate_grows_linearly_over_scaled_blocks():
    v = get_variant("efficientnetv2-b3")
    rates = v.drop_path_rates()
    total = len(v.scaled_blocks())
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.2 * (total - 1) / total)  # automl rule: < 0.2
    assert all(b > a for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("query", ["EfficientNetV2-S", "efficientnetv2_s", " efficientnetv2-s "])
def test_lookup_is_forgiving_about_case_and_separators(query):
    assert get_variant(query) is VARIANTS["efficientnetv2-s"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="Did you mean efficientnetv2-s"):
        get_variant("efficientnetv2-ss")


def test_to_dict_from_dict_round_trip_holds_every_field():
    v = get_variant("efficientnetv2-m").replace(dropout=0.35, width=1.3)
    d = v.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Variant)}
    assert Variant.from_dict(d) == v
    with pytest.raises(ValueError, match="Unknown Variant field"):
        Variant.from_dict({**d, "colour": "red"})


@pytest.mark.parametrize("field, value", [("dropout", 1.0), ("width", 0), ("rounding", "v3"),
                                          ("preprocessing", "bgr"), ("blocks", ["r1_k2"])])
def test_bad_rows_are_refused(field, value):
    with pytest.raises(ValueError):
        get_variant("efficientnet-b0").replace(**{field: value})


def test_custom_variant_inherits_from_a_base():
    fused = custom_variant(["r1_k3_s1_e1_i16_o16_f", "r2_k3_s2_e4_i16_o32_se0.25"])
    assert fused.rounding == "v2" and fused.family == "custom"
    plain = custom_variant("r1_k3_s1_e1_i32_o16_se0.25", width=1.2)
    assert plain.rounding == "v1" and plain.width == 1.2
    lite = custom_variant("r1_k3_s1_e1_i32_o16", base="efficientnet-lite0")
    assert lite.activation == "relu6"
