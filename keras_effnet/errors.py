"""The package's error types: what a caller can catch, and what the CLI turns into flags.

Library code never names a command-line flag. A bad option raises :class:`ConfigError`
with the config *field* it is about and a Keras-style message ("... must be > 0.
Received: epochs=0"); ``keras_effnet.cli`` knows which flag sets that field (with its
prefix, e.g. ``--export_prune`` for ``ExportConfig.prune``) and prints it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "check_int"]


class ConfigError(ValueError):
    """A bad value of one config field.

    Attributes:
        field: the dataclass field the message is about (``"prune"``,
            ``"prune.epochs"`` for a field of a nested config), or None when the problem
            is not one field's (e.g. two options that exclude each other).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    """Raises :class:`ConfigError` on field ``name`` unless ``value`` is an integer (not a
    bool) >= ``minimum`` (or None, when ``allow_none``)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}. "
                          f"Received: {name}={value!r}", name)
