"""The weights benchmark section: load times and agreement, from a local mirror."""

import json
import os

import pytest

from keras_effnet.bench import config as config_lib
from keras_effnet.bench import sections as registry
from keras_effnet.bench.sections import weights
from keras_effnet.errors import ConfigError


def test_agreement_is_relative_to_the_reference_scale():
    got = weights.agreement([[1.0, 2.0], [3.0, 0.0]], [[1.0, 2.5], [4.0, 1.0]])
    assert got == {"max_rel_diff": 0.25, "top1_agreement": 1.0}
    assert weights.agreement([[2.0, 1.0]], [[1.0, 2.0]])["top1_agreement"] == 0.0


def test_weights_tags_are_checked():
    with pytest.raises(ConfigError, match="weights_tags must be variant:tag pairs.*'efficientnet-b0:jft'"):
        config_lib.apply_overrides(config_lib.quick_config(), ["weights_tags=efficientnet-b0:jft"])
    assert "weights" in registry.CPU_SECTIONS


@pytest.mark.slow
def test_tiny_weights_section_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    cfg = config_lib.apply_overrides(config_lib.quick_config(), [
        "weights_tags=efficientnet-lite0:imagenet,efficientnet-b0:imagenet", "repeats=1",
        "weights_images=2"])
    result = weights.run(cfg, tmp_path, registry.Context())
    json.dumps(result)
    rows = {r["weights"]: r for r in result["rows"]}
    assert list(rows) == ["efficientnet-lite0 imagenet", "efficientnet-b0 imagenet"]
    for row in rows.values():
        assert row["max_rel_diff"] <= 1e-4 and row["top1_agreement"] == 1.0
        assert row["first_s"] > 0 and row["cached_s"] > 0 and row["build_s"] > 0
    assert rows["efficientnet-b0 imagenet"]["keras_s"] > 0  # the peer, keras' own loading
    assert rows["efficientnet-lite0 imagenet"]["keras_s"] is None
    assert rows["efficientnet-b0 imagenet"]["params"] == 5_330_564
    # The run leaves the environment, keras' cache dir and the table as they were.
    assert os.environ["KERAS_HOME"] == str(tmp_path / "home")
    assert "KERAS_EFFNET_WEIGHTS_MIRROR" not in os.environ
    import keras.src.backend.config as keras_config
    from keras_effnet.weights import WEIGHTS
    assert "weights-bench-" not in keras_config._KERAS_DIR
    assert WEIGHTS[("efficientnet-b0", "imagenet")].md5[0] == "902e53a9f72be733fc0bcb005b3ebbac"
