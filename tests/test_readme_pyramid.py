"""The README's segmentation example on the feature pyramid runs as written."""

import pathlib

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _example() -> str:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- pyramid-example -->", 1)[1]
    return block.split("```python", 1)[1].split("\n```", 1)[0]


def test_the_readme_segmentation_head_trains_on_the_pyramid():
    keras.backend.clear_session()
    namespace: dict = {}
    exec(compile(_example(), "README.md (pyramid example)", "exec"), namespace)
    model, history = namespace["model"], namespace["history"]
    size, classes = namespace["size"], namespace["classes"]
    assert model.output_shape == (None, size, size, classes)
    losses = history.history["loss"]
    assert len(losses) == 1 and np.isfinite(losses).all()
    assert namespace["predicted"].shape == (2, size, size)
    # Each level of the head was fed from the backbone's pyramid, P2 to P5.
    assert sorted(namespace["pyramid"]) == ["P1", "P2", "P3", "P4", "P5"]
    masks = namespace["masks"]
    assert masks.shape == (48, size, size) and set(np.unique(masks)) <= set(range(classes))
    assert 0 < (masks > 0).mean() < 0.6  # ink and background both present
