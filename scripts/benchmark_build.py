"""Build time of keras_effnet vs keras.applications, A/B interleaved in one process.

    python scripts/benchmark_build.py --models=efficientnetv2-l --repeats=3

Reports the median seconds of each side and the ratio (ours / keras.applications; < 1 is
faster). The machine may be shared and noisy: compare ratios, not absolute times.
"""

from __future__ import annotations

import gc
import json
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["efficientnetv2-l"], "Variants that keras.applications has.")
flags.DEFINE_integer("repeats", 3, "Timed builds per side after one warm-up each.")
flags.DEFINE_string("json_out", None, "Also write the results here as JSON.")


def _timed(fn) -> float:
    import keras
    keras.backend.clear_session()
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    import keras_effnet
    from keras_effnet.port import keras_applications_model

    results = []
    for name in FLAGS.models:
        ours = lambda: keras_effnet.build(name)  # noqa: E731
        theirs = lambda: keras_applications_model(name)  # noqa: E731
        _timed(ours), _timed(theirs)  # warm-up: imports, first-trace caches
        times = {"keras_effnet": [], "keras.applications": []}
        for _ in range(FLAGS.repeats):  # interleaved A/B
            times["keras_effnet"].append(_timed(ours))
            times["keras.applications"].append(_timed(theirs))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"model": name, "repeats": FLAGS.repeats,
               "keras_effnet_s": round(med["keras_effnet"], 2),
               "keras_applications_s": round(med["keras.applications"], 2),
               "ratio": round(med["keras_effnet"] / med["keras.applications"], 3)}
        results.append(row)
        print(f"{name}: keras_effnet {row['keras_effnet_s']} s, keras.applications "
              f"{row['keras_applications_s']} s (median of {FLAGS.repeats}), "
              f"ratio {row['ratio']}", flush=True)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
