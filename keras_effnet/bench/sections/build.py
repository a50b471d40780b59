"""6. Build time: keras_effnet vs keras.applications, after a cleared session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run"]


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Seconds to build each model, keras_effnet against keras.applications."""
    import keras_effnet
    from keras_effnet.port import KERAS_APPLICATIONS_NAMES, keras_applications_model

    def timer(fn):
        clear_session()
        return timing.timed(fn)

    rows = []
    for name in cfg.build_model_names():
        fns = {"ours": lambda name=name: keras_effnet.build(name)}
        if name in KERAS_APPLICATIONS_NAMES:
            fns["theirs"] = lambda name=name: keras_applications_model(name)
        times = timing.interleaved(fns, cfg.repeats, warmup=cfg.warmup, timer=timer)
        a = timing.median(times["ours"])
        b = timing.median(times["theirs"]) if "theirs" in times else None
        rows.append({"model": name, "ours_s": a, "theirs_s": b, "ratio": timing.ratio(a, b),
                     "ours_times_s": times["ours"], "theirs_times_s": times.get("theirs")})
        clear_session()
    return {
        "columns": [("model", "model"), ("ours_s", "keras_effnet (s)"),
                    ("theirs_s", "keras.applications (s)"), ("ratio", "ratio ours/theirs")],
        "rows": rows,
        "notes": ["Building the model (1000 classes, weights=None, default input shape) "
                  "after keras.backend.clear_session(); ratio < 1: keras_effnet builds "
                  "faster. \"–\": keras.applications has no such variant."]}


SECTION = Section("build", "6. Build time: keras_effnet vs keras.applications",
                  cpu_only=True, run=run, display=7)
