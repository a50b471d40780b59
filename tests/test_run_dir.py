"""The run directory: a real (tiny) training run read back through RunDir, and RunDir's
own contract (round trips, atomic writes, errors that name the file)."""

import dataclasses
import json

import numpy as np
import pytest

from test_trainer_support import TINY_ARCH, model_weights, tiny_config

from keras_effnet.run_dir import RunConfig, RunDir, RunDirError, write_json

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One epoch of a ~25k-parameter model on the real digits at 16 px (11 steps)."""
    from keras_effnet.train import train

    model_dir = tmp_path_factory.mktemp("digits_run")
    config = tiny_config(model_dir, dataset="digits", epochs=1, stages=1, batch_size=128,
                         eval_every_epochs=0, verbose=0)
    return train(config), model_dir


def test_the_trainer_writes_what_run_dir_reads(digits_run):
    result, model_dir = digits_run
    run = RunDir(model_dir)
    run.check_finished()
    config = run.read_config()
    assert config.model == TINY_ARCH and config.dataset == "digits"
    assert config.num_classes == 10 and config.class_names == tuple(DIGITS)
    assert config.eval_image_size == 16 and config.data_dir is None
    assert (config.num_train, config.num_val) == (1438, 359)
    assert config.global_batch_size == 128 and config.steps_per_epoch == 11
    assert config.plan == tuple(s.to_dict() for s in result.plan)
    assert config.train_config["epochs"] == 1
    assert config.variant_record().name == result.model_name == "efficientnet-custom"
    # config.json holds exactly RunConfig's keys: nothing written beside RunDir.
    on_disk = json.loads(run.config_path.read_text())
    assert set(on_disk) == {f.name for f in dataclasses.fields(RunConfig)}
    assert run.read_labels() == DIGITS and run.class_names() == DIGITS
    assert run.eval_image_size() == 16 and run.eval_image_size(override=24) == 24
    metrics = run.read_metrics()
    assert metrics["steps"] == result.steps == 11 and metrics["final"]["count"] == 359
    assert [h["epoch"] for h in run.history()] == [0] and run.history(before_epoch=0) == []
    assert {"randaug", "mixup", "cutmix"} <= set(metrics["history"][0])
    assert result.final_model_path == str(run.final_model_path)
    model = run.load_model()
    for a, b in zip(model_weights(model), model_weights(result.model)):
        np.testing.assert_array_equal(a, b)
    x = np.zeros((2, 16, 16, 3), np.float32)
    assert model.predict(x, verbose=0).shape == (2, 10)
    assert run.curves_path.stat().st_size > 0 and run.checkpoints_dir.is_dir()
    assert run.logs_dir.is_dir()
    assert not list(model_dir.rglob("*.tmp")) and not list(model_dir.glob("tmp_*"))


def _config(**overrides) -> RunConfig:
    fields = dict(model="efficientnetv2-b0", variant={"name": "efficientnetv2-b0"},
                  dataset="digits", num_classes=3, class_names=("a", "b", "c"),
                  eval_image_size=32, plan=({"index": 0, "image_size": 32},),
                  learning_rate_schedule={"base_lr": 0.004}, train_config={"epochs": 2})
    fields.update(overrides)
    return RunConfig(**fields)


def test_run_config_round_trips(tmp_path):
    config = _config()
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    run = RunDir(tmp_path / "new" / "run")  # created on first write
    run.write_config(config)
    assert run.has_config() and run.read_config() == config
    assert "plan" in RunConfig.RESUME_KEYS and "variant" in RunConfig.RESUME_KEYS


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(_config())
    run.write_metrics({"history": [{"epoch": 0, "loss": np.float32(0.5)}]})
    run.write_labels(["a", "b"])
    write_json(tmp_path / "other.json", {"x": [np.int64(0), np.float64(1.0), 2]})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "labels.txt", "metrics.json", "other.json"]
    assert run.history() == [{"epoch": 0, "loss": 0.5}]
    assert json.loads((tmp_path / "other.json").read_text()) == {"x": [0, 1.0, 2]}
    assert run.read_labels() == ["a", "b"]


def test_absent_or_broken_files(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_labels() is None and run.read_metrics() == {} and run.history() == []
    assert run.class_names(3) == ["0", "1", "2"]
    run.metrics_path.write_text("{half")
    assert run.read_metrics() == {}  # rewritten every epoch: a reader just waits
    run.config_path.write_text("{not json")
    with pytest.raises(RunDirError, match=f"cannot read {run.config_path}"):
        run.read_config()
    run.config_path.write_text("[1, 2]")
    with pytest.raises(RunDirError, match="is not a JSON object"):
        run.read_config()
    run.config_path.write_text(json.dumps({"model": "x"}))
    with pytest.raises(RunDirError, match=f"{run.config_path} lacks .*variant"):
        run.read_config()


def test_check_finished_says_what_is_missing(tmp_path):
    with pytest.raises(RunDirError, match="does not exist or is not a directory"):
        RunDir(tmp_path / "nowhere").check_finished()
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="has no final_model.keras or config.json; is the "
                                          "training run finished"):
        run.check_finished()
    run.write_config(_config())
    with pytest.raises(RunDirError, match="has no final_model.keras;"):
        run.check_finished()
    run.final_model_path.write_bytes(b"")
    run.check_finished()
    assert run.eval_image_size() == 32


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, mask):
    # mkstemp makes 0600: models.config, run files and final_model.keras were unreadable
    # to a TF-Serving container running as another user, whatever the umask.
    import os
    import stat

    from keras_effnet.run_dir import write_text
    old = os.umask(mask)
    try:
        write_text(tmp_path / "models.config", "model_config_list {}\n")
        RunDir(tmp_path / "run").write_labels(["a"])
    finally:
        os.umask(old)
    for path in (tmp_path / "models.config", tmp_path / "run" / "labels.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
