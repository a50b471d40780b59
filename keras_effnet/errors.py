"""The package's error types: what a caller can catch, and what the CLI turns into flags.

Library code never names a command-line flag. A bad option raises :class:`ConfigError`
with the config *field* it is about and a Keras-style message ("... must be > 0.
Received: epochs=0"); ``keras_effnet.cli`` knows which flag sets that field (with its
prefix, e.g. ``--export_prune`` for ``ExportConfig.prune``) and prints it.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


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
