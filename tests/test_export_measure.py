"""keras_effnet.export.measure: the deployment figures of one architecture."""

import pytest

from keras_effnet.export import measure as measure_lib

pytest.importorskip("tensorflow_model_optimization")
pytest.importorskip("ai_edge_litert")

TINY = "r1_k3_s2_e1_i16_o16_f,r1_k3_s2_e4_i16_o32"


@pytest.mark.slow
def test_measure_reports_pruning_against_base_and_dense_control():
    result = measure_lib.measure(TINY, image_size=16, epochs=1, sparsities=(0.5,),
                                 prune_epochs=1, quantize=("int8",), calibration=100,
                                 block_sizes=((4, 1), (1, 1)), log=lambda *_: None)
    assert 0.0 <= result["keras_top1"] <= 1.0
    assert result["float32"]["max_abs_diff_vs_keras"] < 1e-4
    assert 0.0 <= result["int8"]["agreement_with_float"] <= 1.0
    assert 0.0 <= result["dense_finetuned_top1"] <= 1.0
    assert sorted(result["pruning"]) == ["0.5", "0.5 block 1x1"]
    assert result["pruning"]["0.5 block 1x1"]["min_kernel_sparsity"] >= 0.5
    pruned = result["pruning"]["0.5"]
    assert pruned["min_kernel_sparsity"] >= 0.5
    assert pruned["drop_points"] == pytest.approx(
        100 * (result["keras_top1"] - pruned["top1_after"]))
    assert pruned["drop_points_vs_dense_finetuned"] == pytest.approx(
        100 * (result["dense_finetuned_top1"] - pruned["top1_after"]))
    assert pruned["gzip_ratio"] == pytest.approx(pruned["gzip_dense"] / pruned["gzip_pruned"])


def test_no_control_without_sparsities():
    result = measure_lib.measure(TINY, image_size=16, epochs=1, sparsities=(),
                                 quantize=(), log=lambda *_: None)
    assert "dense_finetuned_top1" not in result and result["pruning"] == {}
