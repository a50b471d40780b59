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


# --- a run directory that does not hold what config.json says (issue 31) ----------------


def _tiny_run(tmp_path, name="tiny-run", arch=TINY_ARCH, classes=2, size=32):
    from test_export_support import make_run_dir

    from keras_effnet.variants import custom_variant
    variant = custom_variant(arch, name=name)
    model = tiny_model(size=None, classes=classes, name=name) if arch is TINY_ARCH else \
        __import__("keras_effnet").build(arch=arch, classes=classes, name=name)
    return make_run_dir(tmp_path / "run", model, variant, eval_image_size=size,
                        dataset="digits"), variant


def _export(tmp_path, run, **options):
    config = ExportConfig(model_dir=str(run), formats=("saved_model",),
                          saved_models=str(tmp_path / "saved_models"), **options)
    return job.run(config, log=lambda _: None)


def _nothing_exported(tmp_path):
    base = tmp_path / "saved_models"
    return not base.exists() or not [p for p in base.rglob("*")
                                     if p.name != ".export.lock"]


def test_a_swapped_final_model_is_refused_and_nothing_is_written(tmp_path):
    from keras_effnet.run_dir import RunDir
    run, _ = _tiny_run(tmp_path)
    other = tiny_model(size=None, classes=2, name="tiny-run")
    wider = __import__("keras_effnet").build(  # same name, another network
        arch=["r1_k3_s1_e1_i8_o16_f", "r1_k3_s2_e4_i16_o16_se0.25"], classes=2,
        name="tiny-run")
    assert other.count_params() != wider.count_params()
    RunDir(run).save_model(wider)
    with pytest.raises(ConfigError, match="is not the network .*config.json describes: it "
                       "has .* parameters") as error:
        _export(tmp_path, run)
    assert error.value.field == "model_dir" and _nothing_exported(tmp_path)


def test_an_edited_variant_name_is_refused(tmp_path):
    import json
    run, _ = _tiny_run(tmp_path)
    path = run / "config.json"
    data = json.loads(path.read_text())
    data["variant"]["name"] = "efficientnet-b7"  # the served name would lie
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="it is named 'tiny-run', config.json's variant "
                       "'efficientnet-b7'"):
        _export(tmp_path, run)
    assert _nothing_exported(tmp_path)


@pytest.mark.parametrize("size", [-5, "abc", 2.5, True, 10 ** 9])
def test_a_bad_eval_image_size_is_one_error_and_leaves_no_folder(tmp_path, size):
    import json
    run, _ = _tiny_run(tmp_path)
    path = run / "config.json"
    data = json.loads(path.read_text())
    data["eval_image_size"] = size
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="eval_image_size") as error:
        _export(tmp_path, run)
    assert error.value.field in ("model_dir", "image_size")
    assert _nothing_exported(tmp_path)


def test_a_failed_export_leaves_no_empty_model_folder(tmp_path):
    dirs = [tmp_path / "saved_models", tmp_path / "tflite"]
    with pytest.raises(RuntimeError):
        with serving_config.reserve_version(dirs, "cats"):
            assert (dirs[0] / "cats").is_dir()
            raise RuntimeError("the conversion failed")
    assert not (dirs[0] / "cats").exists() and not (dirs[1] / "cats").exists()
    (dirs[0] / "dogs" / "1").mkdir(parents=True)  # an earlier export's: kept
    with serving_config.reserve_version(dirs, "dogs") as version:
        assert version == 2
    assert (dirs[0] / "dogs" / "1").is_dir() and not (dirs[1] / "dogs").exists()
