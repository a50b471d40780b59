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
    """Runs a command's ``main`` (``cli.run``) with ``doc`` and every keras_effnet flag as
    its ``--help``, however the command was started: absl's help is the ``__main__``
    module's docstring and flags, and a console script or a wrapper carries neither (the
    flags belong to this package's modules)."""
    from absl import flags

    from keras_effnet import cli

    sys.modules["__main__"].__doc__ = doc
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if module.startswith("keras_effnet."):
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    cli.run(main, flagsets=flagsets)
