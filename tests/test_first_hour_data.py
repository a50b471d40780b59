"""A user's first hour with the package's sources: crops they asked for, and lengths.

``Augment.none()`` trains on the images evaluation sees (no random crop); the recipe's
``Augment()`` keeps the source's Inception crop. Every dataset a source returns says how
many batches it holds where the source knows, so ``model.fit`` shows real progress.
"""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from test_data_tfds import fake_tfds  # noqa: F401  (a fixture: the TFDS stand-in)

from keras_effnet import data, progressive_plan

CLASSES, PER_CLASS = ("cat", "dog"), 10


def _gradient(value):
    """A 40x56 JPEG whose crops differ from each other: a gradient plus the class tint."""
    y, x = np.mgrid[0:40, 0:56]
    image = np.stack([x * 4, y * 6, np.full_like(x, value)], -1)
    return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8)).numpy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for label, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i in range(PER_CLASS):
            (root / name / f"{i}.jpg").write_bytes(_gradient(100 * label + 5 * i))
    return data.get_source("folder", data_dir=str(root))


def _pass(ds):
    return np.concatenate([images for images, _ in ds.as_numpy_iterator()])


def _sorted(images):
    return sorted(image.tobytes() for image in images)


# --- (b) the crop is a field of Augment --------------------------------------------------

def test_augment_none_does_not_crop_and_trains_on_the_eval_view(folder):
    none = data.Augment.none()
    seeds = [_pass(folder.train_dataset(24, 4, augment=none, seed=seed, flip=False))
             for seed in (0, 1)]
    # No random draw is left: two seeds give the same images (in another order), and
    # each is the eval preprocessing of a training file.
    assert _sorted(seeds[0]) == _sorted(seeds[1])
    train_files = [folder._items[i] for i in folder._train_idx]
    eval_view = [data.decode_and_center_crop(tf.io.read_file(path), 24).numpy()
                 for path in train_files]
    assert _sorted(seeds[0]) == _sorted(eval_view)
    assert none.crop_area_range is None


def test_the_recipe_keeps_the_sources_inception_crop(folder):
    stage = progressive_plan({"train_size": 24}, epochs=1, stages=1)[0]
    assert stage.augment.crop_area_range == "source"
    assert stage.augment.area_range(folder.crop_area_range) == (0.05, 1.0)
    assert data.Augment().area_range(data.DigitsSource.crop_area_range) == (0.25, 1.0)
    no_randaug = data.Augment(randaug_magnitude=None)  # the crop alone
    seeds = [_pass(folder.train_dataset(24, 4, augment=no_randaug, seed=seed, flip=False))
             for seed in (0, 1)]
    assert _sorted(seeds[0]) != _sorted(seeds[1])


def test_crop_area_range_is_checked_and_round_trips_through_json():
    assert data.Augment(crop_area_range=[0.5, 1]).crop_area_range == (0.5, 1.0)
    for bad in [(0.0, 1.0), (0.6, 0.5), (0.5, 1.5), "all", (0.5,), (True, 1.0), 0.5]:
        with pytest.raises(ValueError, match="crop_area_range must be"):
            data.Augment(crop_area_range=bad)
    assert data.Augment().record()["crop"] == "source"
    assert data.Augment.none().record()["crop"] is None
    assert data.Augment(crop_area_range=(0.5, 1.0)).record()["crop"] == [0.5, 1.0]


# --- (c) known lengths ---------------------------------------------------------------

def _count(ds):
    return sum(1 for _ in ds)


