"""The README's pretrained-weights example runs as written (weights from a mirror on
127.0.0.1, a folder of JPEGs), and its weights table is the generated one."""

import dataclasses
import pathlib

import keras
import numpy as np
import pytest

from weights_fixtures import md5, weight_server, write_keras_h5

from keras_effnet.port import keras_applications_model
from keras_effnet.weights import WEIGHTS
from keras_effnet.weights.table import format_table, list_weights

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _example() -> str:
    block = _readme().split("<!-- weights-example -->", 1)[1]
    return block.split("```python", 1)[1].split("\n```", 1)[0]


def test_the_readme_weights_table_is_the_generated_one():
    table = _readme().split("<!-- weights-table -->", 1)[1].split("<!-- /weights-table -->")[0]
    assert table.strip() == format_table(list_weights(), by_variant=True)


def _photos(root: pathlib.Path, classes: int = 5, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "photos" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            pixels[:, :, c % 3] = 40 * c
            keras.utils.save_img(folder / f"{i}.jpg", pixels)


@pytest.mark.slow
def test_the_readme_weights_example_runs(tmp_path, monkeypatch):
    row = WEIGHTS[("efficientnetv2-b0", "imagenet")]
    root = tmp_path / "mirror"
    with weight_server(root, monkeypatch, tmp_path / "cache") as server:
        notop = keras_applications_model("efficientnetv2-b0", include_top=False)
        path = write_keras_h5(notop, server.path_of(row.origin_notop))
        monkeypatch.setitem(WEIGHTS, (row.variant, row.tag),
                            dataclasses.replace(row, md5=(row.md5[0], md5(path))))
        _photos(tmp_path)
        monkeypatch.chdir(tmp_path)
        keras.backend.clear_session()
        namespace: dict = {}
        exec(compile(_example(), "README.md (weights example)", "exec"), namespace)
        assert server.requests == ["/tensorflow/keras-applications/efficientnet_v2/"
                                   "efficientnetv2-b0_notop.h5"]
    model = namespace["model"]
    assert model.output_shape == (None, 5)
    # The backbone is the file's (BatchNorm frozen throughout keeps its statistics).
    ours = model.get_layer("stage4_block01_dw_bn").get_weights()[2]
    theirs = notop.get_layer("block4a_bn").get_weights()[2]
    np.testing.assert_allclose(ours, theirs)
    assert np.isfinite(model.history.history["loss"]).all()
