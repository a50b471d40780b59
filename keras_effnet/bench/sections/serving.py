"""4. Serving: the SavedModel's serving_default on JPEG bytes vs the Keras model."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run"]

# Besides photos sent at the eval size (short side size + 32, whose centre crop needs no
# resize), the largest batch is also timed with photos this much larger: every crop is
# then resized (antialiased), the cost a client that sends full-size photos pays.
LARGER_PHOTOS = 1.5


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Latency of the exported SavedModel's serving_default on JPEG bytes against the
    Keras model on the same decoded pixels, and the export's load time."""
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.export.images import PARALLEL_DECODES, decode_and_center_crop
    from keras_effnet.bench.photos import jpeg_bytes
    from keras_effnet.export.saved_model import export_saved_model

    size = cfg.serving_image_size
    clear_session()
    model = keras_effnet.build(cfg.serving_model, classes=10, width=cfg.serving_width,
                               depth=cfg.serving_depth)
    rows, load_times = [], []
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        export = export_saved_model(model, Path(work) / "models", model_name="bench",
                                    image_size=size, warmup=False)
        export_s = time.perf_counter() - started

        def load():
            tf.saved_model.load(str(export.path))
        load_times = timing.interleaved({"load": load}, cfg.repeats, warmup=cfg.warmup)["load"]
        loaded = tf.saved_model.load(str(export.path))
        serve = loaded.signatures["serving_default"]
        decode = tf.function(lambda b: decode_and_center_crop(b, size), autograph=False)
        forward = tf.function(lambda x: model(x, training=False), autograph=False)
        largest = max(cfg.serving_batches)
        cases = [(batch, size + 32) for batch in cfg.serving_batches]
        cases.append((largest, round(LARGER_PHOTOS * (size + 32))))
        photos = {short: jpeg_bytes(largest, short, cfg.seed)
                  for short in sorted({s for _, s in cases})}
        decoded = {short: tf.stack([decode(tf.constant(b)) for b in jpegs])
                   for short, jpegs in photos.items()}
        for batch, short in cases:
            body = tf.constant(photos[short][:batch])
            pixels = decoded[short][:batch]

            def served(body=body):
                for _ in range(cfg.serving_calls):
                    result = serve(image_bytes=body)
                return float(tf.reduce_sum(result["probabilities"]))

            def keras_call(pixels=pixels):
                for _ in range(cfg.serving_calls):
                    result = forward(pixels)
                return float(tf.reduce_sum(result))
            times = timing.interleaved({"serving": served, "keras": keras_call},
                                       cfg.repeats, warmup=cfg.warmup)
            a, b = timing.median(times["serving"]), timing.median(times["keras"])
            rounds = timing.paired_ratios(times["serving"], times["keras"])
            per = cfg.serving_calls
            rows.append({"batch": batch, "image_size": size, "short_side": short,
                         "serving_ms": None if a is None else 1e3 * a / per,
                         "keras_ms": None if b is None else 1e3 * b / per,
                         "overhead_ratio": timing.ratio(a, b),
                         "round_ratios": rounds, "rounds": timing.spread(rounds),
                         "serving_img_s": timing.per_second(batch * per, a),
                         "keras_img_s": timing.per_second(batch * per, b)})
        del loaded, serve
    load_ms = timing.median(load_times)
    return {
        "tables": [{"columns": [("batch", "batch"), ("image_size", "image"),
                                ("short_side", "photo short side"),
                                ("serving_ms", "serving_default on JPEG (ms/call)"),
                                ("keras_ms", "Keras model on decoded (ms/call)"),
                                ("overhead_ratio", "overhead ratio serving/Keras"),
                                ("rounds", "rounds"),
                                ("serving_img_s", "serving img/s"),
                                ("keras_img_s", "Keras img/s")], "rows": rows},
                   {"columns": [("what", "what"), ("ms", "ms")],
                    "rows": [{"what": "tf.saved_model.load (median)",
                              "ms": None if load_ms is None else 1e3 * load_ms},
                             {"what": "export_saved_model (once)", "ms": 1e3 * export_s}]}],
        "rows": rows, "load_ms": None if load_ms is None else 1e3 * load_ms,
        "load_times_s": load_times, "export_s": export_s,
        "notes": [f"{cfg.serving_model} (width {cfg.serving_width}, depth "
                  f"{cfg.serving_depth}, 10 classes) exported with "
                  "keras_effnet.export.saved_model; serving_default = header checks and "
                  "EXIF orientations (one pass over the batch's JPEG headers) + decode and "
                  f"centre crop ({PARALLEL_DECODES} images at a time) + resize when the crop is "
                  "not already the served size + model + top-k + labels, on JPEG bytes "
                  "(photo crops; short side "
                  f"{size + 32} px, the eval size, or {round(LARGER_PHOTOS * (size + 32))} "
                  "px, every crop resized); Keras = the same model in a tf.function on "
                  "the same decoded, cropped tensors. "
                  f"{cfg.serving_calls} calls per round; rounds: the spread of the "
                  "per-round ratios."]}


SECTION = Section("serving", "4. Serving: SavedModel serving_default vs the Keras model",
                  cpu_only=True, run=run, display=5)
