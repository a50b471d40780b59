"""progressive_plan against hand-written sequences (docs/reference.md §4)."""

import dataclasses
import json

import pytest

from keras_effnet.train import progressive as P
from keras_effnet.train.progressive import Recipe, Stage, progressive_plan, resolve_recipe

AUTOML_SIZES = {
    # docs/reference.md §4: every sequence it lists, 4 stages.
    "efficientnetv2-b0": [144, 160, 176, 192],
    "efficientnetv2-b1": [144, 160, 176, 192],
    "efficientnetv2-b2": [148, 168, 188, 208],
    "efficientnetv2-b3": [156, 184, 212, 240],
    "efficientnetv2-s": [171, 214, 257, 300],
    "efficientnetv2-m": [192, 256, 320, 384],
    "efficientnetv2-l": [192, 256, 320, 384],
    "efficientnetv2-xl": [192, 256, 320, 384],
}


def _column(plan, field):
    return [getattr(s, field) for s in plan]


def test_automl_v2_s_350_epochs_exactly():
    plan = progressive_plan("efficientnetv2-s", 350)
    assert [(s.start_epoch, s.end_epoch, s.image_size) for s in plan] == [
        (0, 87, 171), (87, 175, 214), (175, 262, 257), (262, 350, 300)]
    assert _column(plan, "randaug_magnitude") == pytest.approx([5, 20 / 3, 25 / 3, 10])
    assert _column(plan, "mixup_alpha") == [0, 0, 0, 0]
    assert _column(plan, "cutmix_alpha") == [0, 0, 0, 0]
    assert _column(plan, "dropout") == [0.2] * 4  # automl does not schedule dropout
    assert _column(plan, "index") == [0, 1, 2, 3]
    assert all(isinstance(s, Stage) for s in plan)


@pytest.mark.parametrize("name,sizes", sorted(AUTOML_SIZES.items()))
def test_automl_sizes_for_every_listed_variant(name, sizes):
    # ibase = 128 reproduces all of them; train_size / 2 would give e.g. 108 for B0.
    assert _column(progressive_plan(name, 350), "image_size") == sizes


def test_automl_regularisation_ramps_m_and_l():
    m = progressive_plan("efficientnetv2-m", 350)
    assert _column(m, "randaug_magnitude") == pytest.approx([5, 25 / 3, 35 / 3, 15])
    assert _column(m, "mixup_alpha") == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    assert _column(m, "cutmix_alpha") == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    assert _column(m, "dropout") == [0.3] * 4
    large = progressive_plan("efficientnetv2-l", 350)
    assert _column(large, "randaug_magnitude") == pytest.approx([5, 10, 15, 20])
    assert _column(large, "mixup_alpha") == pytest.approx([0, 1 / 6, 1 / 3, 0.5])
    assert _column(large, "dropout") == [0.4] * 4


def test_automl_b0_has_no_randaugment():
    # The official B0-B3 recipe uses AutoAugment, not RandAugment.
    assert _column(progressive_plan("efficientnetv2-b0", 40), "randaug_magnitude") == [None] * 4


def test_last_value_is_exact():
    plan = progressive_plan("efficientnetv2-s", 350)
    assert plan[-1].randaug_magnitude == 10.0
    assert plan[-1].image_size == 300


def test_paper_table6_s_m_l():
    s = progressive_plan("efficientnetv2-s", 350, mode="paper")
    assert _column(s, "image_size") == [128, 185, 243, 300]
    assert _column(s, "randaug_magnitude") == pytest.approx([5, 25 / 3, 35 / 3, 15])
    assert _column(s, "mixup_alpha") == [0, 0, 0, 0]
    assert _column(s, "dropout") == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    m = progressive_plan("efficientnetv2-m", 350, mode="paper")
    assert _column(m, "image_size") == [128, 212, 296, 380]
    assert _column(m, "randaug_magnitude") == pytest.approx([5, 10, 15, 20])
    assert _column(m, "mixup_alpha") == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    assert _column(m, "dropout") == pytest.approx([0.1, 0.2, 0.3, 0.4])
    large = progressive_plan("efficientnetv2-l", 350, mode="paper")
    assert _column(large, "image_size") == [128, 212, 296, 380]
    assert _column(large, "randaug_magnitude") == pytest.approx([5, 35 / 3, 55 / 3, 25])
    assert _column(large, "mixup_alpha") == pytest.approx([0, 0.4 / 3, 0.8 / 3, 0.4])
    assert _column(large, "dropout") == pytest.approx([0.1, 0.7 / 3, 1.1 / 3, 0.5])
    # Same epoch boundaries in both modes.
    assert [(x.start_epoch, x.end_epoch) for x in s] == [
        (0, 87), (87, 175), (175, 262), (262, 350)]


