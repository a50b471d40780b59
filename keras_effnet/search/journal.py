"""The study journal's repair: a torn last record cut, a damaged one refused.

Optuna appends each record as a line of JSON; a write cut short (a full disk, a lost NFS
mount) leaves half a line, after which Optuna appends the next record and never reads
the journal again. :func:`repair_journal` runs before the study opens.
"""

from __future__ import annotations

import json
import os
import sys

from keras_effnet.errors import ConfigError

__all__ = ["repair_journal"]


def repair_journal(path: str) -> None:
    """Cuts a torn last record off the journal at ``path`` (a write that a full disk or
    a lost NFS mount cut short) with a warning, keeping every complete record; Optuna
    would append the next record after it and never read the journal again.

    Raises:
        ConfigError: (field ``storage``) a record before the last is damaged: one error
            naming the file and the line, the journal left as it is.
    """
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    # Under the journal's own lock: no worker is halfway through an append meanwhile.
    with get_lock_file(JournalFileSymlinkLock(path)):
        with open(path, "rb") as f:
            data = f.read()
        *lines, tail = data.split(b"\n")  # tail: what follows the last newline
        for number, line in enumerate(lines, start=1):
            if not _is_record(line):
                raise ConfigError(
                    f"{path}, line {number} of {len(lines) + bool(tail)}: not a journal "
                    f"record ({line[:60]!r}); the journal was edited or damaged: restore "
                    "it from a copy, or move it away to start the study again.", "storage")
        if not tail:
            return
        whole = _is_record(tail)  # only its newline lost
        with open(path, "r+b") as f:
            if whole:
                f.seek(len(data))
                f.write(b"\n")
            else:
                f.truncate(len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
    what = ("ended without its newline: completed" if whole
            else f"was cut short ({len(tail)} bytes): removed")
    print(f"warning: the last record of {path} (line {len(lines) + 1}) {what}; "
          f"{len(lines) + whole} complete records kept.", file=sys.stderr)


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return isinstance(record, dict) and "op_code" in record
