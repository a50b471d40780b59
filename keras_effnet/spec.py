"""Block-spec strings: parse once into a frozen record, validate there.

A block string describes one stage of an EfficientNet: ``r2_k3_s1_e4_i24_o48_f``
is two Fused-MBConv blocks with 3x3 kernels, stride 1, expand ratio 4, 24 input and
48 output filters. The canonical form (what :func:`format` writes) is

    r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}[_se{ratio}][_noskip][_f]

On input the keys may come in any order, and the dialects of the two official
codebases are accepted as well: google/automl's ``c1`` / ``c0`` (Fused-MBConv / MBConv)
and tensorflow/tpu's two-digit strides (``s22``). Unlike both official decoders, no
token is ever dropped silently: anything not understood raises :class:`SpecError`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

__all__ = ["BlockSpec", "SpecError", "parse", "format", "parse_arch", "format_arch"]

_INT = re.compile(r"[0-9]+\Z")
_FLOAT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_KEY = re.compile(r"(noskip|se|[a-z]+)(.*)\Z", re.DOTALL)
_REQUIRED = ("r", "k", "s", "e", "i", "o")
_KEY_MEANING = {
    "r": "repeats",
    "k": "kernel size",
    "s": "stride",
    "e": "expand ratio",
    "i": "input filters",
    "o": "output filters",
}
_EXPECTED = (
    "expected tokens r<repeats>, k<kernel>, s<stride>, e<expand>, i<in filters>, "
    "o<out filters>, optional se<ratio>, noskip, f (or c0/c1), joined by '_', "
    "e.g. 'r2_k3_s1_e4_i24_o48_f'"
)


class SpecError(ValueError):
    """A block string (or an architecture) that cannot be understood."""

    def __init__(self, spec: object, message: str, token: str | None = None):
        where = f" at token {token!r}" if token is not None else ""
        super().__init__(f"Invalid block spec {spec!r}{where}: {message}")
        self.spec = spec
        self.token = token


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One stage of blocks: the parsed, validated form of a block string."""

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None = None
    fused: bool = False
    skip: bool = True

    def __post_init__(self):
        for field in ("repeats", "kernel_size", "strides", "expand_ratio",
                      "input_filters", "output_filters"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpecError(self._raw(), f"{field} must be a positive integer. "
                                f"Received: {field}={value!r}")
        if self.strides not in (1, 2):
            raise SpecError(self._raw(), f"strides must be 1 or 2. Received: strides={self.strides}")
        if self.kernel_size % 2 == 0:
            raise SpecError(self._raw(), "kernel_size must be odd so that 'same' padding is "
                            f"symmetric. Received: kernel_size={self.kernel_size}")
        if self.se_ratio is not None:
            if isinstance(self.se_ratio, bool) or not isinstance(self.se_ratio, (int, float)) \
                    or not 0.0 < self.se_ratio <= 1.0:
                raise SpecError(self._raw(), "se_ratio must be in (0, 1], or None for no "
                                f"squeeze-excite. Received: se_ratio={self.se_ratio!r}")
            object.__setattr__(self, "se_ratio", float(self.se_ratio))

    def _raw(self) -> str:
        return (f"BlockSpec(repeats={self.repeats!r}, kernel_size={self.kernel_size!r}, "
                f"strides={self.strides!r}, expand_ratio={self.expand_ratio!r}, "
                f"input_filters={self.input_filters!r}, output_filters={self.output_filters!r}, "
                f"se_ratio={self.se_ratio!r}, fused={self.fused!r}, skip={self.skip!r})")

    def replace(self, **changes) -> "BlockSpec":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return format(self)


def _positive_int(spec: str, token: str, key: str, text: str) -> int:
    if not _INT.match(text):
        raise SpecError(spec, f"{_KEY_MEANING[key]} must be a positive integer, "
                        f"written in digits after '{key}'", token)
    value = int(text)
    if value <= 0:
        raise SpecError(spec, f"{_KEY_MEANING[key]} must be > 0", token)
    return value


def _stride(spec: str, token: str, text: str) -> int:
    # tensorflow/tpu writes strides as two digits (s11, s22): one per spatial axis.
    if text in ("1", "2"):
        return int(text)
    if text in ("11", "22"):
        return int(text[0])
    if len(text) == 2 and set(text) <= {"1", "2"}:
        raise SpecError(spec, "unequal strides per axis are not supported: "
                        "use s1 / s2 (or s11 / s22)", token)
    raise SpecError(spec, "stride must be 1 or 2 (s1, s2; tpu style s11, s22)", token)


def parse(spec: str) -> BlockSpec:
    """Parses one block string into a :class:`BlockSpec`.

    Raises:
        SpecError: the string is empty, has stray separators, an unknown or duplicate
            token, a missing required key, or a value out of range.
    """
    if not isinstance(spec, str):
        raise SpecError(spec, f"a block spec must be a string, got {type(spec).__name__}")
    if not spec:
        raise SpecError(spec, f"the spec is empty; {_EXPECTED}")
    if spec != spec.strip():
        raise SpecError(spec, "leading or trailing whitespace; strip the string "
                        "(parse_arch splits whole architectures)")
    tokens = spec.split("_")
    for position, token in enumerate(tokens):
        if token == "":
            raise SpecError(spec, f"stray '_' separator (empty token at position {position}); "
                            f"{_EXPECTED}")

    values: dict[str, object] = {}

    def put(key: str, value: object, token: str) -> None:
        if key in values:
            raise SpecError(spec, f"duplicate key: {_describe(key)} is given twice", token)
        values[key] = value

    for token in tokens:
        match = _KEY.match(token)
        if match is None:
            raise SpecError(spec, f"unknown token; {_EXPECTED}", token)
        key, text = match.groups()
        if key == "f" and text == "":
            put("fused", True, token)
        elif key == "noskip" and text == "":
            put("skip", False, token)
        elif key == "c":  # google/automl's conv type: c0 = MBConv, c1 = Fused-MBConv.
            if text not in ("0", "1"):
                raise SpecError(spec, "conv type must be c0 (MBConv) or c1 (Fused-MBConv)", token)
            put("fused", text == "1", token)
        elif key == "f":
            # tensorflow/tpu's f1 is a different block (expand conv kept, with SE and
            # projection), not Fused-MBConv: refuse it rather than guess.
            raise SpecError(spec, "'f' takes no value: write a bare '_f' (or 'c1') for "
                            "Fused-MBConv; tensorflow/tpu's 'f1' block is not supported", token)
        elif key == "se":
            if not _FLOAT.match(text):
                raise SpecError(spec, "se ratio must be a number in (0, 1], e.g. se0.25", token)
            ratio = float(text)
            if not 0.0 < ratio <= 1.0:
                raise SpecError(spec, "se ratio must be in (0, 1]; leave 'se' out for no "
                                "squeeze-excite", token)
            put("se", ratio, token)
        elif key == "s":
            put("s", _stride(spec, token, text), token)
        elif key in _REQUIRED:
            value = _positive_int(spec, token, key, text)
            if key == "k" and value % 2 == 0:
                raise SpecError(spec, "kernel size must be odd (1, 3, 5, 7, ...)", token)
            put(key, value, token)
        else:
            raise SpecError(spec, f"unknown token; {_EXPECTED}", token)

    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        names = ", ".join(f"'{k}' ({_KEY_MEANING[k]})" for k in missing)
        raise SpecError(spec, f"missing required key(s) {names}; {_EXPECTED}")
    return BlockSpec(
        repeats=values["r"], kernel_size=values["k"], strides=values["s"],
        expand_ratio=values["e"], input_filters=values["i"], output_filters=values["o"],
        se_ratio=values.get("se"), fused=values.get("fused", False),
        skip=values.get("skip", True))


def _describe(key: str) -> str:
    return {"fused": "the block type (f / c0 / c1)", "skip": "'noskip'",
            "se": "'se' (squeeze-excite ratio)"}.get(key, f"'{key}' ({_KEY_MEANING.get(key, key)})")


def _format_ratio(ratio: float) -> str:
    # repr is the shortest text that reads back to the same float; drop a bare '.0'.
    text = repr(float(ratio))
    return text[:-2] if text.endswith(".0") else text


def format(block: BlockSpec) -> str:  # noqa: A001 - mirrors parse / format pairs elsewhere
    """Writes the canonical block string; ``parse(format(b)) == b``."""
    text = (f"r{block.repeats}_k{block.kernel_size}_s{block.strides}_e{block.expand_ratio}"
            f"_i{block.input_filters}_o{block.output_filters}")
    if block.se_ratio is not None:
        text += f"_se{_format_ratio(block.se_ratio)}"
    if not block.skip:
        text += "_noskip"
    if block.fused:
        text += "_f"
    return text


_ARCH_SEPARATORS = re.compile(r"[\s,]+")


def parse_arch(arch: str | Iterable[str | BlockSpec]) -> tuple[BlockSpec, ...]:
    """Parses a whole architecture: a list of block strings (or BlockSpecs), or one string
    with the blocks separated by whitespace, commas or newlines."""
    if isinstance(arch, BlockSpec):
        return (arch,)
    if isinstance(arch, str):
        items: list = [t for t in _ARCH_SEPARATORS.split(arch) if t]
        if not items:
            raise SpecError(arch, "the architecture is empty: give one or more block strings")
    else:
        try:
            items = list(arch)
        except TypeError:
            raise SpecError(arch, "an architecture is a list of block strings or one "
                            "string of them") from None
        if not items:
            raise SpecError(arch, "the architecture is empty: give one or more block strings")
    return tuple(item if isinstance(item, BlockSpec) else parse(item) for item in items)


def format_arch(blocks: Iterable[BlockSpec]) -> list[str]:
    """The canonical strings of an architecture."""
    return [format(b) for b in blocks]