def test_paper_mode_for_a_variant_outside_table6_ramps_to_its_recipe():
    plan = progressive_plan("efficientnetv2-b3", 8, mode="paper")
    assert _column(plan, "image_size") == [128, 165, 203, 240]
    assert _column(plan, "dropout") == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert _column(plan, "randaug_magnitude") == [None] * 4


def test_custom_recipe_dict_and_min_image_size():
    recipe = {"train_size": 64, "randaug": 8, "mixup": 0.3, "dropout": 0.25,
              "reduction": 16}
    plan = progressive_plan(recipe, 12, stages=4, min_image_size=32)
    assert [(s.start_epoch, s.end_epoch, s.image_size) for s in plan] == [
        (0, 3, 40), (3, 6, 48), (6, 9, 56), (9, 12, 64)]
    assert _column(plan, "randaug_magnitude") == pytest.approx([5, 6, 7, 8])
    assert _column(plan, "mixup_alpha") == pytest.approx([0, 0.1, 0.2, 0.3])
    assert _column(plan, "cutmix_alpha") == pytest.approx([0, 0.1, 0.2, 0.3])
    assert _column(plan, "dropout") == [0.25] * 4
    paper = progressive_plan(Recipe(train_size=64, dropout=0.4, reduction=16), 12, stages=4,
                             mode="paper", min_image_size=32)
    assert _column(paper, "image_size") == [32, 43, 53, 64]
    assert _column(paper, "dropout") == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_small_train_size_uses_half_as_ibase():
    # 128 would make images shrink; automl's fallback train_size / 2 is used instead.
    plan = progressive_plan({"train_size": 64, "reduction": 16}, 4)
    assert _column(plan, "image_size") == [40, 48, 56, 64]


def test_first_size_keeps_a_2x2_final_feature_map():
    # An EfficientNet reduces 32x: 64 px is the smallest usable first size.
    assert _column(progressive_plan({"train_size": 128}, 4), "image_size") == \
        [80, 96, 112, 128]  # the digits' main job: ibase 64 (= 128 / 2 = 2 * 32)
    assert _column(progressive_plan({"train_size": 96}, 4), "image_size") == \
        [72, 80, 88, 96]  # automl's fallback 48 is raised to 64
    assert _column(progressive_plan({"train_size": 64}, 4), "image_size") == [64] * 4
    assert _column(progressive_plan({"train_size": 48}, 2, stages=2), "image_size") == [48, 48]
    with pytest.raises(ValueError, match="min_image_size must be >= 64: the network "
                                         "reduces images 32x"):
        progressive_plan({"train_size": 128}, 4, min_image_size=32)
    # the reduction comes from the blocks: stem 2 x strides 1, 2 -> 4x, so 8 px is usable
    from keras_effnet.variants import resolve_variant
    tiny = resolve_variant("r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25")
    assert resolve_recipe(tiny).reduction == 4
    assert resolve_recipe("efficientnetv2-s").reduction == 32
    assert resolve_recipe("efficientnet-b0").reduction == 32
    # every official plan is unchanged (they start at 128 px or more)
    for name in ("efficientnetv2-b0", "efficientnetv2-s", "efficientnetv2-m"):
        for mode in ("automl", "paper"):
            assert progressive_plan(name, 350, mode=mode)[0].image_size >= 128


def test_variant_object_and_uneven_epochs():
    from keras_effnet.variants import get_variant
    plan = progressive_plan(get_variant("efficientnetv2-s"), 10, stages=3)
    assert [(s.start_epoch, s.end_epoch) for s in plan] == [(0, 3), (3, 6), (6, 10)]
    assert _column(plan, "image_size") == [185, 242, 300]
    assert sum(s.epochs for s in plan) == 10


