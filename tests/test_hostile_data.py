"""Training folders built to mislead (issue 16, findings 3 and 5): symbolic-link loops
and duplicates, and class names holding line breaks."""

import os

import numpy as np
import pytest
from test_hostile_support import deadline, encode

from keras_effnet.data import FolderSource
from keras_effnet.run_dir import RunDir, RunDirError


def _photos(root, classes=("cats", "dogs"), per_class=6, size=12):
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(encode(pixels, "PNG"))


def _real_paths(source, indices):
    return [os.path.realpath(source._items[i].decode()) for i in indices]


def test_symlink_loops_count_each_image_once(tmp_path):
    root = tmp_path / "photos"
    _photos(root)
    os.symlink(".", root / "cats" / "loop")         # cats/loop/loop/... -> cats
    os.symlink("..", root / "dogs" / "up")          # dogs/up -> the data folder
    os.symlink(".", root / "everything")            # a "class" that is the data folder
    os.symlink("cats", root / "kittens")            # a second name for a class
    os.symlink("0.png", root / "cats" / "again.png")  # one photo twice
    with deadline(60):
        source = FolderSource(str(root))
    assert source.class_names == ["cats", "dogs"]
    assert source.num_train + source.num_val == 12
    train = _real_paths(source, source._train_idx)
    val = _real_paths(source, source._val_idx)
    assert len(set(train + val)) == 12 and not set(train) & set(val)
    reasons = {os.path.relpath(p, root): r for p, r in source.skipped}
    assert "counted once" in reasons["cats/again.png"]
    assert "not a class" in reasons["everything"] and "not a class" in reasons["kittens"]
    assert "not scanned" in reasons["cats/loop"] and "not scanned" in reasons["dogs/up"]


def test_a_photo_linked_into_both_splits_is_used_once(tmp_path):
    root = tmp_path / "photos"
    _photos(root / "train")
    _photos(root / "validation", per_class=2)
    os.symlink(os.path.abspath(root / "train" / "cats" / "0.png"),
               root / "validation" / "cats" / "leak.png")
    os.symlink(os.path.abspath(root / "train" / "dogs"), root / "validation" / "dogs" / "all")
    source = FolderSource(str(root))
    train = _real_paths(source, source._train_idx)
    val = _real_paths(source, source._val_idx)
    assert (len(train), len(val)) == (12, 4) and not set(train) & set(val)


@pytest.mark.parametrize("name", ["ca\nt", "ca\rt", "ca\u2028t", "ca\x85t", "ca\x0bt"])
def test_class_names_with_line_breaks_are_refused_when_the_data_loads(tmp_path, name):
    root = tmp_path / "photos"
    _photos(root, classes=("dogs", name), per_class=2)
    with pytest.raises(ValueError, match="has a line break in its name; rename it"):
        FolderSource(str(root))


def test_labels_are_one_name_per_newline(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match="must not hold line breaks") as error:
        run.write_labels(["cat", "do\u2028g"])
    assert error.value.field == "class_names" and not run.labels_path.exists()
    # A file written by someone else with a U+2028 inside a name reads back as one name,
    # as TF-Serving's label table reads it.
    run.labels_path.write_text("cat\nd\u2028og\nfish\r\n", encoding="utf-8")
    assert run.read_labels() == ["cat", "d\u2028og", "fish"]
