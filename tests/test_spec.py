"""Block-spec grammar: canonical form, dialects, round trips and every kind of bad input."""

import pytest
from hypothesis import given, settings, strategies as st

from keras_effnet import spec
from keras_effnet.spec import BlockSpec, SpecError, parse, parse_arch
from keras_effnet.variants import VARIANTS


def test_design_card_example():
    b = parse("r2_k3_s1_e4_i24_o48_f")
    assert b == BlockSpec(repeats=2, kernel_size=3, strides=1, expand_ratio=4,
                          input_filters=24, output_filters=48, se_ratio=None, fused=True,
                          skip=True)
    assert spec.format(b) == "r2_k3_s1_e4_i24_o48_f"


def test_se_and_noskip():
    b = parse("r1_k5_s2_e6_i16_o24_se0.25_noskip")
    assert b.se_ratio == 0.25 and not b.skip and not b.fused
    assert spec.format(b) == "r1_k5_s2_e6_i16_o24_se0.25_noskip"


@pytest.mark.parametrize("text, canonical", [
    # google/automl: c1 = Fused-MBConv, c0 = MBConv, key order as automl writes it.
    ("r1_k3_s1_e1_i24_o24_c1", "r1_k3_s1_e1_i24_o24_f"),
    ("r4_k3_s2_e4_i24_o48_c1", "r4_k3_s2_e4_i24_o48_f"),
    ("r6_k3_s2_e4_i64_o128_se0.25_c0", "r6_k3_s2_e4_i64_o128_se0.25"),
    # tensorflow/tpu: two-digit strides.
    ("r2_k3_s22_e6_i16_o24_se0.25", "r2_k3_s2_e6_i16_o24_se0.25"),
    ("r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s1_e1_i32_o16_se0.25"),
    # key order is free on input, fixed on output
    ("f_o48_i24_e4_s1_k3_r2", "r2_k3_s1_e4_i24_o48_f"),
    ("se0.250_r1_k3_s1_e1_i8_o8", "r1_k3_s1_e1_i8_o8_se0.25"),
    ("r1_k3_s1_e1_i8_o8_se1", "r1_k3_s1_e1_i8_o8_se1"),
    ("r01_k3_s1_e1_i8_o8", "r1_k3_s1_e1_i8_o8"),
])
def test_dialects_become_canonical(text, canonical):
    assert spec.format(parse(text)) == canonical


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_table_string_round_trips(name):
    for text in VARIANTS[name].blocks:
        b = parse(text)
        assert spec.format(b) == text  # the table is stored canonically
        assert parse(spec.format(b)) == b


BAD_SPECS = [
    # (string, the token the message must name (None: whole string), words expected)
    ("", None, "empty"),
    ("r2_k3_s1_e4_i24_o48_x1", "x1", "unknown token"),
    ("r2_k3_s1_e4_i24_o48_fused", "fused", "unknown token"),
    ("r2_k3_s1_e4_i24_o48_f1", "f1", "tpu"),
    ("r2_k3_s1_e4_i24_o48_c2", "c2", "c0"),
    ("r2_k3_s1_e4_i24_o48_r3", "r3", "duplicate"),
    ("r2_k3_s1_e4_i24_o48_f_c1", "c1", "duplicate"),
    ("r2_k3_s1_e4_i24_o48_se0.25_se0.5", "se0.5", "duplicate"),
    ("r2_k3_s1_e4_i24", None, "'o' (output filters)"),
    ("k3_s1_e4_i24_o48", None, "'r' (repeats)"),
    ("r2.5_k3_s1_e4_i24_o48", "r2.5", "positive integer"),
    ("r0_k3_s1_e4_i24_o48", "r0", "> 0"),
    ("r2_k3_s1_e-4_i24_o48", "e-4", "positive integer"),
    ("r2_k3_s1_e4_i0_o48", "i0", "> 0"),
    ("r2_k3_s3_e4_i24_o48", "s3", "stride must be 1 or 2"),
    ("r2_k3_s12_e4_i24_o48", "s12", "unequal"),
    ("r2_k3_s_e4_i24_o48", "s", "stride"),
    ("r2_k4_s1_e4_i24_o48", "k4", "odd"),
    ("r2_k3_s1_e4_i24_o48_se0", "se0", "(0, 1]"),
    ("r2_k3_s1_e4_i24_o48_se1.5", "se1.5", "(0, 1]"),
    ("r2_k3_s1_e4_i24_o48_senan", "senan", "number"),
    ("r2_k3_s1_e4_i24_o48_se", "se", "number"),
    ("_r2_k3_s1_e4_i24_o48", None, "stray '_'"),
    ("r2_k3_s1_e4_i24_o48_", None, "stray '_'"),
    ("r2__k3_s1_e4_i24_o48", None, "stray '_'"),
    (" r2_k3_s1_e4_i24_o48", None, "whitespace"),
    ("R2_k3_s1_e4_i24_o48", "R2", "unknown token"),
    ("r٣_k3_s1_e4_i24_o48", "r٣", "positive integer"),  # non-ASCII digit
]


