"""The fused BatchNormalization training pass gives Keras' results, and only while traced."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_effnet.train.fused_bn import batchnorm_layers, fused_batchnorm


def _model(**bn):
    inputs = keras.Input((None, None, 6))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="bn", **bn)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _train_call(model, images, fused):
    """(outputs, gradients, moving mean, moving variance) of one training call."""
    bn = model.get_layer("bn")
    saved = [v.numpy() for v in (bn.moving_mean, bn.moving_variance)]

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if fused:
                with fused_batchnorm(model):
                    out = model(x, training=True)
            else:
                out = model(x, training=True)
            loss = tf.reduce_sum(out * tf.range(1.0, 4.0))
        return out, tape.gradient(loss, [x] + model.trainable_variables)

    out, grads = step(images)
    result = ([out.numpy()] + [g.numpy() for g in grads]
              + [bn.moving_mean.numpy(), bn.moving_variance.numpy()])
    for variable, value in zip((bn.moving_mean, bn.moving_variance), saved):
        variable.assign(value)
    return result, step


@pytest.mark.parametrize("bn", [{}, {"center": False}, {"scale": False}])
def test_fused_training_pass_equals_keras(bn):
    keras.utils.set_random_seed(1)
    model = _model(**bn)
    images = tf.random.normal([4, 5, 7, 6]) * 3.0 + 1.0
    keras_result, _ = _train_call(model, images, fused=False)
    fused_result, step = _train_call(model, images, fused=True)
    names = ["outputs", "d/dx"] + [v.path for v in model.trainable_variables] + [
        "moving_mean", "moving_variance"]
    for name, a, b in zip(names, keras_result, fused_result):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5, err_msg=name)
    # the moving statistics moved (the comparison above is not of untouched values)
    assert not np.allclose(keras_result[-2], 0.0)
    ops = {op.type for op in step.get_concrete_function(images).graph.get_operations()}
    assert "FusedBatchNormV3" in ops


def test_the_swap_lasts_only_inside_the_block():
    model = _model()
    bn = model.get_layer("bn")
    assert batchnorm_layers(model) == [bn]
    with fused_batchnorm(model):
        assert "call" in vars(bn)
        with fused_batchnorm(model):  # nested: left to the outer block
            pass
        assert "call" in vars(bn)
    assert "call" not in vars(bn)
    with pytest.raises(RuntimeError):
        with fused_batchnorm(model):
            raise RuntimeError("inside")
    assert "call" not in vars(bn)


def test_inference_and_frozen_layers_run_keras_own_call():
    keras.utils.set_random_seed(2)
    model = _model()
    images = tf.random.normal([2, 4, 4, 6])
    expected = model(images, training=False).numpy()
    bn = model.get_layer("bn")

    @tf.function(autograph=False)
    def infer(x):
        with fused_batchnorm(model):
            return model(x, training=False)
    np.testing.assert_allclose(infer(images).numpy(), expected, rtol=1e-6, atol=1e-6)
    ops = {op.type for op in infer.get_concrete_function(images).graph.get_operations()}
    assert "FusedBatchNormV3" not in ops

    bn.trainable = False  # a frozen BatchNorm normalises with its moving statistics
    moving = bn.moving_mean.numpy()

    @tf.function(autograph=False)
    def frozen(x):
        with fused_batchnorm(model):
            return model(x, training=True)
    frozen(images)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving)
