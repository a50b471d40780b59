"""Run directories on unlucky disks (issue 16, findings 4, 7, 10 and 11): resuming with
another dataset, a disk that fills while the model is saved, damaged checkpoints and
run files, a model_dir that is a file or cannot be written."""

import os

import numpy as np
import pytest
from test_export_support import tiny_model
from test_trainer_support import ArraySource, tiny_config

from keras_effnet.bench.reliability import disk_full
from keras_effnet.errors import ConfigError
from keras_effnet.run_dir import RunConfig, RunDir, RunDirError


def _config(**changes):
    base = dict(model="m", variant={"name": "m"}, dataset="folder", num_classes=2,
                class_names=("cat", "dog"), eval_image_size=16, data_dir="/data/pets",
                global_batch_size=8, plan=({"image_size": 16},))
    return RunConfig(**{**base, **changes})


def test_check_resume_names_what_differs_and_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.check_resume(_config())  # nothing written yet: nothing to compare
    run.write_config(_config())
    run.check_resume(_config(num_train=99))  # what does not matter may change
    for change, key in ((dict(class_names=("apple", "pear")), "class_names"),
                        (dict(data_dir="/data/fruit"), "data_dir"),
                        (dict(dataset="tfrecord"), "dataset")):
        with pytest.raises(RunDirError, match=f"another run: its {key} is .* "
                                              f"\\({run.config_path}\\)") as error:
            run.check_resume(_config(**change))
        assert error.value.field == "model_dir"


def test_check_resume_quotes_the_first_differing_entry_in_full(tmp_path):
    # Long records (a variant's 20 fields, a plan of stages) used to be cut at 80
    # characters, both alike up to there: the key that differs was never shown.
    long = {f"field_{i:02d}": "x" * 20 for i in range(20)}
    run = RunDir(tmp_path)
    run.write_config(_config(variant={**long, "width": 1.0},
                             plan=({"image_size": 16}, {"image_size": 32, "dropout": 0.1})))
    with pytest.raises(RunDirError, match=r"its variant\.width is 1\.0 .* this run's is 1\.2;"):
        run.check_resume(_config(variant={**long, "width": 1.2},
                                 plan=({"image_size": 16}, {"image_size": 32, "dropout": 0.1})))
    with pytest.raises(RunDirError, match=r"its plan\[1\]\.dropout is 0\.1 .* this run's is 0\.3;"):
        run.check_resume(_config(variant={**long, "width": 1.0},
                                 plan=({"image_size": 16}, {"image_size": 32, "dropout": 0.3})))
    with pytest.raises(RunDirError, match=r"its variant\.extra is \(absent\)"):
        run.check_resume(_config(variant={**long, "width": 1.0, "extra": 1},
                                 plan=({"image_size": 16}, {"image_size": 32, "dropout": 0.1})))


def test_resuming_with_another_dataset_is_refused_and_config_json_kept(tmp_path):
    from keras_effnet.train import Trainer

    config = tiny_config(tmp_path, epochs=1, stages=1, eval_every_epochs=0, verbose=0)
    pets = ArraySource(num_train=16, num_val=8, classes=2)
    pets.class_names = ["cat", "dog"]
    Trainer(config, source=pets).run()
    written = (tmp_path / "config.json").read_bytes()
    fruit = ArraySource(num_train=16, num_val=8, classes=2, seed=1)
    fruit.class_names = ["apple", "pear"]  # same class count, same dataset name
    with pytest.raises(ConfigError, match="class_names"):
        Trainer(config, source=fruit).run()
    assert (tmp_path / "config.json").read_bytes() == written


