"""Platform-independent randomness for splits, shuffles and per-image augmentation seeds.

Everything that decides *which* image goes where (train/validation split, epoch order,
per-image augmentation seeds) is a pure function of integers, computed with the
splitmix64 mixer in uint64 numpy arithmetic. Unlike ``numpy.random.Generator`` (whose
streams may change between numpy releases) or TF's stateful RNGs (whose draws depend on
thread scheduling inside a parallel ``tf.data`` map), the result is the same on every
machine, every release and every run, so a resumed run can ``skip(n)`` to the exact batch.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = ["mix64", "key", "string_key", "permutation", "stratified_split", "tf_key",
           "SeedStream"]

_MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise on uint64 (wrap-around arithmetic is intended)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def key(*parts: int) -> int:
    """Combine integers (any sign) into one 64-bit key."""
    h = np.uint64(0x6A09E667F3BCC908)
    for part in parts:
        h = mix64(np.array([int(h) ^ (int(part) & _MASK64)], dtype=np.uint64))[0]
    return int(h)


def string_key(text: str) -> int:
    """64-bit key of a string (blake2b): stable across processes, unlike ``hash()``."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def permutation(n: int, *parts: int) -> np.ndarray:
    """A permutation of ``range(n)`` determined only by ``parts``."""
    keys = mix64(np.arange(n, dtype=np.uint64) ^ np.uint64(key(*parts)))
    return np.argsort(keys, kind="stable")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int,
                     item_keys: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class split into (train indices, validation indices), both sorted.

    Within each class the items are ranked by a seeded hash (of ``item_keys`` when given,
    e.g. file paths, else of the index) and the first ``floor(f * n + 0.5)`` go to
    validation; a class keeps at least one training item, and gets at least one
    validation item when it has two or more.
    """
    labels = np.asarray(labels)
    ids = (np.asarray(item_keys, dtype=np.uint64) if item_keys is not None
           else np.arange(len(labels), dtype=np.uint64))
    ranks = mix64(ids ^ np.uint64(key(seed, 0x5B11)))
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        n_val = 0 if n < 2 else min(n - 1, max(1, int(np.floor(val_fraction * n + 0.5))))
        order = members[np.argsort(ranks[members], kind="stable")]
        val.extend(order[:n_val].tolist())
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx).astype(np.int64)
    return train_idx, val_idx


def tf_key(*parts: int) -> tf.Tensor:
    """``key(*parts)`` as an int64 scalar (top bit dropped), the first half of a TF seed."""
    return tf.constant(key(*parts) >> 1, dtype=tf.int64)


class SeedStream(keras.random.SeedGenerator):
    """A Keras ``SeedGenerator`` whose seeds derive from one per-image (or per-batch) tensor.

    Keras' augmentation layers draw from a ``SeedGenerator`` whose state lives in a variable;
    inside a parallel ``tf.data`` map the draw each image gets then depends on thread
    scheduling. Passing a ``SeedStream`` built from the element's own seed makes every draw
    stateless: each ``next()`` folds a trace-time counter into that seed.
    """

    def __init__(self, seed: tf.Tensor):  # pylint: disable=super-init-not-called
        # No super().__init__(): it would create the state variable this class avoids.
        self._base = tf.convert_to_tensor(seed)
        self._count = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        del ordered
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)
