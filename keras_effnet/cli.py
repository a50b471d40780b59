"""What the scripts share: one-line errors instead of tracebacks or usage dumps."""

from __future__ import annotations

import sys

from absl import flags

__all__ = ["fail", "parse_flags"]


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