def test_single_stage_is_plain_training_at_the_end_values():
    (stage,) = progressive_plan("efficientnetv2-s", 5, stages=1)
    assert (stage.start_epoch, stage.end_epoch, stage.image_size) == (0, 5, 300)
    assert stage.randaug_magnitude == 5.0  # linspace(5, 10, 1) == [5], as numpy
    # paper mode: Algorithm 1 has no ramp with one stage; everything at its last value
    (paper,) = progressive_plan("efficientnetv2-s", 5, stages=1, mode="paper")
    assert (paper.image_size, paper.randaug_magnitude) == (300, 15.0)
    assert paper.dropout == pytest.approx(0.3)
    (paper,) = progressive_plan("efficientnetv2-l", 5, stages=1, mode="paper")
    assert (paper.image_size, paper.randaug_magnitude) == (380, 25.0)
    assert (paper.mixup_alpha, paper.dropout) == (pytest.approx(0.4), pytest.approx(0.5))
    (paper,) = progressive_plan("efficientnetv2-b0", 5, stages=1, mode="paper",
                                min_image_size=80)
    assert (paper.image_size, paper.randaug_magnitude, paper.dropout) == (192, None, 0.2)


@pytest.mark.parametrize("epochs,stages", [(4, 4), (7, 3), (350, 4), (100, 7), (5, 2)])
def test_stages_tile_the_run(epochs, stages):
    plan = progressive_plan("efficientnetv2-m", epochs, stages)
    assert plan[0].start_epoch == 0 and plan[-1].end_epoch == epochs
    for a, b in zip(plan, plan[1:]):
        assert a.end_epoch == b.start_epoch and a.epochs >= 1
        assert a.image_size <= b.image_size


def test_stage_is_frozen_and_serialisable():
    stage = progressive_plan("efficientnetv2-s", 8)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.image_size = 1
    assert Stage.from_dict(stage.to_dict()) == stage
    assert list(stage.to_dict()) == ["index", "start_epoch", "end_epoch", "image_size",
                                     "randaug_magnitude", "mixup_alpha", "cutmix_alpha",
                                     "crop_area_range", "dropout"]
    assert stage.augment.record() == {"randaug": 5.0, "mixup": 0.0, "cutmix": 0.0,
                                      "crop": "source"}
    # A crop of the user's own survives config.json (a list there); a plan written
    # before the crop was a field reads as the recipe's crop.
    mild = dataclasses.replace(stage, augment=dataclasses.replace(
        stage.augment, crop_area_range=(0.5, 1.0)))
    assert Stage.from_dict(json.loads(json.dumps(mild.to_dict()))) == mild
    old = {k: v for k, v in stage.to_dict().items() if k != "crop_area_range"}
    assert Stage.from_dict(old) == stage
    assert "171px" in stage.describe(4) and "Stage 1/4" in stage.describe(4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=3, stages=4), "epochs must be >= stages"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(epochs=10, stages=0), "stages must be an integer >= 1"),
    (dict(epochs=10, stages=2.5), "stages must be an integer"),
    (dict(epochs=10, mode="fast"), "mode must be one of"),
    (dict(epochs=10, min_image_size=400), "min_image_size must be <= the final image size"),
    (dict(epochs=10, min_image_size=0), "min_image_size must be an integer >= 1"),
])
def test_bad_arguments_raise_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        progressive_plan("efficientnetv2-s", **kwargs)


def test_bad_model_and_recipe_errors():
    with pytest.raises(ValueError, match="Unknown model 'efficientnetv2-q'"):
        progressive_plan("efficientnetv2-q", 10)
    with pytest.raises(ValueError, match="needs train_size"):
        progressive_plan({"randaug": 5}, 10)
    with pytest.raises(ValueError, match=r"Unknown recipe field\(s\) \['size'\]"):
        progressive_plan({"train_size": 64, "size": 3}, 10)
    with pytest.raises(ValueError, match="dropout must be in"):
        Recipe(train_size=64, dropout=1.5)
    with pytest.raises(TypeError, match="model_name_or_recipe"):
        progressive_plan(3.5, 10)


