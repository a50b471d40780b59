"""The recipe at small scale: BatchNorm recalibration for the evaluated weights."""

import numpy as np
import pytest

from test_trainer_support import ArraySource, model_weights, tiny_config


def test_recalibration_count():
    from keras_effnet.train.steps import recalibration_count
    assert recalibration_count(1438, 64, 64) == 1024          # the image cap, whole batches
    assert recalibration_count(300, 64, 64) == 256            # the training split
    assert recalibration_count(10**6, 384, 256) == 256        # 151 images fit: one batch
    assert recalibration_count(10**6, 224, 32) == 416        # 256 MB at 224 px: 445 images
    assert recalibration_count(100, 16, 100) == 100


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from keras_effnet.train.trainer import Trainer
    trainer = Trainer(tiny_config(tmp_path_factory.mktemp("run"), epochs=1, stages=1,
                                  eval_every_epochs=0, verbose=0), source=ArraySource())
    trainer.run()
    return trainer


def test_evaluation_changes_nothing_that_trains(trainer):
    """Recalibrating for an evaluation leaves weights, statistics and RNG as they were."""
    before = model_weights(trainer.model)
    rng = [np.array(v) for v in trainer.state.rng_states]
    trainer.evaluate(use_ema=False)
    for a, b in zip(before, model_weights(trainer.model)):
        np.testing.assert_array_equal(a, b)
    for a, v in zip(rng, trainer.state.rng_states):
        np.testing.assert_array_equal(a, np.array(v))


def test_recalibrated_statistics_are_the_mean_over_batches(trainer):
    """The stem BatchNorm's moving mean = the mean of the per-batch means of its input."""
    import keras
    from keras_effnet.train import steps

    model = trainer.model
    size, batch = trainer.eval_image_size, trainer.global_batch
    trainer.evaluate(use_ema=False, keep=True)
    bn = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    conv_out = keras.Model(model.inputs, bn.input)
    count = steps.recalibration_count(trainer.source.num_train, size, batch)
    images = trainer.source.representative_images(count, size)
    means = [np.mean(np.array(conv_out(images[i:i + batch])), axis=(0, 1, 2))
             for i in range(0, count, batch)]
    np.testing.assert_allclose(np.array(bn.moving_mean), np.mean(means, axis=0),
                               rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99 or bn.momentum == 0.9  # the layer's own momentum is back
