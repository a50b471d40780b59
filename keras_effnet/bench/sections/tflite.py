"""5. TFLite: size and latency of float32, float16, int8, pruned and XNNPACK-sparse
models (ai-edge-litert with XNNPACK).

Conversion and pruning run in a child process (:func:`prepare_tflite`): importing
tensorflow-model-optimization switches a process to legacy Keras.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.child import Child
from keras_effnet.bench.sections.base import Context, Section

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "prepare_tflite", "XNNPACK_DENSE", "XNNPACK_SPARSE"]

XNNPACK_DENSE = "xnnpack form, dense"
XNNPACK_SPARSE = "xnnpack form, pruned 75% (1x1)"
BACKGROUND_KEY = "tflite"  # the conversion child, in Context.background


def _tflite_file(name: str) -> str:
    return name.replace(" ", "_").replace("%", "pct") + ".tflite"


def prepare_tflite(cfg: BenchConfig, models_dir: Path) -> dict[str, Any]:
    """Converts (and prunes) the TFLite models into ``models_dir``; runs in a child
    process, because importing tensorflow-model-optimization switches the process to
    legacy Keras. Returns sizes, sparsity and how long each step took."""
    import keras

    import keras_effnet
    from keras_effnet.builder import resolve_variant
    from keras_effnet.data.digits import digits_arrays
    from keras_effnet.export import prune as prune_lib
    from keras_effnet.export import rewrite, tflite

    size = cfg.tflite_image_size
    keras.utils.set_random_seed(cfg.seed)
    model = keras_effnet.build(cfg.tflite_model, classes=10, input_shape=(size, size, 3))
    x, y, _, _ = digits_arrays(size)
    calibration = x[:100]  # int8, before the fine-tuning's cut below
    if cfg.prune_steps_per_epoch:  # only what the fine-tuning reads
        x, y = x[:32 * cfg.prune_steps_per_epoch], y[:32 * cfg.prune_steps_per_epoch]
    info: dict[str, dict[str, Any]] = {}
    spent: dict[str, float] = {}
    mark = time.perf_counter()

    def keep(key: str, content: bytes, **extra) -> None:
        nonlocal mark
        (models_dir / _tflite_file(key)).write_bytes(content)
        info[key] = {"bytes": len(content), "gzip_bytes": tflite.gzipped_size(content),
                     **extra}
        now = time.perf_counter()
        spent[key] = round(now - mark, 1)
        mark = now

    flavours = cfg.tflite_flavours
    keep("float32", tflite.convert(model))
    if "float16" in flavours:
        keep("float16", tflite.convert(model, "float16"))
    if "int8" in flavours:
        keep("int8", tflite.convert(model, "int8", representative_images=calibration))
    for target in (t for t in (0.5, 0.75) if f"pruned{int(t * 100)}" in flavours):
        pruned = prune_lib.prune(model, (x, y), prune_lib.PruneConfig(
            target_sparsity=target, epochs=cfg.prune_epochs,
            steps_per_epoch=cfg.prune_steps_per_epoch or None),
            variant=cfg.tflite_model)
        content = tflite.convert(pruned.model, sparsity=True)
        keep(f"pruned {int(target * 100)}%", content, min_kernel_sparsity=pruned.min_sparsity,
             sparse_encoded=tflite.sparsity_encoded(content))
    if "xnnpack" in flavours and resolve_variant(cfg.tflite_model).family == "lite":
        # XNNPACK's sparse-inference form: the dense twin rewritten the same way, and
        # 75 % pruning of the 1x1 convolutions checked by PruneForLatencyOnXNNPack.
        keep(XNNPACK_DENSE, tflite.convert(rewrite.to_xnnpack_form(model, input_size=size)))
        pruned = prune_lib.prune(model, (x, y), prune_lib.PruneConfig(
            target_sparsity=0.75, epochs=cfg.prune_epochs,
            steps_per_epoch=cfg.prune_steps_per_epoch or None, policy="xnnpack"),
            variant=cfg.tflite_model, image_size=size)
        content = tflite.convert(rewrite.replay(pruned.model, lambda *args: None,
                                                input_size=size), sparsity=True)
        keep(XNNPACK_SPARSE, content, min_kernel_sparsity=pruned.min_sparsity,
             sparse_encoded=tflite.sparsity_encoded(content),
             densify_ops=tflite.densify_ops(content))
    return {"models": info, "seconds": spent}


def prepare(cfg: BenchConfig, ctx: Context) -> None:
    """With ``tflite_background``, starts the conversion child with the run: untimed
    CPU work that can overlap the first sections."""
    if cfg.tflite_background:
        ctx.background.start(BACKGROUND_KEY, prepare_tflite, cfg)


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Size and single-image latency of each TFLite flavour (converted in a child
    process), interleaved, against the float32 model."""
    import numpy as np

    from keras_effnet.export import tflite

    child = ctx.background.take(BACKGROUND_KEY)
    background = child is not None
    child = child or Child(prepare_tflite, cfg)
    try:
        prepared = child.result()
        if prepared.get("error"):
            raise RuntimeError(f"TFLite conversion failed: {prepared['error']}")
        contents = {k: (child.out / _tflite_file(k)).read_bytes() for k in prepared["models"]}
    finally:
        child.cleanup()
    size = cfg.tflite_image_size
    runners = {k: tflite.LiteRunner(c, num_threads=cfg.tflite_threads)
               for k, c in contents.items()}
    image = np.random.default_rng(cfg.seed).uniform(0, 255, (size, size, 3)).astype("float32")
    per_round: dict[str, list[float]] = {k: [] for k in runners}
    for runner in runners.values():  # warm-up
        runner.latency(image, runs=2, warmup=2)
    names = list(runners)
    for r in range(cfg.repeats):  # interleaved: one block of invokes per model per round
        for k in (names if r % 2 == 0 else names[::-1]):
            per_round[k].append(timing.median(runners[k].latency(
                image, runs=cfg.tflite_runs, warmup=1)))
    base = timing.median(per_round["float32"])
    float_bytes = prepared["models"]["float32"]["bytes"]
    rows = []
    for k, info in prepared["models"].items():
        ms = timing.median(per_round[k])
        rows.append({"model": k, "bytes": info["bytes"], "gzip_bytes": info["gzip_bytes"],
                     "latency_ms": None if ms is None else 1e3 * ms,
                     "latency_vs_float32": timing.ratio(ms, base),
                     "size_vs_float32": info["bytes"] / float_bytes,
                     "min_kernel_sparsity": info.get("min_kernel_sparsity"),
                     "sparse_encoded": info.get("sparse_encoded"),
                     "times_s": per_round[k]})
    notes = []
    xnnpack = None
    if XNNPACK_SPARSE in per_round:
        twin, sparse = (timing.median(per_round[k]) for k in (XNNPACK_DENSE, XNNPACK_SPARSE))
        reason = tflite.xnnpack_sparse_unavailable()
        xnnpack = {"dense_twin_ms": None if twin is None else 1e3 * twin,
                   "pruned_ms": None if sparse is None else 1e3 * sparse,
                   "speedup": timing.ratio(twin, sparse),
                   "densify_ops": prepared["models"][XNNPACK_SPARSE].get("densify_ops"),
                   "sparse_path_unavailable": reason}
        notes.append(
            "XNNPACK-sparse: the 75 %-pruned model in XNNPACK's sparse form runs "
            + ("–" if xnnpack["speedup"] is None else f"{xnnpack['speedup']:.2f}x")
            + " as fast as its dense twin "
            f"({xnnpack['densify_ops']} sparse weights, each behind the DENSIFY op XNNPACK "
            "reads as its sparse hint)"
            + (f"; on this machine {reason}." if reason else "."))
    return {
        "xnnpack_sparse": xnnpack,
        "columns": [("model", "TFLite model"), ("bytes", "bytes"), ("gzip_bytes", "gzipped"),
                    ("size_vs_float32", "size vs float32"), ("latency_ms", "latency (ms)"),
                    ("latency_vs_float32", "latency vs float32"),
                    ("min_kernel_sparsity", "min kernel sparsity"),
                    ("sparse_encoded", "sparse encoded")],
        "rows": rows, "prepare_s": prepared.get("seconds"),
        "prepare_wall_s": prepared.get("child_wall_s"), "prepared_in_background": background,
        "notes": [f"{cfg.tflite_model} at {size} px, batch 1, 10 classes, "
                  f"{cfg.tflite_threads} thread(s), ai-edge-litert with XNNPACK "
                  "(OpResolverType.AUTO); median over rounds of the median of "
                  f"{cfg.tflite_runs} invokes, models interleaved. int8 calibrated on 100 "
                  "digits; pruned = keras_effnet.export.prune magnitude pruning (fine-tuned "
                  f"{cfg.prune_epochs} epoch(s)"
                  + (f" of {cfg.prune_steps_per_epoch} steps" if cfg.prune_steps_per_epoch
                     else "") + " on digits) converted float32 with sparse encoding where "
                  "XNNPACK accepts it. The model is not trained: sizes and latencies only. "
                  "Conversion and pruning ran in a child process"
                  + (", in the background from the start of the run" if background else "")
                  + f" ({prepared.get('child_wall_s')} s)."] + notes}



SECTION = Section("tflite", "5. TFLite (ai-edge-litert, XNNPACK)", cpu_only=True, run=run,
                  display=6, prepare=prepare)
