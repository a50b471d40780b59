"""Magnitude pruning through the tf_keras twin: sparsity, size, accuracy, isolation."""

import dataclasses
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
from test_export_support import TINY_ARCH, digits, lite_variant, tiny_model, top1, trained_lite

from keras_effnet.export import prune, tflite


@functools.lru_cache(maxsize=None)
def _pruned(target: float):
    x, y, _, _ = digits()
    return prune.prune(trained_lite(), (x, y), prune.PruneConfig(target_sparsity=target),
                       variant=lite_variant())  # the defaults users get


def test_importing_the_module_loads_neither_tfmot_nor_tf_keras():
    code = ("import sys, keras_effnet.export.prune, keras_effnet.export.job; "
            "print(sorted(m for m in ('tensorflow_model_optimization', 'tf_keras') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_tfmot_import_leaves_the_environment_alone():
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    prune._tfmot()
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    import keras
    assert keras.__version__.startswith("3.")


def test_layer_selection_keeps_stem_se_and_classifier_by_default():
    model = tiny_model()  # fused block, MBConv with SE, top, classifier
    default = prune.select_layers(model, prune.PruneConfig())
    assert "stem_conv" not in default and "predictions" not in default
    assert not [n for n in default if "se_" in n]
    assert "top_conv" in default and "stage2_block01_project_conv" in default
    assert "stage1_block01_project_conv" in default  # the fused block's 3x3 conv
    assert not [n for n in default if "dwconv" in n]
    everything = prune.select_layers(model, prune.PruneConfig(
        prune_stem=True, prune_se=True, prune_classifier=True))
    assert {"stem_conv", "predictions", "stage2_block01_se_reduce",
            "stage2_block01_se_expand"} <= set(everything)
    only_1x1 = prune.select_layers(model, prune.PruneConfig(policy="xnnpack"))
    assert "stage1_block01_project_conv" not in only_1x1 and "top_conv" in only_1x1


def test_fine_tuning_learning_rate_is_flat_while_pruning_then_decays_to_zero():
    import keras
    config = prune.PruneConfig(epochs=10, learning_rate=1e-3, prune_end_fraction=0.6,
                               frequency=1)
    schedule = prune.fine_tuning_learning_rate(config, 10, keras)  # 100 steps, 60 pruning
    rates = [float(schedule(step)) for step in (0, 30, 59, 60, 80, 99, 100)]
    assert rates[:4] == pytest.approx([1e-3] * 4)
    assert rates[4] == pytest.approx(0.5e-3, rel=1e-3)  # half-way down the cosine
    assert rates[5] < 1e-5 and rates[6] == 0.0
    constant = dataclasses.replace(config, learning_rate_decay="constant")
    assert prune.fine_tuning_learning_rate(constant, 10, keras) == 1e-3
    with pytest.raises(ValueError, match="learning_rate_decay"):
        prune.PruneConfig(learning_rate_decay="linear")


def test_fine_tuning_is_seeded_whatever_ran_before():
    import random

    import tensorflow as tf
    x, y, _, _ = digits(size=32)
    model = tiny_model()  # dropout 0.2 and drop path: random during fine-tuning
    config = prune.PruneConfig(epochs=2, steps_per_epoch=3, learning_rate=1e-3)

    def pruned_weights():
        return prune.prune(model, (x[:96], y[:96]), config,
                           variant=TINY_ARCH).model.get_weights()

    first = pruned_weights()
    random.random(), np.random.rand(3), tf.random.uniform([5])  # other code's draws
    for a, b in zip(first, pruned_weights()):
        np.testing.assert_array_equal(a, b)
    other = prune.prune(model, (x[:96], y[:96]), dataclasses.replace(config, seed=1),
                        variant=TINY_ARCH).model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_a_dataset_without_a_length_is_counted_and_one_that_repeats_needs_steps():
    import tensorflow as tf

    from keras_effnet.errors import ConfigError
    x, y, _, _ = digits(size=32)
    # 5 batches behind a filter: tf.data cannot tell the length (as a user's own
    # pipeline, or a source sharded by file).
    ds = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(8).filter(
        lambda images, labels: True)
    assert int(ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    config = prune.PruneConfig(epochs=2, learning_rate=1e-3, frequency=1)
    result = prune.prune(tiny_model(), ds, config, variant=TINY_ARCH)
    # Both epochs ran, and the schedule (end step int(5 * 2 * 0.6) = 6) reached the
    # target: the steps were the 5 batches.
    assert len(result.history["loss"]) == 2
    assert result.min_sparsity >= 0.5
    with pytest.raises(ConfigError, match="set steps_per_epoch") as error:
        prune.prune(tiny_model(), ds.repeat(), config, variant=TINY_ARCH)
    assert error.value.field == "steps_per_epoch"


def test_twin_has_the_same_outputs():
    model = tiny_model()
    twin = prune.tf_keras_twin(model, variant=TINY_ARCH)
    assert type(twin).__module__.startswith("tf_keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(twin.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="pass variant="):
        prune.tf_keras_twin(model)
    with pytest.raises(ValueError, match="does not match"):
        prune.tf_keras_twin(model, variant="efficientnet-lite0")


def test_layer_target_gives_at_least_the_target_for_every_size():
    for size in range(1, 300):
        for target in (0.5, 0.75, 0.9):
            s = prune._layer_target(size, target)
            kept = max(round(size * (1 - s)), 1)  # what tfmot keeps
            assert (size - kept) / size >= target or kept == 1


def test_config_validation():
    with pytest.raises(ValueError, match="target_sparsity"):
        prune.PruneConfig(target_sparsity=1.0)
    with pytest.raises(ValueError, match="policy"):
        prune.PruneConfig(policy="random")


@pytest.mark.slow
def test_prune_50_sparsity_size_and_accuracy():
    _, _, x_test, y_test = digits()
    dense_model = trained_lite()
    result = _pruned(0.5)
    assert len(result.sparsity) >= 6
    # Measured on the Keras 3 model the weights were copied back into.
    assert min(result.sparsity.values()) >= 0.5, result.sparsity
    dense_top1 = top1(dense_model.predict(x_test, verbose=0), y_test)
    pruned_top1 = top1(result.model.predict(x_test, verbose=0), y_test)
    dense = tflite.convert(dense_model)
    sparse = tflite.convert(result.model, sparsity=True)
    assert tflite.sparsity_encoded(sparse) and not tflite.sparsity_encoded(dense)
    ratio = tflite.gzipped_size(dense) / tflite.gzipped_size(sparse)
    lite_top1 = top1(tflite.LiteRunner(sparse).predict(x_test), y_test)
    print(f"50 %: sparsity >= {min(result.sparsity.values()):.3f}; gzipped TFLite "
          f"{tflite.gzipped_size(dense)} -> {tflite.gzipped_size(sparse)} bytes "
          f"({ratio:.2f}x); top-1 {dense_top1:.2%} -> {pruned_top1:.2%} "
          f"(sparse TFLite {lite_top1:.2%})")
    assert ratio >= 1.7
    assert pruned_top1 >= dense_top1 - 0.01
    assert lite_top1 == pytest.approx(pruned_top1, abs=0.01)


@pytest.mark.slow
def test_xnnpack_policy_rewrites_and_prunes_1x1_only():
    x, y, _, _ = digits()
    result = prune.prune(
        trained_lite(), (x[:256], y[:256]),
        prune.PruneConfig(target_sparsity=0.75, epochs=1, policy="xnnpack"),
        variant=lite_variant())
    names = [layer.name for layer in result.model.layers]
    assert "stem_conv_pad" in names and "avg_pool_flatten" in names
    assert result.model.get_layer("stem_conv").padding == "valid"
    assert result.model.get_layer("avg_pool").keepdims
    assert all(result.model.get_layer(n).kernel_size == (1, 1) for n in result.sparsity)
    assert min(result.sparsity.values()) >= 0.75
    content = tflite.convert(result.model, sparsity=True)
    assert tflite.sparsity_encoded(content)
    # Every pruned 1x1 kernel stays sparse-encoded, expanded by a DENSIFY at load: the
    # hint XNNPACK's sparse inference reads.
    assert tflite.densify_ops(content) == len(result.sparsity)
    assert tflite.densify_ops(tflite.convert(result.model)) == 0
    assert tflite.LiteRunner(content).predict(x[:4]).shape == (4, 10)
