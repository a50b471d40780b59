"""The command lines, installed with the package.

Each command is one module here, run three equal ways::

    keras-effnet-train --epochs=4            # console script (setup.cfg entry point)
    python -m keras_effnet.commands.train    # any environment the package is in
    python scripts/train.py                  # a checkout: a thin wrapper of the same

Commands: ``train``, ``export``, ``search``, ``profile``, ``benchmark``. A module defines
its absl flags when it is imported, and absl keeps one global flag registry, so this
package imports none of them: a process imports the one command it runs. Other code
starts a command as ``[sys.executable, "-m", "keras_effnet.commands.<name>"]``, never by a
file path: that finds the package installed or in a checkout alike.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

__all__ = ["COMMANDS", "run"]

COMMANDS = ("train", "export", "search", "profile", "benchmark")


def run(main: Callable[[], int | None], doc: str | None, flagsets: Sequence = ()) -> None:
    """Runs a command's ``main`` (``cli.run``) with ``doc`` as the ``--help`` text, however
    the command was started (absl prints the ``__main__`` module's docstring, which a
    console script or a wrapper does not carry)."""
    from keras_effnet import cli

    sys.modules["__main__"].__doc__ = doc
    cli.run(main, flagsets=flagsets)
