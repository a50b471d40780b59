"""Fault-tolerant checkpoints: model, optimizer (with its step), EMA and data position.

Atomicity: ``tf.train.CheckpointManager.save`` first writes ``ckpt-N.index`` and
``ckpt-N.data-*`` in full, then rewrites the small ``checkpoint`` state file with an
atomic rename (``file_io.atomic_write_string_to_file``). A process killed in between
leaves the state file naming the previous, complete checkpoint, which is what
:meth:`Checkpointer.restore_latest` loads (``tests/test_trainer_checkpoint.py`` checks
this by planting a half-written newer checkpoint).

Damage: a checkpoint whose files are truncated or corrupt (checked by reading every
tensor, CRCs included, before anything is assigned) is skipped with a warning naming it,
and the one before it is restored instead; a ``checkpoint`` state file that is not
readable falls back to the ``ckpt-N.index`` files on disk. When none can be restored the
error names the directory and what to do (:class:`~keras_effnet.run_dir.RunDirError`).

Multi-worker: every worker must take part in a save (variables may need collectives to
read), but only the chief's copy is kept; the others write to a scratch directory that
is removed afterwards (the tf.distribute guidance). Every worker restores from the
chief's directory, so ``model_dir`` must be storage that all workers see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import threading
from typing import Any, Iterator

import tensorflow as tf

from keras_effnet.run_dir import CHECKPOINTS_DIR, RunDirError

__all__ = ["Checkpointer", "sigterm_as_interrupt"]

logger = logging.getLogger("keras_effnet.train")
_STATE_FILE = "checkpoint"
_INDEX = re.compile(r"^ckpt-([0-9]+)\.index$")


class Checkpointer:
    """Save and restore everything a resumed run needs.

    ``objects`` are the trackables (model, optimizer, EMA averages, counters) given to
    ``tf.train.Checkpoint``.
    """

    def __init__(self, model_dir: str, objects: dict[str, Any], *, chief: bool = True,
                 worker_index: int = 0, max_to_keep: int = 3):
        # os.path.join rather than RunDir's pathlib paths: it keeps a gs:// prefix intact.
        self.directory = os.path.join(model_dir, CHECKPOINTS_DIR)
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.chief = chief
        write_dir = self.directory if chief else os.path.join(
            model_dir, ".worker_scratch", f"worker{worker_index}")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir,
                                                  max_to_keep=max_to_keep)
        # (checkpoint, why) of each damaged checkpoint the last restore skipped.
        self.skipped: list[tuple[str, str]] = []

    def candidates(self) -> list[str]:
        """The chief's checkpoint prefixes, newest first: those the state file lists, or
        (when it exists but cannot be read) every ``ckpt-N.index`` on disk. None without
        a state file: a first save killed half-way leaves nothing to resume."""
        directory = self.directory
        if not tf.io.gfile.exists(os.path.join(directory, _STATE_FILE)):
            return []
        try:
            state = tf.train.get_checkpoint_state(directory)
        except Exception:  # noqa: BLE001 - a damaged state file: use the disk instead
            state = None
        if state is not None and state.model_checkpoint_path:
            listed = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
            return [p if os.path.isabs(p) or "://" in p else os.path.join(directory, p)
                    for p in reversed(listed)]
        numbers = sorted((int(m.group(1)) for name in tf.io.gfile.listdir(directory)
                          if (m := _INDEX.match(name))), reverse=True)
        return [os.path.join(directory, f"ckpt-{n}") for n in numbers]

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint of the chief, or None."""
        return next(iter(self.candidates()), None)

    def restore_latest(self) -> str | None:
        """Restore the newest readable checkpoint; returns its path (None when fresh).

        Damaged checkpoints are skipped (listed in :attr:`skipped`, and logged); when
        every one is damaged, raises :class:`~keras_effnet.run_dir.RunDirError`."""
        self.skipped = []
        for path in self.candidates():
            why = _unreadable(path)
            if why is None:
                # expect_partial: optimizer slots created lazily and the like must not warn.
                self.checkpoint.restore(path).expect_partial()
                return path
            self.skipped.append((path, why))
            logger.warning("checkpoint %s cannot be read (%s); trying the one before it.",
                           path, why)
        if self.skipped:
            path, why = self.skipped[0]
            raise RunDirError(
                f"no checkpoint in {self.directory} can be restored ({len(self.skipped)} "
                f"damaged; the newest, {path}: {why}). Move {self.directory} away to "
                "start the run over, or put back an undamaged copy.")
        return None

    def save(self) -> str:
        """Write the next checkpoint; returns its path (on the chief).

        Checkpoints are numbered by the save counter (kept in the checkpoint), never by
        the step: two saves at one step get two names, so a complete checkpoint is never
        overwritten in place.
        """
        path = self.manager.save()
        if not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            self.manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir,
                                                      max_to_keep=1)
        return path


def _unreadable(path: str) -> str | None:
    """Why the checkpoint at ``path`` cannot be restored (every tensor is read, so a
    truncated file or a CRC mismatch shows), or None when it can."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001 - TF raises OpError, IndexError, ValueError...
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        return message.strip().splitlines()[0][:200]
    return None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (preemption, ``kill``) takes the Ctrl-C path inside the block: the trainer
    saves a checkpoint, then exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