@pytest.mark.parametrize("text, token, words", BAD_SPECS)
def test_bad_specs_raise_spec_error_naming_the_token(text, token, words):
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert repr(text) in message  # quotes the whole string
    if token is not None:
        assert f"token {token!r}" in message
        assert info.value.token == token
    assert words in message


@pytest.mark.parametrize("value", [None, 3, b"r1_k3_s1_e1_i8_o8", ["r1"]])
def test_non_strings_raise_spec_error(value):
    with pytest.raises(SpecError):
        parse(value)


@pytest.mark.parametrize("field, value", [
    ("repeats", 0), ("kernel_size", 2), ("strides", 3), ("expand_ratio", 1.5),
    ("input_filters", -1), ("se_ratio", 0.0), ("se_ratio", 2.0), ("repeats", True),
])
def test_blockspec_validates_on_construction(field, value):
    good = parse("r1_k3_s1_e1_i8_o8")
    with pytest.raises(SpecError):
        good.replace(**{field: value})


def test_blockspec_is_frozen():
    b = parse("r1_k3_s1_e1_i8_o8")
    with pytest.raises(Exception):
        b.repeats = 3  # type: ignore[misc]


def test_parse_arch_accepts_lists_and_separated_strings():
    blocks = VARIANTS["efficientnetv2-s"].blocks
    as_list = parse_arch(list(blocks))
    as_text = parse_arch("\n".join(blocks[:3]) + " , " + ",".join(blocks[3:]))
    assert as_list == as_text and len(as_list) == 6
    assert spec.format_arch(as_list) == list(blocks)


@pytest.mark.parametrize("arch", ["", "  \n, ", [], 7])
def test_parse_arch_rejects_empty_or_wrong_types(arch):
    with pytest.raises(SpecError):
        parse_arch(arch)


def test_parse_arch_names_the_bad_block():
    with pytest.raises(SpecError, match="k4"):
        parse_arch(["r1_k3_s1_e1_i8_o8", "r1_k4_s1_e1_i8_o8"])


block_specs = st.builds(
    BlockSpec,
    repeats=st.integers(1, 64), kernel_size=st.sampled_from([1, 3, 5, 7, 9]),
    strides=st.sampled_from([1, 2]), expand_ratio=st.integers(1, 8),
    input_filters=st.integers(1, 4096), output_filters=st.integers(1, 4096),
    se_ratio=st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1.0)),
    fused=st.booleans(), skip=st.booleans())


@given(block_specs)
@settings(max_examples=300, deadline=None)
def test_format_parse_round_trip(b):
    text = spec.format(b)
    assert parse(text) == b
    assert spec.format(parse(text)) == text


_ALPHABET = st.sampled_from(list("rkseiocfnopq_0123456789.-+ ,\n") + ["se", "noskip", "_f"])


@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=30).map("".join)))
@settings(max_examples=1000, deadline=None)
def test_fuzz_parse_gives_blockspec_or_spec_error(text):
    try:
        b = parse(text)
    except SpecError:
        return
    assert isinstance(b, BlockSpec)
    assert parse(spec.format(b)) == b
