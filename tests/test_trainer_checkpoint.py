"""Checkpoint atomicity and the dropout-retrace mechanism, at unit level."""

import inspect
import os

import numpy as np
import pytest


def test_a_half_written_checkpoint_is_never_loaded(tmp_path):
    import tensorflow as tf
    from keras_effnet.train.checkpointing import Checkpointer

    variable = tf.Variable([1.0, 2.0])
    saver = Checkpointer(str(tmp_path), {"v": variable})
    first = saver.save()
    assert first.endswith("ckpt-1")
    variable.assign([3.0, 4.0])
    # A process killed while writing ckpt-2: its files exist (partly), but the state
    # file was not rewritten yet, so it still names ckpt-1.
    (tmp_path / "checkpoints" / "ckpt-2.index").write_bytes(b"\x00garbage")
    (tmp_path / "checkpoints" / "ckpt-2.data-00000-of-00001").write_bytes(b"")
    restored = tf.Variable([0.0, 0.0])
    reader = Checkpointer(str(tmp_path), {"v": restored})
    assert reader.latest == first
    assert reader.restore_latest() == first
    np.testing.assert_array_equal(restored.numpy(), [1.0, 2.0])
    # The next save gets a fresh number and never overwrites a complete checkpoint.
    saver.save()
    assert reader.latest.endswith("ckpt-2")


def test_the_state_file_is_replaced_atomically():
    # What the atomicity above rests on: TensorFlow writes the small `checkpoint` state
    # file to a temporary name and renames it, after the checkpoint data is complete.
    from tensorflow.python.checkpoint import checkpoint_management

    source = inspect.getsource(checkpoint_management.update_checkpoint_state_internal)
    assert "atomic_write_string_to_file" in source
    save = inspect.getsource(checkpoint_management.CheckpointManager.save)
    assert save.index("self._checkpoint") < save.index("_record_state")


def test_fresh_directory_has_nothing_to_restore(tmp_path):
    import tensorflow as tf
    from keras_effnet.train.checkpointing import Checkpointer

    assert Checkpointer(str(tmp_path), {"v": tf.Variable(1.0)}).restore_latest() is None


def test_non_chief_workers_write_to_scratch_only(tmp_path):
    import tensorflow as tf
    from keras_effnet.train.checkpointing import Checkpointer

    worker = Checkpointer(str(tmp_path), {"v": tf.Variable(1.0)}, chief=False,
                          worker_index=1)
    worker.save()
    assert not (tmp_path / "checkpoints").exists()
    assert not os.listdir(tmp_path / ".worker_scratch") or \
        not os.listdir(tmp_path / ".worker_scratch" / "worker1")


def test_dropout_rate_is_baked_into_a_trace_and_set_dropout_changes_it():
    import keras
    import tensorflow as tf

    from keras_effnet import build
    from keras_effnet.train import set_dropout

    model = build(arch=["r1_k3_s1_e1_i8_o8_f", "r1_k3_s2_e2_i8_o16_se0.25"],
                  input_shape=(None, None, 3), classes=4, dropout=0.1)
    layer = model.get_layer("top_dropout")
    features = keras.Model(model.input, layer.output)
    x = tf.random.uniform((64, 16, 16, 3), 0, 255, seed=1)

    def zero_fraction(fn):
        out = fn(x)
        return float(tf.reduce_mean(tf.cast(tf.equal(out, 0.0), tf.float32)))

    def make():
        return tf.function(lambda images: features(images, training=True))

    step = make()
    before = zero_fraction(step)
    assert set_dropout(model, 0.6) is True
    assert set_dropout(model, 0.6) is False  # unchanged: no retrace needed
    stale = zero_fraction(step)  # the old trace keeps the old rate...
    fresh = zero_fraction(make())  # ...a new trace uses the new one
    # Swish features are never exactly 0, so zeros are the dropout mask.
    assert before == pytest.approx(0.1, abs=0.03)
    assert stale == pytest.approx(0.1, abs=0.03)
    assert fresh == pytest.approx(0.6, abs=0.03)
    assert zero_fraction(lambda images: features(images, training=False)) == 0.0


def test_set_dropout_without_a_dropout_layer():
    from keras_effnet import build
    from keras_effnet.train import set_dropout

    model = build(arch=["r1_k3_s1_e1_i8_o8_f"], input_shape=(None, None, 3), classes=3,
                  dropout=0.0)
    assert set_dropout(model, 0.0) is False
    with pytest.raises(ValueError, match="has no 'top_dropout' Dropout layer"):
        set_dropout(model, 0.2)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        set_dropout(model, 1.0)
