"""keras_effnet.data folder source: real images of every format, and the files to skip."""

import io
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image  # Pillow comes with matplotlib (a core dependency): BMP and GIF writer
from sklearn.datasets import load_sample_images

from keras_effnet import data


def _photos():
    """scikit-learn's two shipped JPEG photos (china, flower), shrunk to 48x64 uint8."""
    return [tf.cast(tf.image.resize(img, [48, 64], antialias=True), tf.uint8).numpy()
            for img in load_sample_images().images]


def _pil_bytes(array, mode, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, fmt)
    return buf.getvalue()


def _write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


@pytest.fixture()
def image_dir(tmp_path):
    china, flower = _photos()
    root = str(tmp_path / "images")
    jpeg = tf.io.encode_jpeg(china).numpy()
    good = {
        "china/photo.jpg": jpeg,
        "china/gray.png": tf.io.encode_png(china[..., :1]).numpy(),
        "china/rgba.png": tf.io.encode_png(
            np.concatenate([china, np.full_like(china[..., :1], 128)], -1)).numpy(),
        "china/photo.bmp": _pil_bytes(china, "RGB", "BMP"),
        "flower/photo.JPEG": tf.io.encode_jpeg(flower).numpy(),
        "flower/palette.gif": _pil_bytes(flower, "P", "GIF"),
        "flower/sub/dir/photo.png": tf.io.encode_png(flower).numpy(),
        "flower/gray.jpg": tf.io.encode_jpeg(flower[..., 1:2]).numpy(),
    }
    bad = {
        "china/truncated.jpg": (jpeg[:len(jpeg) // 2], "cannot decode"),
        "flower/empty.jpg": (b"", "empty file"),
        "flower/notes.png": (b"these are my notes, not a picture\n" * 4, "cannot decode"),
        "china/README.txt": (b"about these images", "unsupported file extension"),
        "china/one_bit.bmp": (_pil_bytes(china, "1", "BMP"), "cannot decode"),
        "loose.jpg": (jpeg, "not inside a class sub-folder"),
    }
    for name, content in good.items():
        _write(os.path.join(root, name), content)
    for name, (content, _) in bad.items():
        _write(os.path.join(root, name), content)
    _write(os.path.join(root, "flower", ".DS_Store"), b"\0\1")  # hidden: ignored silently
    return root, good, bad


def test_folder_skips_bad_files_with_reasons_and_loads_the_rest_as_rgb(image_dir, caplog):
    root, good, bad = image_dir
    with caplog.at_level(logging.WARNING, logger="keras_effnet.data"):
        source = data.get_source("folder", data_dir=root)
    assert source.name == "folder" and source.class_names == ["china", "flower"]
    assert source.num_train + source.num_val == len(good) == 8
    assert (source.num_train, source.num_val) == (6, 2)  # 20 % of 4 per class -> 1
    skipped = {os.path.relpath(p, root): reason for p, reason in source.skipped}
    assert set(skipped) == set(bad)
    for name, (_, reason) in bad.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert f"skipped {len(bad)} file(s)" in caplog.text and "truncated.jpg" in caplog.text

    train = list(source.train_dataset(32, 4, augment=data.Augment.none(),
                                      drop_remainder=False).as_numpy_iterator())
    assert sum(len(y) for _, y in train) == 6
    images, labels = next(source.eval_dataset(29, 8).as_numpy_iterator())
    assert images.shape == (2, 29, 29, 3) and labels.argmax(1).tolist() == [0, 1]
    assert 0 <= images.min() and images.max() <= 255 and images.max() > 100

    # Every accepted format decodes to RGB.
    reference = data.decode_and_center_crop(good["china/photo.bmp"], 32).numpy()
    for name in good:
        image = data.decode_and_center_crop(tf.io.read_file(os.path.join(root, name)), 32)
        assert image.shape == (32, 32, 3), name
    gray = data.decode_and_center_crop(good["china/gray.png"], 32).numpy()
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    # RGBA: alpha dropped, colours kept (PNG and BMP are both lossless).
    rgba = data.decode_and_center_crop(good["china/rgba.png"], 32).numpy()
    np.testing.assert_allclose(rgba, reference, atol=1e-3)
    assert data.check_image_file(os.path.join(root, "flower/palette.gif")) is None

    # A file that disappears after the scan is dropped from the run, not fatal, and the
    # pass keeps its known length: the first image of the pass stands in for it.
    def one_pass():
        ds = source.train_dataset(24, 4, augment=data.Augment.none(), drop_remainder=False)
        assert int(ds.cardinality()) == 2
        return np.concatenate([x for x, _ in ds.as_numpy_iterator()])

    before = one_pass()
    os.remove(source._items[source._train_idx[0]].decode())
    after = one_pass()
    assert len(after) == source.num_train
    assert any(np.array_equal(np.delete(before, i, 0), after[:-1]) for i in range(len(before)))
    np.testing.assert_array_equal(after[-1], after[0])


def test_folder_train_validation_layout(tmp_path):
    china, flower = _photos()
    root = tmp_path / "split"
    for split, count in [("train", 3), ("validation", 2)]:
        for label, photo in [("china", china), ("flower", flower)]:
            for i in range(count):
                _write(str(root / split / label / f"{i}.png"),
                       tf.io.encode_png(np.roll(photo, i, axis=1)).numpy())
    _write(str(root / "validation" / "unknown" / "x.png"), tf.io.encode_png(china).numpy())
    source = data.FolderSource(str(root))
    assert source.class_names == ["china", "flower"]
    assert (source.num_train, source.num_val) == (6, 4)
    assert [os.path.relpath(p, root) for p, _ in source.skipped] == ["validation/unknown/x.png"]
    labels = np.concatenate([y.argmax(1) for _, y in
                             source.eval_dataset(16, 3).as_numpy_iterator()])
    assert labels.tolist() == [0, 0, 1, 1]

    # Errors say what to do.
    with pytest.raises(FileNotFoundError, match="one sub-folder of images per class"):
        data.get_source("folder", data_dir=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No class sub-folders"):
        data.get_source("folder", data_dir=str(tmp_path / "empty"))
    _write(str(tmp_path / "bad" / "cat" / "a.jpg"), b"")
    with pytest.raises(ValueError, match="No readable images"):
        data.get_source("folder", data_dir=str(tmp_path / "bad"))
