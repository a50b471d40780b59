"""--data_dir without --dataset: the source is read from the directory's contents."""

import pytest

from keras_effnet.data.detect import detect_source
from keras_effnet.errors import ConfigError
from keras_effnet.train.config import TrainConfig


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_class_folders_of_images_are_a_folder_source(tmp_path):
    _touch(tmp_path / "cat" / "deep" / "a.JPG")
    _touch(tmp_path / "dog" / "b.png")
    assert detect_source(str(tmp_path)) == "folder"
    config = TrainConfig(data_dir=str(tmp_path))
    assert config.dataset == "folder"


def test_split_layout_is_a_folder_source(tmp_path):
    _touch(tmp_path / "train" / "cat" / "a.webp")
    _touch(tmp_path / "validation" / "cat" / "b.webp")
    assert detect_source(str(tmp_path)) == "folder"


def test_tfrecord_shards_are_a_tfrecord_source(tmp_path):
    _touch(tmp_path / "train-00000-of-00002.tfrecord")
    _touch(tmp_path / "cat" / "stray.png")  # shards win: they are the data
    assert detect_source(str(tmp_path)) == "tfrecord"
    assert TrainConfig(data_dir=str(tmp_path)).dataset == "tfrecord"


@pytest.mark.parametrize("layout", [[], ["notes.txt"], ["cat/readme.md"], [".hidden/a.png"]])
def test_anything_else_is_refused_naming_data_dir(tmp_path, layout):
    for name in layout:
        _touch(tmp_path / name)
    with pytest.raises(ConfigError, match="holds neither class sub-folders") as info:
        TrainConfig(data_dir=str(tmp_path))
    assert info.value.field == "data_dir"


def test_missing_file_remote_and_digits_with_data_dir(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig(data_dir=str(tmp_path / "nope"))
    _touch(tmp_path / "file.png")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        TrainConfig(data_dir=str(tmp_path / "file.png"))
    with pytest.raises(ConfigError, match="pass dataset=tfrecord"):
        TrainConfig(data_dir="gs://bucket/shards")
    assert TrainConfig(data_dir="gs://bucket/shards", dataset="tfrecord").dataset == "tfrecord"
    for embedded in ("mnist5k", "digits"):
        with pytest.raises(ConfigError, match="embedded and reads no data_dir") as info:
            TrainConfig(dataset=embedded, data_dir=str(tmp_path))
        assert info.value.field == "data_dir"
    assert TrainConfig().dataset == "mnist5k"  # the embedded default
