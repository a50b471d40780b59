"""Fault-tolerant checkpoints: model, optimizer (with its step), EMA and data position.

Atomicity: ``tf.train.CheckpointManager.save`` first writes ``ckpt-N.index`` and
``ckpt-N.data-*`` in full, then rewrites the small ``checkpoint`` state file with an
atomic rename (``file_io.atomic_write_string_to_file``). A process killed in between
leaves the state file naming the previous, complete checkpoint, which is what
:meth:`Checkpointer.restore_latest` loads (``tests/test_trainer_checkpoint.py`` checks
this by planting a half-written newer checkpoint).

Multi-worker: every worker must take part in a save (variables may need collectives to
read), but only the chief's copy is kept; the others write to a scratch directory that
is removed afterwards (the tf.distribute guidance). Every worker restores from the
chief's directory, so ``model_dir`` must be storage that all workers see.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from typing import Any, Iterator

import tensorflow as tf

from keras_effnet.run_dir import CHECKPOINTS_DIR

__all__ = ["Checkpointer", "sigterm_as_interrupt"]


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

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest complete checkpoint of the chief, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self) -> str | None:
        """Restore the newest complete checkpoint; returns its path (None when fresh)."""
        path = self.latest
        if path is None:
            return None
        # expect_partial: optimizer slots created lazily and the like must not warn.
        self.checkpoint.restore(path).expect_partial()
        return path

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
