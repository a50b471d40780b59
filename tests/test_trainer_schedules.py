"""LR and EMA schedules: pure functions vs hand-computed values; Keras twin agrees."""

import math

import pytest

from keras_effnet.train import schedules as S


def test_scaled_learning_rate():
    assert S.scaled_learning_rate(256) == pytest.approx(0.016)
    assert S.scaled_learning_rate(4096) == pytest.approx(0.256)
    assert S.scaled_learning_rate(64) == pytest.approx(0.004)
    with pytest.raises(ValueError, match="global_batch_size must be >= 1"):
        S.scaled_learning_rate(0)


RECIPE = dict(base_lr=0.016, steps_per_epoch=100, warmup_epochs=5, decay_epochs=2.4,
              decay_factor=0.97)


@pytest.mark.parametrize("step,expected", [
    (0, 0.0),                        # warm-up starts at 0
    (250, 0.008),                    # halfway through 500 warm-up steps
    (499, 0.016 * 499 / 500),
    (500, 0.016 * 0.97 ** 2),        # floor(500 / 240) = 2 decays, counted from step 0
    (719, 0.016 * 0.97 ** 2),        # staircase: still 2 until step 720
    (720, 0.016 * 0.97 ** 3),
    (1000, 0.01416468496),           # 0.016 * 0.97**4 by hand
    (34_999, 0.016 * 0.97 ** 145),   # the end of 350 epochs: ~1.2 % of the peak
])
def test_warmup_then_exponential_staircase(step, expected):
    assert S.learning_rate(step, **RECIPE) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_end_of_the_recipe_is_about_one_percent_of_peak():
    assert S.learning_rate(34_999, **RECIPE) / 0.016 == pytest.approx(0.012, abs=0.001)


@pytest.mark.parametrize("step,expected", [
    (0, 0.016), (250, 0.008 * (1 + math.sqrt(0.5))), (500, 0.008), (1000, 0.0),
    (1500, 0.0),  # clamped past the end
])
def test_cosine(step, expected):
    lr = S.learning_rate(step, base_lr=0.016, steps_per_epoch=100, warmup_epochs=0,
                         kind="cosine", total_steps=1000)
    assert lr == pytest.approx(expected, abs=1e-12)


def test_cosine_with_warmup_and_min_lr():
    kwargs = dict(base_lr=0.016, steps_per_epoch=10, warmup_epochs=1, kind="cosine",
                  total_steps=100, min_lr=0.001)
    assert S.learning_rate(5, **kwargs) == pytest.approx(0.008)
    assert S.learning_rate(10, **kwargs) == pytest.approx(0.008 * (1 + math.cos(math.pi / 10)))
    assert S.learning_rate(100, **kwargs) == pytest.approx(0.001)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="step"), "kind must be one of"),
    (dict(base_lr=0), "base_lr must be > 0"),
    (dict(steps_per_epoch=0), "steps_per_epoch must be >= 1"),
    (dict(warmup_epochs=-1), "warmup_epochs must be >= 0"),
    (dict(decay_factor=1.5), "exponential decay needs"),
    (dict(kind="cosine"), "cosine decay needs total_steps"),
])
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.learning_rate(0, **{**RECIPE, **kwargs})


@pytest.mark.parametrize("step,expected", [
    (0, 0.1), (90, 0.91), (990, 0.991), (10**6, 0.9999),
])
def test_ema_decay_num_updates_rule(step, expected):
    assert S.ema_decay(step) == pytest.approx(expected)


def test_ema_decay_validation_and_custom_cap():
    assert S.ema_decay(10**6, 0.99) == 0.99
    with pytest.raises(ValueError, match="decay must be in"):
        S.ema_decay(1, 1.0)


@pytest.mark.parametrize("kind", ["exponential", "cosine"])
def test_keras_schedule_matches_pure_function(kind):
    from keras_effnet.train.lr_schedule import WarmupDecaySchedule
    kwargs = dict(base_lr=0.004, steps_per_epoch=22, warmup_epochs=1.0, decay_epochs=0.3,
                  decay_factor=0.97, kind=kind, total_steps=264, min_lr=1e-5)
    schedule = WarmupDecaySchedule(**kwargs)
    for step in [0, 1, 10, 21, 22, 23, 50, 100, 263, 400]:
        assert float(schedule(step)) == pytest.approx(S.learning_rate(step, **kwargs),
                                                      rel=1e-5), step
    assert WarmupDecaySchedule(**schedule.get_config()).get_config() == schedule.get_config()
