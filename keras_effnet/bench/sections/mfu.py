"""7. Model FLOP utilisation: inference MACs/s against a matmul peak."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session, random_batch

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run"]


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Inference MACs per second of each model as a fraction of a float32 matmul's."""
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.profile import profile

    n = cfg.matmul_size
    a = tf.random.normal([n, n], seed=cfg.seed)
    b = tf.random.normal([n, n], seed=cfg.seed + 1)
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)), autograph=False)

    def peak():
        for _ in range(cfg.matmul_calls):
            value = matmul()
        return float(value)

    fns: dict[str, Callable[[], object]] = {"matmul": peak}
    macs: dict[str, int] = {}
    sizes: dict[str, int] = {}
    clear_session()
    for name in cfg.mfu_models:
        size = cfg.mfu_image_size or keras_effnet.get_variant(name).eval_size
        sizes[name] = size
        model = keras_effnet.build(name, input_shape=(size, size, 3))
        images, _ = random_batch(cfg.mfu_batch, size, 2, cfg.seed)
        forward = tf.function(lambda x, model=model: tf.reduce_sum(model(x, training=False)),
                              autograph=False)
        fns[name] = lambda forward=forward, images=images: float(forward(images))
        macs[name] = profile(name, image_size=size).macs
    times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup)
    t_peak = timing.median(times["matmul"])
    peak_macs = timing.per_second(cfg.matmul_calls * n ** 3, t_peak)
    rows = [{"what": f"float32 matmul {n}x{n} (peak)", "image_size": None, "batch": None,
             "macs_per_s": peak_macs, "mfu": 1.0, "times_s": times["matmul"]}]
    for name in cfg.mfu_models:
        t = timing.median(times[name])
        achieved = timing.per_second(macs[name] * cfg.mfu_batch, t)
        rows.append({"what": name, "image_size": sizes[name], "batch": cfg.mfu_batch,
                     "gmacs_per_image": macs[name] / 1e9, "macs_per_s": achieved,
                     "img_s": timing.per_second(cfg.mfu_batch, t),
                     "mfu": timing.ratio(achieved, peak_macs), "times_s": times[name]})
    for row in rows:
        row["gmacs_per_s"] = None if row["macs_per_s"] is None else row["macs_per_s"] / 1e9
    return {
        "columns": [("what", "what"), ("image_size", "image"), ("batch", "batch"),
                    ("gmacs_per_image", "GMACs/image"), ("img_s", "img/s"),
                    ("gmacs_per_s", "achieved GMACs/s"), ("mfu", "MFU (of matmul peak)")],
        "rows": rows,
        "notes": ["Inference (training=False, tf.function, no XLA), MACs from "
                  "keras_effnet.profile (convolutions and dense only); peak = "
                  "tf.linalg.matmul float32 in the same run, MACs/s = n^3 / time; "
                  "interleaved rounds."]}


SECTION = Section("mfu", "7. Model FLOP utilisation (inference)", cpu_only=True, run=run,
                  display=8)