def test_a_full_disk_while_saving_the_model_leaves_no_partial_file(tmp_path):
    run, model = RunDir(tmp_path / "run"), tiny_model(size=None)
    with disk_full(20_000):
        with pytest.raises(RunDirError, match="cannot write .*final_model.keras.*rerun the "
                                              "training command"):
            run.save_model(model)
    assert os.listdir(run.path) == []  # neither the model nor a temporary file
    run.save_model(model)
    saved = run.final_model_path.read_bytes()
    with disk_full(20_000):
        with pytest.raises(RunDirError):
            run.save_model(model)
    assert os.listdir(run.path) == ["final_model.keras"]
    assert run.final_model_path.read_bytes() == saved  # the previous file, untouched
    with disk_full(10):
        with pytest.raises(OSError):
            run.write_labels(["a" * 20, "b"])
    assert not run.labels_path.exists() and os.listdir(run.path) == ["final_model.keras"]


def test_a_damaged_final_model_is_named_when_loaded(tmp_path):
    run = RunDir(tmp_path)
    run.final_model_path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(RunDirError, match=f"cannot load {run.final_model_path}"):
        run.load_model()


def _checkpoints(tmp_path, values):
    import tensorflow as tf
    from keras_effnet.train.checkpointing import Checkpointer

    variable = tf.Variable(np.zeros(256, np.float32))
    saver = Checkpointer(str(tmp_path), {"v": variable})
    paths = []
    for value in values:
        variable.assign(np.full(256, value, np.float32))
        paths.append(saver.save())
    return paths


def _reader(tmp_path):
    import tensorflow as tf
    from keras_effnet.train.checkpointing import Checkpointer

    restored = tf.Variable(np.zeros(256, np.float32))
    return Checkpointer(str(tmp_path), {"v": restored}), restored


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    first, second = _checkpoints(tmp_path, [1.0, 2.0])
    data = second + ".data-00000-of-00001"
    content = open(data, "rb").read()
    with open(data, "wb") as f:
        f.write(content[:len(content) // 2])
    reader, restored = _reader(tmp_path)
    assert reader.restore_latest() == first
    assert restored.numpy()[0] == 1.0
    assert reader.skipped[0][0] == second


def test_a_garbage_index_or_state_file_is_survived(tmp_path):
    first, second = _checkpoints(tmp_path, [1.0, 2.0])
    # A garbage state file: the checkpoints on disk are used (before: silently none,
    # and the run started over).
    (tmp_path / "checkpoints" / "checkpoint").write_text("garbage {{{")
    reader, restored = _reader(tmp_path)
    assert reader.restore_latest() == second and restored.numpy()[0] == 2.0
    # A garbage index of the newest checkpoint: the one before.
    with open(second + ".index", "wb") as f:
        f.write(b"\x00garbage")
    reader, restored = _reader(tmp_path)
    assert reader.restore_latest() == first and restored.numpy()[0] == 1.0
    # Nothing readable: one error naming the directory and what to do.
    with open(first + ".index", "wb") as f:
        f.write(b"")
    reader, _ = _reader(tmp_path)
    with pytest.raises(RunDirError, match="no checkpoint in .*checkpoints can be restored "
                                          "\\(2 damaged.*Move .* away"):
        reader.restore_latest()


def test_a_garbage_config_json_is_named_with_what_to_do(tmp_path):
    run = RunDir(tmp_path)
    run.config_path.write_text("\n\x00\x01 not json")
    with pytest.raises(RunDirError, match=f"cannot read {run.config_path} .*delete it and "
                                          "rerun the training command"):
        run.read_config()
    with pytest.raises(RunDirError, match=str(run.config_path)):
        run.check_resume(_config())


def test_a_model_dir_that_is_a_file_or_unwritable_is_refused(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    with pytest.raises(RunDirError, match="notes.txt is a file, not a directory") as error:
        RunDir(a_file).check_writable()
    assert error.value.field == "model_dir"
    with pytest.raises(RunDirError, match="is inside .*notes.txt, a file"):
        RunDir(a_file / "run").check_writable()
    with pytest.raises(RunDirError, match="cannot write in /proc"):
        RunDir("/proc/keras_effnet/run").check_writable()  # read-only, even for root
    RunDir(tmp_path / "new" / "run").check_writable()
    assert not (tmp_path / "new").exists()  # checked, not created