def test_module_is_pure_python():
    # The plan must be importable and computable without TensorFlow (docs, configs).
    import subprocess
    import sys
    code = ("import sys; from keras_effnet.train.progressive import progressive_plan; "
            "progressive_plan({'train_size': 64}, 8); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert P.MODES == ("automl", "paper")


def test_drop_path_follows_the_dropout_ramp():
    from keras_effnet.train.progressive import drop_path_scale

    # automl keeps the variant's dropout, so stochastic depth stays as built
    plan = progressive_plan("efficientnetv2-s", 350, 4)
    assert [drop_path_scale(plan, s) for s in plan] == [1.0] * 4
    # paper mode, Table 6 for S: dropout 0.1 -> 0.3, so drop path from a third of its rates
    plan = progressive_plan("efficientnetv2-s", 350, 4, mode="paper")
    assert [round(drop_path_scale(plan, s), 6) for s in plan] == [
        round(1 / 3, 6), round(5 / 9, 6), round(7 / 9, 6), 1.0]  # 0.1, 0.167, 0.233, 0.3
    # no dropout at the end: nothing to follow
    plan = progressive_plan({"train_size": 128, "dropout": 0.0}, 4, mode="paper")
    assert [drop_path_scale(plan, s) for s in plan] == [1.0] * 4


def _sizes(plan):
    return [stage.image_size for stage in plan]


def test_image_size_gives_a_small_plan_by_hand():
    assert _sizes(progressive_plan("efficientnetv2-b0", epochs=4)) == [144, 160, 176, 192]
    # automl: a last size of 128 px or less starts at half of it, 64 + 64 * (i + 1) / 4.
    small = progressive_plan("efficientnetv2-b0", epochs=4, image_size=128)
    assert _sizes(small) == [80, 96, 112, 128]
    assert [s.dropout for s in small] == [0.2] * 4  # the variant's, constant in automl
    # 96 + 32 * (i + 1) / 4
    assert _sizes(progressive_plan("efficientnetv2-b0", epochs=4, image_size=128,
                                   min_image_size=96)) == [104, 112, 120, 128]
    # paper: 80 -> 128 in equal steps, dropout 0.1 -> 0.2 with it (the main job).
    paper = progressive_plan("efficientnetv2-b0", epochs=8, image_size=128,
                             min_image_size=80, mode="paper")
    assert _sizes(paper) == [80, 96, 112, 128]
    assert [s.dropout for s in paper] == pytest.approx([0.1, 0.4 / 3, 0.5 / 3, 0.2])
    assert [(s.start_epoch, s.end_epoch) for s in paper] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    # At 64 px the first-size rule (a 2x2 final feature map) leaves no room to grow.
    assert _sizes(progressive_plan("efficientnetv2-b0", epochs=4, image_size=64)) == [64] * 4
    # Another size is a custom recipe, not Table 6's row (S: 128 -> 300, RandAugment 5
    # -> 15 there; S's own recipe ends at RandAugment 10).
    s_paper = progressive_plan("efficientnetv2-s", epochs=4, mode="paper", image_size=300)
    assert s_paper[-1].randaug_magnitude == P.resolve_recipe("efficientnetv2-s").randaug


def test_image_size_is_the_trainers_image_size():
    from keras_effnet.train.config import TrainConfig

    config = TrainConfig(model="efficientnetv2-s", image_size=96, min_image_size=64,
                         progressive_mode="paper", epochs=8)
    _, recipe = config.resolved_model()
    assert progressive_plan("efficientnetv2-s", 8, mode="paper", image_size=96,
                            min_image_size=64) == \
        progressive_plan(recipe, 8, mode="paper", min_image_size=64)


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=1), "image_size must be an integer >= 2"),
    (dict(image_size=64.0), "image_size must be an integer"),
    (dict(image_size=64, min_image_size=32), "min_image_size must be >= 64"),
    (dict(image_size=96, min_image_size=128), "min_image_size must be <= the final"),
])
def test_image_size_mistakes_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        progressive_plan("efficientnetv2-b0", epochs=4, **kwargs)