@pytest.mark.parametrize("name", ["folder", "digits", "mnist5k"])
def test_in_memory_and_folder_sources_know_their_length(name, folder):
    source = folder if name == "folder" else data.get_source(name)
    batch = 4 if name == "folder" else 256
    cases = [(source.train_dataset(16, batch, augment=data.Augment.none()),
              source.num_train // batch),
             (source.train_dataset(16, batch, drop_remainder=False,
                                   augment=data.Augment(None, mixup_alpha=0.2)),
              -(-source.num_train // batch)),
             (source.eval_dataset(16, batch), -(-source.num_val // batch))]
    for ds, batches in cases:
        assert int(ds.cardinality()) == batches
        assert _count(ds) == batches


def test_tfrecord_training_split_knows_its_length(tmp_path):
    png = tf.io.encode_png(np.full((10, 12, 3), 7, np.uint8)).numpy()
    for shard in range(2):
        data.write_tfrecord(str(tmp_path / f"train-{shard:05d}-of-00002"),
                            [(png, i % 2) for i in range(5)])
    data.write_tfrecord(str(tmp_path / "validation-00000-of-00001"), [(png, 0), (png, 1)])
    source = data.get_source("tfrecord", data_dir=str(tmp_path))
    ds = source.train_dataset(8, 3, augment=data.Augment.none())
    assert int(ds.cardinality()) == 3 == _count(ds)  # 10 records, batches of 3
    # Two pipelines on three files read whole files: their counts are not kept.
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=2)
    one_file = source.train_dataset(8, 2, input_context=ctx, augment=data.Augment.none())
    assert int(one_file.cardinality()) == tf.data.UNKNOWN_CARDINALITY


def test_tfds_training_split_knows_its_length(fake_tfds):  # noqa: F811
    source = data.get_source("tfds:toy", data_dir="/tfds")
    ds = source.train_dataset(12, 2, augment=data.Augment.none())
    assert int(ds.cardinality()) == 3 == _count(ds)  # 7 examples, batches of 2
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=2)
    part = source.train_dataset(12, 2, augment=data.Augment.none(), input_context=ctx,
                                drop_remainder=False)
    assert int(part.cardinality()) == 3 == _count(part)  # records 1, 3, 5 in batches of 1


def test_model_fit_on_a_folder_shows_its_steps_and_does_not_run_out(folder, capsys):
    import keras

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    steps = folder.num_train // 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(folder.train_dataset(16, 4, augment=data.Augment.none()), epochs=2,
                  validation_data=folder.eval_dataset(16, 4), verbose=2)
    out = capsys.readouterr().out
    assert "Unknown" not in out and f"{steps}/{steps}" in out, out
    assert not [w for w in caught if "ran out of data" in str(w.message)]


# --- (a) a folder of one's own images, trained and exported as the README says --------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25"


def _script(name, *args):
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """scripts/train.py on a folder of 128 small JPEGs (int8 calibration takes 100 of the
    training images), the default export included: pruned to 50 % with its fine-tuning's
    steps taken from the data."""
    root = tmp_path_factory.mktemp("first_hour")
    photos = root / "photos"
    for label, name in enumerate(CLASSES):
        os.makedirs(photos / name)
        for i in range(64):
            (photos / name / f"{i}.jpg").write_bytes(_gradient(120 * label + i))
    result = _script("train.py", "--dataset=folder", f"--data_dir={photos}",
                     f"--model={TINY}", "--epochs=1", "--stages=1", "--batch_size=16",
                     "--image_size=16", "--min_image_size=8",
                     f"--model_dir={root / 'run'}", f"--saved_models={root / 'saved'}",
                     f"--tflite_dir={root / 'tflite'}")
    return root, result


@pytest.mark.slow
def test_train_on_a_folder_ends_with_the_default_pruned_export(folder_run):
    root, result = folder_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lite = root / "tflite" / "efficientnet-custom" / "1"
    assert (lite / "efficientnet-custom-pruned50-int8.tflite").is_file()
    assert (root / "saved" / "efficientnet-custom" / "1" / "saved_model.pb").is_file()
    assert "kernel sparsity >= 50" in result.stdout


@pytest.mark.slow
def test_export_prunes_a_folder_run_without_a_steps_flag(folder_run):
    root, _ = folder_run
    result = _script("export.py", f"--model_dir={root / 'run'}", "--prune=0.5",
                     "--prune_epochs=1", "--formats=tflite", "--quantize=none",
                     f"--tflite_dir={root / 'again'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "again" / "efficientnet-custom" / "1" /
            "efficientnet-custom-pruned50-none.tflite").is_file()
    assert "kernel sparsity >= 50" in result.stdout


# --- (d) help texts say what the code does ----------------------------------------------

def _help(config_class, name):
    import dataclasses

    return next(f for f in dataclasses.fields(config_class) if f.name == name).metadata["help"]


def test_size_help_texts_state_the_sizes_the_code_uses():
    from keras_effnet.search.config import SearchConfig
    from keras_effnet.train.config import TrainConfig

    for dataset in ("mnist5k", "digits"):
        config = TrainConfig(dataset=dataset)
        _, recipe = config.resolved_model()
        plan = progressive_plan(recipe, config.epochs, config.stages,
                                config.resolved_progressive_mode(),
                                config.resolved_min_image_size(recipe))
        assert f"{plan[0].image_size} on the embedded datasets" in \
            _help(TrainConfig, "min_image_size")
        assert f"{plan[-1].image_size} on the embedded datasets" in \
            _help(TrainConfig, "image_size")
        size = SearchConfig(dataset=dataset).resolved_image_size(224)
        assert f"{size} on digits and mnist5k" in _help(SearchConfig, "image_size")
    # Elsewhere automl's 128, or half a last size of 128 px or less, never under 64.
    text = _help(TrainConfig, "min_image_size")
    assert "automl's 128" in text and "half" in text and "64 for an EfficientNet" in text
    assert _sizes_of(progressive_plan({"train_size": 128}, 4))[0] == 80  # from 64
    assert _sizes_of(progressive_plan({"train_size": 96}, 4))[0] == 72  # from 64, not 48


def _sizes_of(plan):
    return [stage.image_size for stage in plan]
