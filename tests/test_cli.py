"""keras_effnet.cli: flags generated from config dataclasses, and errors that name flags."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from keras_effnet import cli
from keras_effnet.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Sub:
    amount: float = cli.option(0.5, help="How much.", primary=True)
    epochs: int = cli.option(8, help="Epochs.")
    steps_per_epoch: int | None = cli.option(None, help="Steps.", flag="steps")
    policy: str = cli.option("a", help="Policy.", choices=("a", "b"))
    hidden: int = 3  # no option(): not a flag

    def __post_init__(self):
        if not 0 <= self.amount < 1:
            raise ConfigError(f"amount must be in [0, 1). Received: amount={self.amount}",
                              "amount")


@dataclasses.dataclass(frozen=True)
class _Config:
    name: str | None = cli.option(None, help="A name.")
    count: int = cli.option(2, help="A count.")
    rate: float = cli.option(0.1, help="A rate.")
    on: bool = cli.option(True, help="A switch.")
    kinds: tuple[str, ...] = cli.option(("x",), help="Kinds.")
    sub: _Sub | None = cli.option(None, help="Sub.")
    internal: int = 7  # Python-only


def _parse(flagsets, argv):
    values = flags.FlagValues()
    for flagset in flagsets:
        flagset.define(values)
    values(["prog", *argv])
    return values


def test_flags_are_the_fields_declared_with_option():
    flagset = cli.FlagSet(_Config)
    assert sorted(flagset.flag_names()) == sorted(
        ["name", "count", "rate", "on", "kinds", "sub", "sub_epochs", "sub_steps",
         "sub_policy"])


def test_values_round_trip_into_the_config():
    flagset = cli.FlagSet(_Config)
    values = _parse([flagset], ["--count=5", "--rate=0.25", "--noon", "--kinds=a,b,",
                                "--sub=0.3", "--sub_steps=4", "--sub_policy=b"])
    config = _Config(**flagset.values(values))
    assert config == _Config(name=None, count=5, rate=0.25, on=False, kinds=("a", "b"),
                             sub=_Sub(amount=0.3, epochs=8, steps_per_epoch=4, policy="b"))


def test_defaults_give_the_dataclass_defaults_and_zero_primary_is_none():
    flagset = cli.FlagSet(_Config)
    assert _Config(**flagset.values(_parse([flagset], []))) == _Config()


def test_prefix_only_and_flag_defaults():
    flagset = cli.FlagSet(_Config, prefix="export_", only=("sub", "kinds"),
                          defaults={"sub": 0.5, "kinds": ("y",)})
    values = _parse([flagset], ["--export_sub_epochs=2"])
    assert flagset.values(values) == {"kinds": ("y",), "sub": _Sub(amount=0.5, epochs=2)}
    assert flagset.flag_for("sub.epochs") == "--export_sub_epochs"
    assert flagset.flag_for("sub") == "--export_sub"
    assert flagset.flag_for("count") is None


def test_a_nested_field_default_is_the_flag_default_and_a_flag_still_wins():
    flagset = cli.FlagSet(_Config, prefix="export_", only=("sub",),
                          defaults={"sub": 0.5, "sub.epochs": 2})
    assert flagset.values(_parse([flagset], [])) == {"sub": _Sub(amount=0.5, epochs=2)}
    assert flagset.values(_parse([flagset], ["--export_sub_epochs=5"])) == {
        "sub": _Sub(amount=0.5, epochs=5)}
    with pytest.raises(ValueError, match="no nested field 'sub.epoch'"):
        cli.FlagSet(_Config, only=("sub",), defaults={"sub.epoch": 2})
    with pytest.raises(ValueError, match="no field 'nope'"):
        cli.FlagSet(_Config, defaults={"nope.epochs": 2})


def test_enum_choices_are_enforced_by_absl():
    flagset = cli.FlagSet(_Config)
    with pytest.raises(flags.IllegalFlagValueError):
        _parse([flagset], ["--sub_policy=c"])


def test_describe_names_the_flag_of_the_field():
    flagsets = [cli.FlagSet(_Config, only=("count",)),
                cli.FlagSet(_Config, prefix="export_", only=("sub",))]
    error = ConfigError("epochs must be >= 1. Received: epochs=0", "sub.epochs")
    assert cli.describe(error, flagsets) == \
        "--export_sub_epochs: epochs must be >= 1. Received: epochs=0"
    assert cli.describe(ConfigError("no field"), flagsets) == "no field"


def test_nested_config_error_names_the_nested_flag():
    flagsets = [cli.FlagSet(_Config, prefix="export_", only=("sub",))]
    values = _parse(flagsets, ["--export_sub=1.5"])
    with pytest.raises(ConfigError) as info:
        flagsets[0].values(values)
    assert info.value.field == "sub.amount"
    assert cli.describe(info.value, flagsets).startswith("--export_sub: amount must be")


def test_unknown_field_in_flagset_is_a_programming_error():
    with pytest.raises(ValueError, match="no field 'nope'"):
        cli.FlagSet(_Config, only=("nope",))


@pytest.mark.parametrize("hint,text,expected", [
    (int, "3", 3), (float, "0.5", 0.5), (bool, "yes", True), (bool, "0", False),
    (tuple[int, ...], "1, 2,", (1, 2)), (tuple[int, int], "4,1", (4, 1)),
    (int | None, "none", None), (str, "abc", "abc")])
def test_parse_value(hint, text, expected):
    assert cli.parse_value("x", hint, text) == expected


@pytest.mark.parametrize("hint,text", [(int, "3.5"), (bool, "maybe"),
                                       (tuple[int, int], "1,2,3")])
def test_parse_value_errors_name_the_field(hint, text):
    with pytest.raises(ConfigError, match=r"Received: x=") as info:
        cli.parse_value("x", hint, text)
    assert info.value.field == "x"


def test_run_prints_one_line_and_exits_2(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent("""
        import dataclasses
        from keras_effnet import cli
        from keras_effnet.errors import ConfigError

        @dataclasses.dataclass(frozen=True)
        class C:
            steps: int = cli.option(1, help="Steps.")
            def __post_init__(self):
                if self.steps < 1:
                    raise ConfigError(f"steps must be >= 1. Received: steps={self.steps}",
                                      "steps")

        FLAGS = cli.FlagSet(C, prefix="my_")
        FLAGS.define()

        def main():
            C(**FLAGS.values())
            print("ok")

        if __name__ == "__main__":
            cli.run(main, flagsets=(FLAGS,))
    """))
    def call(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=60)
    good = call("--my_steps=2")
    assert good.returncode == 0 and good.stdout.strip() == "ok"
    bad = call("--my_steps=0")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --my_steps: steps must be >= 1. Received: steps=0"
    stray = call("positional")
    assert stray.returncode == 2 and "unexpected arguments" in stray.stderr
    unknown = call("--my_stepz=1")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
