"""Export under unlucky conditions (issue 16, findings 2, 6, 8 and 9): versions past
int64, a hand-edited models.config that no longer parses, two exports at once, a model
name with a trailing newline."""

import threading
import warnings

import pytest
from test_export_support import TINY_ARCH, tiny_model

from keras_effnet.errors import ConfigError
from keras_effnet.export import job, saved_model, serving_config
from keras_effnet.export.config import ExportConfig

MAX = 2 ** 63 - 1


def test_a_version_past_int64_is_refused():
    with pytest.raises(ConfigError, match="version must be an integer from 1 to "
                                          "9223372036854775807") as error:
        ExportConfig(model="efficientnet-lite0", version=2 ** 63)
    assert error.value.field == "version"
    ExportConfig(model="efficientnet-lite0", version=MAX)  # the largest is fine
    with pytest.raises(ValueError, match="version must be an integer from 1 to"):
        saved_model.export_saved_model(tiny_model(), "unused", version=2 ** 63 + 5)


def test_a_version_directory_past_int64_breaks_no_later_export(tmp_path):
    # What an export of a nanosecond timestamp used to leave behind: from then on every
    # models.config rewrite of the base path crashed.
    for name, version in (("cats", "1"), ("cats", str(2 ** 63 + 7)), ("dogs", "3")):
        (tmp_path / name / version).mkdir(parents=True)
    assert serving_config.existing_versions(tmp_path / "cats") == [1]
    assert serving_config.next_version(tmp_path / "cats") == 2
    path = serving_config.update_models_config(tmp_path)
    text = path.read_text()
    assert 'name: "cats"' in text and 'name: "dogs"' in text
    assert str(2 ** 63 + 7) not in text
    # The largest version has no successor: a clear error, not an overflow.
    (tmp_path / "cats" / str(MAX)).mkdir()
    with pytest.raises(serving_config.VersionExistsError, match="the largest TF-Serving"):
        serving_config.next_version(tmp_path / "cats")


@pytest.mark.parametrize("broken", [
    'model_config_list {\n  config {\n    name: "mine"\n',  # unbalanced brace
    'model_config_list { config { name: "mine" colour: "red" } }\n',  # unknown field
    b"\xff\xfe not text at all",
])
def test_a_broken_models_config_is_kept_as_a_backup_with_a_warning(tmp_path, broken):
    (tmp_path / "cats" / "1").mkdir(parents=True)
    path = tmp_path / serving_config.MODELS_CONFIG
    path.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    with pytest.warns(serving_config.ModelsConfigWarning, match="did not parse") as caught:
        serving_config.update_models_config(tmp_path)
    backups = list(tmp_path.glob("models.config.broken-*"))
    assert len(backups) == 1 and str(backups[0]) in str(caught[0].message)
    assert backups[0].read_bytes() == (broken if isinstance(broken, bytes) else broken.encode())
    assert 'name: "cats"' in path.read_text()
    # A file that parses is rewritten without a warning or a backup.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serving_config.update_models_config(tmp_path)
    assert len(list(tmp_path.glob("models.config.broken-*"))) == 1


@pytest.mark.parametrize("name", ["abc\n", "abc\r", "a" * 300, "-abc", "ab c", "../up"])
def test_model_names_that_are_not_plain_directory_names_are_refused(name):
    with pytest.raises(ConfigError, match="model_name") as error:
        ExportConfig(model="efficientnet-lite0", model_name=name)
    assert error.value.field == "model_name"
    with pytest.raises(ValueError, match="model_name"):
        saved_model.export_saved_model(tiny_model(), "unused", model_name=name)


def test_reservations_give_concurrent_exports_different_versions(tmp_path):
    bases = [tmp_path / "saved_models", tmp_path / "tflite"]
    (bases[1] / "m" / "4").mkdir(parents=True)  # a version only one format has
    got, started, release = [], threading.Event(), threading.Event()

    def hold():
        with serving_config.reserve_version(bases, "m") as version:
            got.append(version)
            started.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    started.wait(30)
    with serving_config.reserve_version(bases, "m") as second:
        assert (got[0], second) == (5, 6)
        # An explicit version that another export holds is refused, naming it.
        with pytest.raises(serving_config.VersionExistsError, match="another export"):
            with serving_config.reserve_version(bases, "m", 5):
                pass
    release.set()
    thread.join()
    # Released (or its process died): the reservation lapses.
    assert serving_config.next_version(*(b / "m" for b in bases)) == 5


def test_two_exports_started_together_both_finish(tmp_path):
    # Export A reserves its version first; export B runs completely while A is still
    # working (inside A's first progress line). Before, both chose version 1 up front
    # and A failed at the end with "version 1 exists, omit the version".
    config = ExportConfig(model=TINY_ARCH, num_classes=2, formats=("saved_model",),
                          saved_models=str(tmp_path / "saved_models"), image_size=32,
                          model_name="pair")
    reports = {}

    def log_a(line):
        if line.startswith("built") and "b" not in reports:
            reports["b"] = job.run(config, log=lambda _: None)

    reports["a"] = job.run(config, log=log_a)
    assert (reports["a"].version, reports["b"].version) == (1, 2)
    assert serving_config.existing_versions(tmp_path / "saved_models" / "pair") == [1, 2]
    assert not list((tmp_path / "saved_models" / "pair").glob(".reserved-*"))
