"""Scaling maths against hand-computed numbers."""

import math

import pytest

from keras_effnet.scaling import compound, expand_stages, round_filters, round_repeats
from keras_effnet.spec import parse


@pytest.mark.parametrize("filters, width, rule, expected", [
    (32, 1.0, "v1", 32), (32, 1.1, "v1", 32),   # 35.2 -> int(39.2)//8*8 = 32 (>= 0.9*35.2)
    (16, 1.2, "v1", 24),                         # 19.2 -> 16 < 17.28 -> bumped to 24
    (16, 1.2, "v2", 16),                         # automl: no 10 % guard
    (1280, 1.4, "v1", 1792), (1280, 2.0, "v1", 2560), (40, 1.1, "v1", 48),
    (320, 4.3, "v1", 1376),                      # L2: 1376.0 exactly
    (24, 1.1, "v2", 24),                         # 26.4 -> int(30.4)//8*8 = 24
    (4, 1.0, "v1", 8), (1, 0.5, "v2", 8),        # never below the divisor
])
def test_round_filters(filters, width, rule, expected):
    assert round_filters(filters, width, rule=rule) == expected


def test_round_filters_half_rounds_up():
    assert round_filters(12, 1.0, rule="v2") == 16  # 12 + 4 = 16 -> 16
    assert round_filters(11, 1.0, rule="v2") == 8


def test_round_filters_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        round_filters(32, 1.0, rule="v3")
    with pytest.raises(ValueError, match="width"):
        round_filters(32, 0.0)


@pytest.mark.parametrize("repeats, depth, expected", [
    (1, 1.0, 1), (2, 1.1, 3), (4, 1.8, 8), (3, 3.1, 10), (1, 0.5, 1), (15, 1.0, 15),
])
def test_round_repeats_is_ceil(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


def test_compound_coefficients():
    d, w, r = compound(1.0)
    assert (d, w, r) == (1.2, 1.1, 1.15)
    assert d * w ** 2 * r ** 2 == pytest.approx(1.92, abs=0.01)  # ~2x FLOPs per phi
    d, w, r = compound(2.0, alpha=1.0, beta=2.0, gamma=3.0)
    assert (d, w, r) == (1.0, 4.0, 9.0)
    assert compound(0) == (1.0, 1.0, 1.0)


def test_expand_stages_first_block_keeps_stride_and_input():
    blocks = [parse("r1_k3_s1_e1_i32_o16_se0.25"), parse("r2_k3_s2_e6_i16_o24_se0.25")]
    out = expand_stages(blocks, width=1.0, depth=1.1, rule="v1")
    # depth 1.1: ceil(1.1) = 2, ceil(2.2) = 3
    assert [(b.stage, b.index) for b in out] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    assert [b.strides for b in out] == [1, 1, 2, 1, 1]
    assert [b.input_filters for b in out] == [32, 16, 16, 24, 24]
    assert [b.has_skip for b in out] == [False, True, False, True, True]
    assert [b.global_index for b in out] == list(range(5))


def test_expand_stages_fixed_repeats_and_no_se():
    blocks = [parse("r1_k3_s1_e1_i32_o16_se0.25"), parse("r4_k5_s2_e6_i112_o192_se0.25"),
              parse("r1_k3_s1_e6_i192_o320_se0.25")]
    out = expand_stages(blocks, width=1.0, depth=2.0, use_se=False, fixed_repeats=(0, 2))
    assert len(out) == 1 + 8 + 1
    assert all(b.se_ratio is None for b in out)


def test_noskip_disables_identity():
    out = expand_stages([parse("r2_k3_s1_e1_i8_o8_noskip")])
    assert not any(b.has_skip for b in out)
    assert math.isclose(len(out), 2)
