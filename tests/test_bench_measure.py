"""keras_effnet.bench.measure: the deployment figures of one architecture."""

import pytest

from keras_effnet.bench import measure as measure_lib

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


def test_block_sizes_are_in_by_out():
    from keras_effnet.errors import ConfigError

    assert measure_lib.parse_block_size("4X1") == (4, 1)
    for text in ("4y1", "4x0", "4"):
        with pytest.raises(ConfigError, match="block_sizes are INxOUT") as info:
            measure_lib.parse_block_size(text)
        assert info.value.field == "block_sizes"


def test_command_line_flags_and_one_line_errors():
    import os
    import subprocess
    import sys

    from keras_effnet import cli

    assert sorted(cli.FlagSet(measure_lib.MeasureConfig).flag_names()) == sorted([
        "model", "image_size", "epochs", "sparsities", "prune_epochs",
        "prune_learning_rate", "prune_learning_rate_decay", "prune_end_fraction",
        "block_sizes", "control", "representative_images", "xnnpack_latency_size"])
    result = subprocess.run([sys.executable, "-m", "keras_effnet.bench.measure",
                             "--block_sizes=4x1,4y1"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: --block_sizes: block_sizes are INxOUT, e.g. 4x1 or 1x1. "
                     "Received: '4y1'"], result.stderr
