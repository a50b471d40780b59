"""Command lines from config dataclasses: flags generated from fields, values turned back
into configs, and one wrapper that turns a mistake into one ``error:`` line.

A script is thin (absl flags -> a config dataclass -> a library call)::

    TRAIN = cli.FlagSet(TrainConfig)
    EXPORT = cli.FlagSet(ExportConfig, prefix="export_", only=("prune", "quantize"),
                         defaults={"prune": 0.5})
    TRAIN.define(); EXPORT.define()

    def main() -> int:
        config = TrainConfig(**TRAIN.values())
        ...

    if __name__ == "__main__":
        cli.run(main, flagsets=(TRAIN, EXPORT))

A field's help text, enum choices and flag name live on the field, through :func:`option`.
A field whose type is a config dataclass (``prune: PruneConfig | None``) becomes one flag
per field of that config, named ``<field>_<subfield>``; the sub-config's *primary* field
(``option(primary=True)``) is the flag ``--<field>`` itself, and a false value of it
(``--prune=0``) gives ``None`` when the field is optional.

Library code raises :class:`keras_effnet.errors.ConfigError` naming the *field*;
:func:`run` prints it with the flag that sets that field (prefix included).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from typing import Any, Callable, Iterable, Sequence

from absl import flags

from keras_effnet.errors import ConfigError

__all__ = ["fail", "parse_flags", "option", "FlagSet", "parse_value", "parse_list",
           "describe", "run"]


def fail(message: str, status: int = 2) -> int:
    """Prints ``error: <message>`` on stderr and returns ``status`` (for ``main``)."""
    print(f"error: {message}", file=sys.stderr)
    return status


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing (``app.run(..., flags_parser=parse_flags)``) with a one-line error
    instead of absl's usage dump."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(fail(f"{e} (see --helpfull)"))


def option(default: Any = dataclasses.MISSING, *, help: str = "",
           choices: Sequence[str] | None = None, flag: str | None = None,
           primary: bool = False, cli: bool = True,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with what its flag needs.

    Args:
        help: the flag's help text.
        choices: allowed values (an enum flag).
        flag: the flag's name when it is not the field's (relative to the prefix).
        primary: in a nested config, the field whose flag is the parent field's name.
        cli: False keeps the field off the command line.
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "flag": flag, "primary": primary, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_list(values: Iterable[str] | None) -> tuple[str, ...]:
    """Flag list -> tuple, dropping blanks (``--formats=saved_model,`` is fine)."""
    return tuple(v.strip() for v in (values or ()) if v.strip())


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def parse_value(name: str, hint: Any, text: str) -> Any:
    """``text`` as a value of type ``hint`` (int, float, str, bool, tuples of those,
    ``X | None`` with ``none``); ConfigError naming ``name`` otherwise."""
    inner, optional = _unwrap_optional(hint)
    if optional and text.strip().lower() == "none":
        return None
    if typing.get_origin(inner) is tuple:
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        items = [t for t in (s.strip() for s in text.split(",")) if t]
        if Ellipsis in typing.get_args(inner):
            return tuple(parse_value(name, args[0], t) for t in items)
        if len(items) != len(args):
            raise ConfigError(f"{name} takes {len(args)} comma-separated values. "
                              f"Received: {name}={text!r}", name)
        return tuple(parse_value(name, a, t) for a, t in zip(args, items))
    if inner is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false. Received: {name}={text!r}", name)
    try:
        return inner(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {getattr(inner, '__name__', inner)}. "
                          f"Received: {name}={text!r}", name) from None


@dataclasses.dataclass(frozen=True)
class _Flag:
    name: str  # without prefix
    path: tuple[str, ...]  # field path: ("prune",), ("prune", "epochs")
    hint: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _exposed(field: dataclasses.Field) -> bool:
    """A field is a flag when it was declared with ``option(help=...)`` (and not
    ``cli=False``): settings without a flag stay Python-only."""
    return bool(field.metadata.get("help")) and field.metadata.get("cli", True)


def _config_class(hint: Any) -> tuple[type | None, bool]:
    inner, optional = _unwrap_optional(hint)
    return (inner, optional) if dataclasses.is_dataclass(inner) else (None, optional)


class FlagSet:
    """The flags of one config dataclass.

    Args:
        config_cls: the dataclass.
        prefix: prepended to every flag name (``export_``).
        only: the fields to expose (default: every field declared with
            ``option(help=...)``).
        skip: fields to leave out.
        defaults: flag defaults that differ from the fields' (``{"prune": 0.5}``; for a
            nested config, its primary value; ``"prune.epochs"`` for another of its
            fields).
    """

    def __init__(self, config_cls: type, *, prefix: str = "",
                 only: Sequence[str] | None = None, skip: Sequence[str] = (),
                 defaults: dict[str, Any] | None = None):
        self.config_cls = config_cls
        self.prefix = prefix
        self.defaults = dict(defaults or {})
        fields = {f.name: f for f in dataclasses.fields(config_cls)}
        unknown = [n for n in list(only or ()) + list(skip)
                   + [d.split(".", 1)[0] for d in self.defaults] if n not in fields]
        if unknown:
            raise ValueError(f"{config_cls.__name__} has no field {unknown[0]!r}")
        names = [n for n in (only or fields) if n not in skip
                 and (only is not None or _exposed(fields[n]))]
        hints = typing.get_type_hints(config_cls)
        self.fields = names
        self._nested: dict[str, tuple[type, bool, str]] = {}
        self._flags: list[_Flag] = []
        for name in names:
            field = fields[name]
            sub_cls, optional = _config_class(hints[name])
            if sub_cls is None:
                meta = field.metadata
                default = self.defaults.get(name, _field_default(field))
                self._flags.append(_Flag(meta.get("flag") or name, (name,), hints[name],
                                         default, meta.get("help") or name,
                                         meta.get("choices")))
                continue
            self._add_nested(name, field, sub_cls, optional)
        paths = {".".join(f.path) for f in self._flags}
        stray = [d for d in self.defaults if "." in d and d not in paths]
        if stray:
            raise ValueError(f"{config_cls.__name__} has no nested field {stray[0]!r}")

    def _add_nested(self, name: str, field: dataclasses.Field, sub_cls: type,
                    optional: bool) -> None:
        sub_hints = typing.get_type_hints(sub_cls)
        sub_fields = [f for f in dataclasses.fields(sub_cls) if _exposed(f)]
        primary = next((f.name for f in sub_fields if f.metadata.get("primary")), None)
        if primary is None:
            raise ValueError(f"{sub_cls.__name__} needs one option(primary=True) field to "
                             f"be the flag --{name}")
        self._nested[name] = (sub_cls, optional, primary)
        parent_default = _field_default(field)
        for sub in sub_fields:
            meta = sub.metadata
            sub_default = _field_default(sub)
            if sub.name == primary:
                flag_name = meta.get("flag") or name
                if name in self.defaults:
                    default = self.defaults[name]
                elif parent_default is None and optional:
                    default = type(sub_default)() if sub_default is not None else None
                else:
                    default = getattr(parent_default, sub.name, sub_default)
                help_text = meta.get("help") or name
                if optional:
                    help_text += " (0: off)"
            else:
                flag_name = f"{name}_{meta.get('flag') or sub.name}"
                default = self.defaults.get(f"{name}.{sub.name}", sub_default)
                help_text = meta.get("help") or sub.name
            self._flags.append(_Flag(flag_name, (name, sub.name), sub_hints[sub.name],
                                     default, help_text, meta.get("choices")))

    # --- absl ---------------------------------------------------------------------------

    def flag_names(self) -> list[str]:
        return [self.prefix + f.name for f in self._flags]

    def define(self, flag_values: flags.FlagValues = flags.FLAGS) -> None:
        """Defines every flag (once: a flag already defined under that name is kept)."""
        for f in self._flags:
            name = self.prefix + f.name
            if name in flag_values:
                continue
            inner, _ = _unwrap_optional(f.hint)
            kwargs = dict(name=name, default=f.default, help=f.help,
                          flag_values=flag_values)
            if typing.get_origin(inner) is tuple:
                args = [a for a in typing.get_args(inner) if a is not Ellipsis]
                default = None if f.default is None else [str(v) for v in f.default]
                if args and all(a is str for a in args):
                    flags.DEFINE_list(name, default, f.help, flag_values=flag_values)
                else:
                    flags.DEFINE_string(name, None if default is None else ",".join(default),
                                        f.help, flag_values=flag_values)
            elif f.choices:
                flags.DEFINE_enum(enum_values=list(f.choices), **kwargs)
            elif inner is bool:
                flags.DEFINE_bool(**kwargs)
            elif inner is int:
                flags.DEFINE_integer(**kwargs)
            elif inner is float:
                flags.DEFINE_float(**kwargs)
            else:
                flags.DEFINE_string(**kwargs)

    def values(self, flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
        """Field -> value, as the parsed flags say (nested configs built, or None)."""
        out: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {n: {} for n in self._nested}
        for f in self._flags:
            value = flag_values[self.prefix + f.name].value
            inner, _ = _unwrap_optional(f.hint)
            if typing.get_origin(inner) is tuple and value is not None:
                text = ",".join(value) if isinstance(value, list) else str(value)
                value = parse_value(f.path[-1], f.hint, text)
            if len(f.path) == 1:
                out[f.path[0]] = value
            else:
                nested[f.path[0]][f.path[1]] = value
        for name, (sub_cls, optional, primary) in self._nested.items():
            sub_values = nested[name]
            if optional and not sub_values.get(primary):
                out[name] = None
            else:
                try:
                    out[name] = sub_cls(**sub_values)
                except ConfigError as e:  # the nested config names its own field
                    field = f"{name}.{e.field}" if e.field else name
                    raise ConfigError(str(e), field) from None
        return out

    def flag_for(self, field: str | None) -> str | None:
        """The flag (``--export_prune_epochs``) that sets ``field`` (``"prune.epochs"``);
        None when this set has no such flag."""
        if not field:
            return None
        path = tuple(field.split("."))
        for f in self._flags:
            if f.path == path:
                return "--" + self.prefix + f.name
        if len(path) == 1 and path[0] in self._nested:
            primary = self._nested[path[0]][2]
            return self.flag_for(f"{path[0]}.{primary}")
        return None

    def suggest(self, name: str) -> str | None:
        """The closest flag name to a mistyped ``name``, if any is close."""
        close = difflib.get_close_matches(name, self.flag_names(), n=1)
        return close[0] if close else None


def describe(error: ConfigError, flagsets: Sequence[FlagSet] = ()) -> str:
    """The error as a script prints it: prefixed by the flag that sets its field."""
    for flagset in flagsets:
        flag = flagset.flag_for(error.field)
        if flag:
            return f"{flag}: {error}"
    return str(error)


def run(main: Callable[[], int | None], *, flagsets: Sequence[FlagSet] = ()) -> None:
    """``app.run`` for a script's ``main()`` (no arguments): flags parsed with one-line
    errors, positional arguments refused, TensorFlow's INFO chatter off, and any
    :class:`ConfigError` printed as ``error: --flag: message`` with exit status 2."""
    from absl import app

    def wrapped(argv: list[str]) -> int:
        if len(argv) > 1:
            return fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value")
        from absl import logging
        logging.set_verbosity(logging.WARNING)
        try:
            return main() or 0
        except ConfigError as e:
            return fail(describe(e, flagsets))

    app.run(wrapped, flags_parser=parse_flags)
