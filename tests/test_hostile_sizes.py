"""Sizes that cannot be built (issue 16, finding 12): refused in milliseconds from the
arithmetic, with the limit in the message, instead of hanging or overflowing."""

import math

import pytest
from test_hostile_support import deadline

import keras_effnet
from keras_effnet.errors import ConfigError
from keras_effnet.profile import MAX_PARAMS, check_buildable, profile
from keras_effnet.variants import MAX_BLOCKS, get_variant


@pytest.mark.parametrize("kwargs,field,fragment", [
    (dict(depth=1e6), "depth", "16,000,000 blocks, more than the limit of 1,000"),
    (dict(depth=1e300), "depth", "1.6e+301 blocks"),
    (dict(width=1e6), "width", "parameters (15,093,254,225 GB of float32 weights), more "
                                "than the limit of 1,000,000,000"),
    (dict(width=math.inf), "width", "width must be a finite number > 0"),
    (dict(width=math.nan), "width", "width must be a finite number > 0"),
    (dict(depth=-1.0), "depth", "depth must be a finite number > 0"),
])
def test_absurd_scaling_is_refused_at_once(kwargs, field, fragment):
    with deadline(20):
        with pytest.raises(ConfigError) as error:
            keras_effnet.build("efficientnet-b0", **kwargs)
    assert error.value.field == field and fragment in str(error.value)
    assert "Received:" in str(error.value)


@pytest.mark.parametrize("arch,fragment", [
    ("r1000000_k3_s1_e1_i32_o16", "1,000,000 blocks"),
    ("r1_k3_s1_e1_i32_o1000000", "parameters"),
    ("r99999999999999999999999_k3_s1_e1_i32_o16", "1e+23 blocks"),
])
def test_absurd_block_strings_are_refused_at_once(arch, fragment):
    with deadline(20):
        with pytest.raises(ConfigError, match="more than the limit") as error:
            keras_effnet.build(arch=[arch], classes=10)
    assert error.value.field == "model" and fragment in str(error.value)


def test_profile_refuses_too_many_blocks_without_counting_them():
    with deadline(5):
        with pytest.raises(ConfigError, match="blocks, more than the limit"):
            profile("efficientnet-b0", depth=1e9)


def test_the_largest_real_variants_stay_under_the_limits():
    for name in ("efficientnet-l2", "efficientnetv2-xl"):
        variant = get_variant(name)
        assert variant.num_blocks() < MAX_BLOCKS // 5
        assert check_buildable(variant).params < MAX_PARAMS // 2
