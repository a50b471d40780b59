"""Searches for EfficientNet architectures on a proxy task, on Optuna.

``keras-effnet-search``, ``python -m keras_effnet.commands.search`` and, in a checkout,
``python scripts/search.py`` are the same command.

    # the EfficientNet paper's grid: alpha (depth), beta (width), gamma (resolution)
    # with alpha * beta^2 * gamma^2 ~= 2, around a shrunk B0 on the embedded digits
    keras-effnet-search --search=scaling --trials=12 --epochs=6

    # EfficientNetV2's training-aware NAS around a shrunk V2-B0, reward A * S^-0.07 * P^-0.05
    keras-effnet-search --search=nas --trials=12 --epochs=6

    # many machines, one study: the same command on each, one RDB
    keras-effnet-search --search=nas --storage=postgresql://user@host/db ...

Running the same command again continues the study (after a crash, ``kill -9`` or
Ctrl-C): finished candidates are kept, the interrupted one is retried, and a network
already trained is never trained again. Outputs in --study_dir (default
search_runs/<search>_<model>_<dataset>): result.json, table.md, <search>.png, the
journal (study.journal) and one run directory per candidate under trials/.

A mistake in the request prints one ``error: ...`` line and exits with status 2; Ctrl-C
exits with 130.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from keras_effnet import cli, commands  # noqa: E402
from keras_effnet.search.config import SearchConfig  # noqa: E402  (no TensorFlow)

SEARCH = cli.FlagSet(SearchConfig)
SEARCH.define()


def main() -> int:
    config = SearchConfig(**SEARCH.values())
    config.check_request()  # no TensorFlow yet: a mistake fails in a second
    from keras_effnet import search

    try:
        search.run(config)
    except ImportError as e:  # the search extra
        return cli.fail(str(e))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue the study.",
              file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """The console script ``keras-effnet-search``."""
    commands.run(main, __doc__, flagsets=(SEARCH,))


if __name__ == "__main__":
    run()
