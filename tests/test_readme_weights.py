"""The README's pretrained-weights example runs as written (weights from a mirror on
127.0.0.1, a folder of JPEGs), and its weights table is the generated one."""

import dataclasses
import pathlib

import keras
import numpy as np
import pytest

from weights_fixtures import md5, weight_server, write_keras_h5, write_photos

from keras_effnet.port import keras_applications_model
from keras_effnet.weights import WEIGHTS
from keras_effnet.weights.table import format_table, list_weights

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def example(marker: str) -> str:
    """The Python block after ``<!-- marker -->`` in README.md."""
    block = _readme().split(f"<!-- {marker} -->", 1)[1]
    return block.split("```python", 1)[1].split("\n```", 1)[0]


def test_the_readme_weights_table_is_the_generated_one():
    table = _readme().split("<!-- weights-table -->", 1)[1].split("<!-- /weights-table -->")[0]
    assert table.strip() == format_table(list_weights(), by_variant=True)


@pytest.mark.slow
def test_the_readme_weights_example_runs(tmp_path, monkeypatch):
    row = WEIGHTS[("efficientnetv2-b0", "imagenet")]
    root = tmp_path / "mirror"
    with weight_server(root, monkeypatch, tmp_path / "cache") as server:
        notop = keras_applications_model("efficientnetv2-b0", include_top=False)
        path = write_keras_h5(notop, server.path_of(row.origin_notop))
        monkeypatch.setitem(WEIGHTS, (row.variant, row.tag),
                            dataclasses.replace(row, md5=(row.md5[0], md5(path))))
        write_photos(tmp_path)
        monkeypatch.chdir(tmp_path)
        keras.backend.clear_session()
        namespace: dict = {}
        exec(compile(example("weights-example"), "README.md (weights example)", "exec"),
             namespace)
        assert server.requests == ["/tensorflow/keras-applications/efficientnet_v2/"
                                   "efficientnetv2-b0_notop.h5"]
    model = namespace["model"]
    assert model.output_shape == (None, 5)
    # The backbone is the file's (BatchNorm frozen throughout keeps its statistics).
    ours = model.get_layer("stage4_block01_dw_bn").get_weights()[2]
    theirs = notop.get_layer("block4a_bn").get_weights()[2]
    np.testing.assert_allclose(ours, theirs)
    assert np.isfinite(model.history.history["loss"]).all()
