"""The fused RMSProp update gives Keras' results with one op per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_effnet.train.fused_rmsprop import rmsprop

_SHAPES = [(3, 3, 4, 8), (8,), (16, 10)]


def _train(make_optimizer, steps=5):
    """(variables, optimizer variables, the traced step) after ``steps`` updates from the
    same start with the same gradients."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in _SHAPES]
    grads = [[rng.normal(size=s).astype("float32") for s in _SHAPES] for _ in range(steps)]
    optimizer = make_optimizer()
    optimizer.build(variables)

    @tf.function(autograph=False)
    def step(gradients):
        optimizer.apply(gradients, variables)

    for g in grads:
        step([tf.constant(x) for x in g])
    # the optimizer's variables in order, by kind (names carry uniquified prefixes)
    return ([v.numpy() for v in variables],
            [(v.name.rsplit("_", 1)[-1], v.numpy()) for v in optimizer.variables],
            step.get_concrete_function([tf.constant(x) for x in grads[0]]))


def _ops(step):
    """Op types of the traced step, those of its nested functions (tf.cond branches)
    included."""
    graph = step.graph.as_graph_def()
    return [node.op for node in graph.node] + [
        node.op for function in graph.library.function for node in function.node_def]


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1e-3),
    dict(learning_rate=0.05, rho=0.8, momentum=0.5, epsilon=1e-7)])
def test_fused_update_equals_keras_with_one_op_per_variable(kwargs):
    theirs, their_slots, their_step = _train(lambda: keras.optimizers.RMSprop(**kwargs))
    ours, our_slots, our_step = _train(lambda: rmsprop(**kwargs))
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the same slot variables, by name, with the same values (checkpoints interchange)
    assert rmsprop(**kwargs).name.startswith("rm_sprop")  # Keras' RMSprop's name
    assert [kind for kind, _ in our_slots] == [kind for kind, _ in their_slots]
    assert {kind for kind, _ in our_slots} >= {"velocity", "momentum"}
    for (kind, a), (_, b) in zip(their_slots, our_slots):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=kind)
    start = np.random.default_rng(0).normal(size=_SHAPES[0]).astype("float32")
    assert not np.allclose(ours[0], start, atol=1e-3)  # the updates moved the weights
    assert _ops(our_step).count("ResourceApplyRMSProp") == len(_SHAPES)
    assert "ResourceApplyRMSProp" not in _ops(their_step)
    assert len(_ops(our_step)) < len(_ops(their_step)) / 2


@pytest.mark.parametrize("kwargs", [dict(centered=True, momentum=0.9),
                                    dict(momentum=0.0)])
def test_what_the_op_cannot_do_runs_keras_update(kwargs):
    kwargs = dict(learning_rate=0.01, rho=0.9, epsilon=1e-3, **kwargs)
    theirs, _, _ = _train(lambda: keras.optimizers.RMSprop(**kwargs))
    ours, _, step = _train(lambda: rmsprop(**kwargs))
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert "ResourceApplyRMSProp" not in _ops(step)


def test_under_a_loss_scale_optimizer_as_keras():
    kwargs = dict(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1e-3)
    theirs, _, _ = _train(lambda: keras.optimizers.LossScaleOptimizer(
        keras.optimizers.RMSprop(**kwargs)))
    ours, _, step = _train(lambda: keras.optimizers.LossScaleOptimizer(rmsprop(**kwargs)))
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert "ResourceApplyRMSProp" in _ops(step)


def test_the_trainer_trains_with_it(tmp_path):
    from test_trainer_support import ArraySource, tiny_config

    from keras_effnet.train import Trainer

    trainer = Trainer(tiny_config(tmp_path, epochs=1, stages=1, verbose=0),
                      source=ArraySource())
    result = trainer.run()
    optimizer = trainer.optimizer
    assert type(optimizer).__qualname__.endswith("FusedRMSprop")
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert (optimizer.rho, optimizer.momentum, optimizer.epsilon) == \
        pytest.approx((0.9, 0.9, 1e-3))
    assert result.steps == 8 and int(optimizer.iterations.numpy()) == 8
