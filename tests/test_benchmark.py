"""scripts/benchmark.py and keras_effnet.bench: the pure parts, flag errors, one tiny
end-to-end section. Timings themselves are never asserted."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import keras_effnet.bench as bench
from keras_effnet.bench import config as config_lib
from keras_effnet import timing
from keras_effnet.bench import fuzz, plots, reliability, report, runner
from keras_effnet.bench import sections as registry
from keras_effnet.bench.sections.progressive import reach_target, time_to_reach
from keras_effnet.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "benchmark.py"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "CUDA_VISIBLE_DEVICES": ""}


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- timing ---------------------------------------------------------------------------

def test_median_and_ratio():
    assert timing.median([3.0, 1.0, 2.0]) == 2.0
    assert timing.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert timing.median([1.0, float("nan"), 3.0]) == 2.0
    assert timing.median([]) is None
    assert timing.ratio(6.0, 3.0) == 2.0
    assert timing.ratio(1.0, 0.0) is None and timing.ratio(None, 1.0) is None
    assert timing.per_second(64, 2.0) == 32.0


def test_paired_ratios_and_spread():
    assert timing.paired_ratios([2.0, 3.0, 1.0], [1.0, 3.0, 0.0]) == [2.0, 1.0]
    assert timing.spread(timing.paired_ratios([0.9, 1.1, 1.0], [1.0, 1.0, 1.0])) == \
        "0.90–1.10"
    assert timing.spread([]) == "–"


def test_interleaved_alternates_and_warms_up():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timing.interleaved(fns, repeats=3, warmup=1, timer=lambda fn: (fn(), 1.0)[1])
    # warm-up a, b; then rounds a b | b a | a b
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert times == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        timing.interleaved(fns, repeats=0)


def test_time_to_reach():
    assert time_to_reach([1.0, 2.0, 3.0], [0.5, 0.8, 0.9], 0.8) == 2.0
    assert time_to_reach([1.0, 2.0], [0.5, 0.6], 0.9) is None


def test_reach_target_allows_the_tolerance_on_both_runs():
    fixed = ([10.0, 20.0, 30.0, 40.0], [0.80, 0.90, 0.952, 0.96])
    progressive = ([5.0, 10.0, 15.0, 20.0], [0.70, 0.85, 0.956, 0.957])
    score = reach_target(fixed, progressive, tolerance=0.005)
    # target 0.955: fixed first reaches it at 40 s, progressive at 15 s
    assert score["target"] == pytest.approx(0.955)
    assert (score["fixed_s"], score["progressive_s"]) == (40.0, 15.0)
    assert score["speedup"] == pytest.approx(40.0 / 15.0)
    assert score["final_gap"] == pytest.approx(-0.003) and score["final_not_worse"] is True
    exact = reach_target(fixed, progressive, tolerance=0.0)
    assert exact["progressive_s"] is None and exact["speedup"] is None
    assert exact["fixed_s"] == 40.0 and exact["final_not_worse"] is False
    better = reach_target(fixed, ([5.0, 10.0], [0.9, 0.98]), tolerance=0.005)
    assert better["final_not_worse"] is True and better["progressive_s"] == 10.0
    assert reach_target(([], []), progressive, 0.005)["speedup"] is None


# --- report ---------------------------------------------------------------------------

def test_markdown_table_formats_cells():
    table = report.markdown_table(
        [{"model": "b0", "ratio": 1.23456, "big": 123456.7, "n": 12345, "ok": True,
          "missing": None, "text": "a|b"}],
        [("model", "model"), ("ratio", "ratio"), ("big", "big"), ("n", "n"), ("ok", "ok"),
         ("missing", "missing"), ("text", "text")])
    lines = table.splitlines()
    assert lines[0] == "| model | ratio | big | n | ok | missing | text |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == "| b0 | 1.23 | 123,457 | 12,345 | yes | – | a\\|b |"
    with pytest.raises(ValueError):
        report.markdown_table([], [])


def test_machine_description(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n")
    assert report.cpu_model(str(cpuinfo)) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert report.cpu_model(str(tmp_path / "missing")) != ""
    info = report.machine_info("cpu")
    assert info["device"] == "cpu" and info["cores"] >= 1 and info["usable_cores"] >= 1
    assert info["cpu"] and info["tensorflow"] and info["keras"].startswith("3.")


def test_results_are_written_merged_and_rendered(tmp_path):
    old = {"command": "old", "date": "d0", "machine": {}, "sections": {
        "build": {"title": "Build", "mode": "quick", "columns": [["model", "model"]],
                  "rows": [{"model": "kept"}]}}}
    report.write_results(tmp_path, old)
    new = {"command": "python scripts/benchmark.py --only=mfu", "date": "2026-01-01T00:00:00Z",
           "machine": report.machine_info("cpu"), "wall_s": 1.5, "sections": {
               "mfu": {"title": "MFU", "mode": "quick", "columns": [["what", "what"],
                                                                    ["mfu", "MFU"]],
                       "rows": [{"what": "matmul", "mfu": 1.0}, {"what": "b0", "mfu": math.nan}],
                       "notes": ["a note"], "figures": ["x.png"]},
               "train": {"title": "Train", "mode": "quick", "error": "RuntimeError: boom"}}}
    merged = report.merge_results(report.load_results(tmp_path / "results.json"), new)
    json_path, md_path = report.write_results(tmp_path, merged, ["mfu", "build", "train"])
    data = json.loads(json_path.read_text())  # NaN written as a string: valid JSON
    assert set(data["sections"]) == {"build", "mfu", "train"}
    assert data["sections"]["mfu"]["rows"][1]["mfu"] == "nan"
    md = md_path.read_text()
    # a partial rerun keeps the earlier header; its sections carry their own stamp
    assert data["command"] == "old" and data["date"] == "d0"
    assert "- Command: `old`" in md
    assert "by `python scripts/benchmark.py --only=mfu`" in md
    assert f"on {data['sections']['mfu']['cpu']}" in md and "2026-01-01T00:00:00Z" in md
    assert "command" not in data["sections"]["build"]  # the kept section is untouched
    full = report.merge_results(data, {**new, "sections": {**new["sections"], "build": {}}})
    assert full["command"] == new["command"]  # a run covering every section: new header
    assert md.index("## MFU") < md.index("## Build") < md.index("## Train")
    assert "| matmul | 1 |" in md and "| kept |" in md and "**Failed:** RuntimeError: boom" in md
    assert "![x.png](x.png)" in md and "- a note" in md


# --- config and flags ------------------------------------------------------------------

def test_overrides_are_typed_and_checked():
    cfg = config_lib.apply_overrides(config_lib.quick_config(), [
        "train_models=efficientnet-b0, efficientnetv2-b0", "train_jit=false", "repeats=2",
        "pipeline_mixup=0.5"])
    assert cfg.train_models == ("efficientnet-b0", "efficientnetv2-b0")
    assert cfg.train_jit == (False,) and cfg.repeats == 2 and cfg.pipeline_mixup == 0.5
    assert cfg.mode == "quick"
    with pytest.raises(ValueError, match="unknown setting 'repeat'. Did you mean 'repeats'"):
        config_lib.apply_overrides(cfg, ["repeat=3"])
    with pytest.raises(ValueError, match="repeats must be int"):
        config_lib.apply_overrides(cfg, ["repeats=many"])
    with pytest.raises(ValueError, match="progressive_stages must be <="):
        config_lib.apply_overrides(cfg, ["progressive_stages=9"])
    with pytest.raises(ValueError, match="progressive_tolerance is in accuracy points"):
        config_lib.apply_overrides(cfg, ["progressive_tolerance=-1"])


def test_presets_are_consistent():
    from keras_effnet.builder import resolve_variant

    quick, full = config_lib.quick_config(), config_lib.full_config()
    assert sorted(registry.DISPLAY_ORDER) == sorted(registry.SECTIONS)
    assert set(registry.CPU_SECTIONS) | {"reliability", "gpu"} == set(registry.SECTIONS)
    assert quick.mode == "quick" and full.mode == "full" and quick.repeats >= 5
    assert full.train_jit == (False, True) and full.train_image_size == 128
    assert quick.build_model_names() == ("efficientnet-b0", "efficientnetv2-b0")
    assert "efficientnet-l2" in full.build_model_names()
    for cfg in (quick, full):  # every model name or arch in the presets resolves
        for name in (cfg.train_models + cfg.mfu_models + cfg.build_model_names()
                     + (cfg.pipeline_model, cfg.progressive_model, cfg.serving_model,
                        cfg.tflite_model, cfg.gpu_model, cfg.search_nas_model,
                        cfg.search_scaling_model, cfg.transfer_model)):
            assert resolve_variant(name).blocks


def test_section_names_and_titles_derive_from_the_registry():
    assert bench.SECTIONS == registry.SECTIONS == tuple(r.name for r in registry.REGISTRY)
    assert registry.SECTIONS == ("plots", "build", "train", "pipeline", "mfu", "serving",
                                 "progressive", "main_job", "stage_cost", "transfer", "weights",
                                 "search", "tflite", "reliability", "gpu")
    assert registry.CPU_SECTIONS == registry.SECTIONS[:13]
    assert registry.DISPLAY_ORDER == ("plots", "main_job", "train", "pipeline",
                                      "progressive", "serving", "tflite", "build", "mfu",
                                      "reliability", "search", "gpu", "transfer", "stage_cost",
                                      "weights")
    assert registry.TITLES["mfu"] == "7. Model FLOP utilisation (inference)"
    assert registry.get("train").title.startswith("1. Training throughput")
    with pytest.raises(ConfigError, match="unknown section\\(s\\) bogus") as info:
        registry.get("bogus")
    assert info.value.field == "only"


def test_select_sections():
    assert registry.select() == list(registry.CPU_SECTIONS)
    assert registry.select(reliability=True) == list(registry.CPU_SECTIONS) + ["reliability"]
    assert registry.select(["mfu", "plots"]) == ["plots", "mfu"]  # run order
    assert registry.select(["reliability"]) == ["reliability"]
    assert registry.select(gpu=True) == registry.select(["gpu"], gpu=True) == ["gpu"]
    for kwargs, field in ((dict(only=()), "only"), (dict(only=["gpu"]), "only"),
                          (dict(only=["train"], gpu=True), "gpu")):
        with pytest.raises(ConfigError) as info:
            registry.select(**kwargs)
        assert info.value.field == field and "--" not in str(info.value)


def test_request_applies_the_preset_overrides_then_repeats():
    request = runner.BenchRequest(quick=True, repeats=2,
                                      overrides=("repeats=3", "mfu_batch=4"))
    config = request.config()
    assert (config.mode, config.repeats, config.mfu_batch) == ("quick", 2, 4)
    assert request.device == "cpu" and not request.merge
    assert runner.BenchRequest(only=("build",), gpu=False).merge
    with pytest.raises(ConfigError) as info:
        runner.BenchRequest(overrides=("nothing=1",)).config()
    assert info.value.field == "overrides" and "unknown setting 'nothing'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        runner.BenchRequest(repeats=0).config()
    assert info.value.field == "repeats"
    assert config_lib.BenchConfig.from_dict(config.to_dict()) == config


def test_json_ready_makes_results_plain_json():
    import numpy as np

    value = {1: (np.float32(1.5), np.int64(3), float("inf")), "a": np.arange(3),
             "b": [np.float64("nan"), np.bool_(True)]}
    assert report.json_ready(value) == {"1": [1.5, 3, "inf"], "a": [0, 1, 2],
                                        "b": ["nan", True]}


def _child_job(cfg, out):
    if cfg.seed == 1:
        raise RuntimeError("the child failed")
    return {"repeats": cfg.repeats, "out": str(out), "value": float("nan")}


def test_child_runs_a_function_in_a_fresh_process(tmp_path, monkeypatch):
    from keras_effnet.bench import child

    # the child imports this module by name: make its folder importable there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(_child_job, "__module__", Path(__file__).stem)
    cfg = config_lib.quick_config()
    result = child.run_in_child(_child_job, cfg, tmp_path, timeout=120)
    assert result["repeats"] == cfg.repeats and result["out"] == str(tmp_path)
    assert result["value"] == "nan" and result["child_wall_s"] >= 0
    failed = child.run_in_child(_child_job, config_lib.apply_overrides(cfg, ["seed=1"]),
                                tmp_path, timeout=120)
    assert failed["error"].startswith("exit status 1") and "the child failed" in failed["error"]
    with pytest.raises(ValueError, match="module-level function"):
        child.Child(lambda cfg, out: {}, cfg)


@pytest.mark.parametrize("args,message", [
    (["--only=train,bogus"], "error: --only: unknown section(s) bogus; choose from"),
    (["--bogus=1"], "error: Unknown command line flag 'bogus'"),
    (["--set=nothing=1"], "error: --set: unknown setting 'nothing'"),
    (["--repeats=0"], "error: --repeats: repeats must be >= 1"),
    (["--gpu", "--only=train"], "error: --gpu: gpu runs the accelerator part on its own"),
    (["--only=gpu"], "error: --only: the gpu section runs only in the accelerator run"),
    (["--set=tflite_flavours=int8"], "error: --set: tflite_flavours must include float32"),
    (["--set=tflite_flavours=float32,fp8"],
     "error: --set: tflite_flavours must include float32"),
    (["--set=repeats"], "error: --set: expects name=value"),
    (["train"], "error: unexpected arguments ['train']"),
    (["--gpu"], "error: --gpu needs a visible GPU"),  # CUDA_VISIBLE_DEVICES="" here
])
def test_bad_requests_print_one_line_and_exit_2(args, message, tmp_path):
    result = _run(*args, f"--out_dir={tmp_path}", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results.json").exists()


# --- figures ---------------------------------------------------------------------------

def test_accuracy_vs_macs_plot_is_a_png_with_every_published_variant(tmp_path):
    from keras_effnet.variants import VARIANTS

    path = tmp_path / "accuracy_vs_macs.png"
    points = plots.plot_accuracy_vs_macs(path)
    width, height = _png_size(path)
    assert width >= 400 and height >= 300
    published = {v.name for v in VARIANTS.values() if v.paper_top1 is not None}
    plotted = {r["model"] for rows in points.values() for r in rows}
    assert plotted == published and set(points) == {"v1", "lite", "v2"}
    b0 = next(r for r in points["v1"] if r["model"] == "efficientnet-b0")
    assert b0["top1"] == 77.1 and 0.37 < b0["macs_b"] < 0.40


def test_progressive_plan_plot(tmp_path):
    plan = plots.plot_progressive_plan(tmp_path / "plan.png")
    assert [s["image_size"] for s in plan["automl"]] == [171, 214, 257, 300]
    assert [s["dropout"] for s in plan["paper"]][-1] == pytest.approx(0.3)
    assert _png_size(tmp_path / "plan.png")[0] > 0


# --- reliability -----------------------------------------------------------------------

def test_block_string_fuzz_has_no_crashes():
    strings = fuzz.block_string_fuzz(300, seed=1)
    assert strings == fuzz.block_string_fuzz(300, seed=1)  # seeded
    result = fuzz.fuzz_block_strings(300, seed=1)
    assert result["crashed"] == 0, result["examples"]
    assert result["round_trip_failures"] == 0, result["examples"]
    assert result["block_spec"] > 0 and result["spec_error"] > 0
    assert result["block_spec"] + result["spec_error"] == 300


def test_serving_fuzz_classifies_outcomes():
    import numpy as np
    import tensorflow as tf

    inputs = fuzz.serving_fuzz_inputs(40, seed=0, max_pixels=10_000)
    assert len(inputs) == 40
    kinds = {kind.split(":")[0] for kind, _ in inputs}
    assert kinds == {"random", "magic", "truncated", "corrupted", "oversized", "valid"}
    assert all(isinstance(data, bytes) for _, data in inputs)

    def fake_serve(body):
        data = body.numpy()[0]
        if not data:
            raise ValueError("not an InvalidArgumentError")  # a crash
        if data[:2] == b"\xff\xd8":
            raise tf.errors.InvalidArgumentError(None, None, "bad jpeg")
        if len(data) % 7 == 0:
            return {"probabilities": np.array([[np.nan, 1.0]])}  # a crash too
        return {"probabilities": np.array([[0.25, 0.75]], np.float32)}

    bodies = [("random", b""), ("magic", b"\xff\xd8\xff"), ("valid:x", b"1234567"),
              ("valid:y", b"12")]
    counts = fuzz.fuzz_serving(fake_serve, bodies)
    assert counts["requests"] == 4 and counts["errored_cleanly"] == 1
    assert counts["crashed"] == 2 and counts["ok"] == 1
    assert counts["valid_requests"] == 2 and counts["valid_ok"] == 1


def test_messy_folder_is_sorted_as_expected(tmp_path):
    from keras_effnet.data import FolderSource

    expected = reliability.seed_image_folder(tmp_path, per_class=4)
    assert {"cats/gray.png", "dogs/rgba.png", "dogs/palette.png", "cats/empty.jpg"} <= set(
        expected)
    source = FolderSource(str(tmp_path))
    skipped = {os.path.relpath(p, tmp_path) for p, _ in source.skipped}
    assert skipped == {rel for rel, what in expected.items() if what == "skipped"}
    assert source.num_train + source.num_val == sum(w == "present" for w in expected.values())


# --- end to end ------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_mfu_section_writes_valid_results(tmp_path):
    result = _run("--only=mfu", f"--out_dir={tmp_path}", "--repeats=1",
                  "--set=warmup=0", "--set=mfu_models=efficientnet-b0", "--set=mfu_batch=1",
                  "--set=mfu_image_size=32", "--set=matmul_size=128")
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["command"].startswith("python scripts/benchmark.py --only=mfu")
    assert data["machine"]["device"] == "cpu" and data["machine"]["cores"] >= 1
    assert list(data["sections"]) == ["mfu"]
    section = data["sections"]["mfu"]
    assert "error" not in section, section
    rows = {row["what"]: row for row in section["rows"]}
    b0 = rows["efficientnet-b0"]
    assert b0["image_size"] == 32 and b0["batch"] == 1 and b0["macs_per_s"] > 0
    assert b0["mfu"] == pytest.approx(b0["macs_per_s"] / rows["float32 matmul 128x128 (peak)"]
                                      ["macs_per_s"])
    md = (tmp_path / "results.md").read_text()
    assert "## 7. Model FLOP utilisation" in md and "| efficientnet-b0 | 32 | 1 |" in md


def test_stage_cost_resolves_the_main_jobs_plan_as_the_trainer_does():
    from keras_effnet.bench.sections.stage_cost import main_job_config, plan_sizes

    config = main_job_config(bench.full_config())
    assert (config.dataset, config.epochs, config.batch_size) == ("mnist5k", 12, 64)
    variant, sizes = plan_sizes(config)
    assert variant.name == "efficientnetv2-b0-w0.5-d0.5" and sizes == [80, 96, 112, 128]
    # training flags apply, export flags are ignored
    config = main_job_config(bench.full_config(), ("--stages=2", "--image_size=96",
                                                   "--export_prune=0", "--noexport"))
    assert plan_sizes(config)[1] == [80, 96]
    assert plan_sizes(main_job_config(bench.full_config(), ("--stages=1",)))[1] == [128]


@pytest.mark.slow
def test_tiny_stage_cost_section_times_every_plan_size_at_two_batches(tmp_path):
    # The quick preset's main job: a small custom network on digits, 16 then 32 px (the
    # digits' paper schedule from --min_image_size=16).
    result = _run("--only=stage_cost", "--quick", f"--out_dir={tmp_path}", "--repeats=2",
                  "--set=warmup=0", "--set=stage_cost_steps=1", "--set=main_job_batch=2",
                  timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    section = json.loads((tmp_path / "results.json").read_text())["sections"]["stage_cost"]
    assert "error" not in section, section
    assert section["sizes"] == [16, 32] and section["batches"] == [2, 4]
    rows = {(r["image_size"], r["batch"]): r for r in section["rows"]}
    assert set(rows) == {(16, 2), (32, 2), (16, 4), (32, 4)}
    for (size, batch), row in rows.items():
        assert len(row["times_s"]) == 2 and min(row["times_s"]) > 0
        assert row["ms_per_image"] == pytest.approx(row["ms_per_step"] / batch)
        assert row["pixels_ratio"] == pytest.approx((size / 32) ** 2)
        assert 0 < row["macs_ratio"] <= 1
    assert rows[(32, 2)]["time_ratio"] == pytest.approx(1.0)
    assert rows[(16, 2)]["time_ratio"] == pytest.approx(
        rows[(16, 2)]["ms_per_image"] / rows[(32, 2)]["ms_per_image"])
    assert rows[(16, 4)]["per_image_vs_batch"] == pytest.approx(
        rows[(16, 4)]["ms_per_image"] / rows[(16, 2)]["ms_per_image"])
    assert "## 9. What a progressive stage costs" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_tiny_train_section_times_both_models_and_the_a_a_control(tmp_path):
    result = _run("--only=train", f"--out_dir={tmp_path}", "--repeats=2",
                  "--set=warmup=0", "--set=train_models=efficientnet-b0",
                  "--set=train_image_size=32", "--set=train_batch=2", "--set=train_steps=1",
                  "--set=train_classes=10", "--set=train_jit=false", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    section = json.loads((tmp_path / "results.json").read_text())["sections"]["train"]
    assert "error" not in section, section
    [row] = section["rows"]
    assert (row["model"], row["image_size"], row["batch"], row["jit_compile"]) == \
        ("efficientnet-b0", 32, 2, False)
    for side in ("ours", "theirs", "twin", "fused"):
        assert len(row[f"{side}_times_s"]) == 2 and min(row[f"{side}_times_s"]) > 0
    assert row["fused_ratio"] == pytest.approx(timing.median(row["theirs_times_s"])
                                               / timing.median(row["fused_times_s"]))
    assert row["ratio"] == pytest.approx(timing.median(row["theirs_times_s"])
                                         / timing.median(row["ours_times_s"]))
    assert row["control_ratio"] == pytest.approx(timing.median(row["twin_times_s"])
                                                 / timing.median(row["ours_times_s"]))
    low, high = (float(v) for v in row["round_ratios"].split("–"))
    assert low <= high
    md = (tmp_path / "results.md").read_text()
    assert "A/A control: ours built twice" in md and "| efficientnet-b0 | 32 | 2 | no |" in md
    assert "trainer's step (fused ops) img/s" in md


@pytest.mark.slow
def test_tiny_tflite_section_has_the_xnnpack_sparse_model_and_its_dense_twin(tmp_path):
    result = _run("--only=tflite", f"--out_dir={tmp_path}", "--repeats=1",
                  "--set=warmup=0", "--set=tflite_image_size=32", "--set=tflite_runs=2",
                  "--set=prune_epochs=1", "--set=prune_steps_per_epoch=2",
                  "--set=tflite_flavours=float32,xnnpack", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    section = json.loads((tmp_path / "results.json").read_text())["sections"]["tflite"]
    assert "error" not in section, section
    rows = {row["model"]: row for row in section["rows"]}
    assert set(rows) == {"float32", "xnnpack form, dense", "xnnpack form, pruned 75% (1x1)"}
    sparse = rows["xnnpack form, pruned 75% (1x1)"]
    assert sparse["sparse_encoded"] and sparse["min_kernel_sparsity"] >= 0.75
    assert sparse["gzip_bytes"] < rows["xnnpack form, dense"]["gzip_bytes"]
    xnnpack = section["xnnpack_sparse"]
    assert xnnpack["densify_ops"] > 0
    assert xnnpack["speedup"] == pytest.approx(xnnpack["dense_twin_ms"] / xnnpack["pruned_ms"])
    assert any("as fast as its dense twin" in note for note in section["notes"])
