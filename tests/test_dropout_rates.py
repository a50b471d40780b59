"""Dropout rates read at run time: Keras' masks, new rates without a new trace."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from keras_effnet.train.dropout_rates import DropoutRates, dropout_layers  # noqa: E402


def _model():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Dropout(0.3, noise_shape=(None, 1, 1, 1), name="b0_drop_path",
                             seed=1)(inputs)
    x = keras.layers.Conv2D(5, 1, name="conv")(x)
    x = keras.layers.Dropout(0.2, noise_shape=(None, 1, 1, 1), name="b1_drop_path",
                             seed=2)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dropout(0.4, name="top_dropout", seed=3)(x)
    return keras.Model(inputs, outputs)


def test_layers_variables_and_assign():
    model = _model()
    rates = DropoutRates(model, "top_dropout")
    assert [layer.name for layer in dropout_layers(model)] == [
        "b0_drop_path", "b1_drop_path", "top_dropout"]
    assert rates.values() == pytest.approx({"b0_drop_path": 0.3, "b1_drop_path": 0.2,
                                            "top_dropout": 0.4})
    rates.assign(0.1, drop_path_scale=0.5)
    assert rates.values() == pytest.approx({"b0_drop_path": 0.15, "b1_drop_path": 0.1,
                                            "top_dropout": 0.1})
    # the layers say so too (a model saved after the run), scaled from the built rates
    assert [l.rate for l in rates.layers] == pytest.approx([0.15, 0.1, 0.1])
    rates.assign(0.4, drop_path_scale=1.0)
    assert rates.values() == pytest.approx({"b0_drop_path": 0.3, "b1_drop_path": 0.2,
                                            "top_dropout": 0.4})
    for bad in (dict(dropout=1.0), dict(dropout=-0.1), dict(dropout=0.1, drop_path_scale=-1)):
        with pytest.raises(ValueError):
            rates.assign(**bad)


def test_same_masks_as_keras_and_no_retrace_for_new_rates():
    model = _model()
    rates = DropoutRates(model, "top_dropout")
    images = tf.random.stateless_normal([16, 4, 4, 3], seed=[0, 1])

    @tf.function(autograph=False)
    def plain(x):
        return model(x, training=True)

    @tf.function(autograph=False)
    def read(x):
        with rates.traced():
            return model(x, training=True)

    states = [layer.seed_generator.state.numpy().copy() for layer in rates.layers]
    keras_out = plain(images).numpy()
    for layer, state in zip(rates.layers, states):
        layer.seed_generator.state.assign(state)
    ours = read(images).numpy()
    # the same units dropped; kept values equal to float32 rounding
    np.testing.assert_array_equal(keras_out == 0, ours == 0)
    np.testing.assert_allclose(ours, keras_out, rtol=1e-6, atol=1e-6)
    assert (ours == 0).any()

    # new rates, same trace: rate 0 passes everything through, then heavy dropout
    rates.assign(0.0, drop_path_scale=0.0)
    no_drop = read(images).numpy()
    reference = model(images, training=False).numpy()
    np.testing.assert_allclose(no_drop, reference, rtol=1e-6, atol=1e-6)
    rates.assign(0.9, drop_path_scale=1.0)
    heavy = read(images).numpy()
    assert (heavy == 0).mean() > 0.7
    assert read.experimental_get_tracing_count() == 1
    # outside the traced block the layers are Keras' own again
    assert "call" not in vars(rates.layers[0])
    # inference never drops
    np.testing.assert_array_equal(model(images, training=False).numpy(), reference)
