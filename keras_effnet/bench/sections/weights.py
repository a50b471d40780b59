"""Pretrained weights: download-free load time per variant, and the loaded model's
agreement with its source.

Nothing is downloaded (this machine has no internet): each tag's publisher file is
written in its layout from random weights (:mod:`keras_effnet.bench.weight_files`) into a
local mirror directory (``KERAS_EFFNET_WEIGHTS_MIRROR``), so a first load is a local copy,
its verification and, for Google's tarballs, the conversion; later loads read the cache.
keras tags use the file's md5 in place of the published one (the table's hash, patched
for the run). Per tag:

* ``build(name)`` (no weights) against ``build(name, weights=tag)`` from the cache, and
  for keras tags ``keras.applications``' own ``weights="imagenet"`` from the same cache:
  median of ``repeats`` builds after a cleared session;
* the first load (copy, verify, convert), once;
* agreement: logits on ``weights_images`` random images at the tag's evaluation size,
  against keras.applications' model (keras tags) or the model whose weights were written
  (official tags): the largest difference relative to the reference's largest logit,
  and the share of images whose top-1 class agrees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

from keras_effnet import timing
from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "agreement"]


def agreement(ours: Any, reference: Any) -> dict[str, float]:
    """Largest |difference| relative to the reference's largest |logit|, and the share of
    rows whose argmax agrees."""
    import numpy as np
    ours, reference = np.asarray(ours, "float64"), np.asarray(reference, "float64")
    scale = float(np.abs(reference).max()) or 1.0
    return {"max_rel_diff": float(np.abs(ours - reference).max()) / scale,
            "top1_agreement": float((ours.argmax(-1) == reference.argmax(-1)).mean())}


@contextlib.contextmanager
def _local_mirror(work: Path) -> Iterator[Path]:
    """Cache and mirror below ``work`` for keras_effnet and keras, restored afterwards."""
    import keras.src.backend.config as keras_config
    saved = {k: os.environ.get(k) for k in ("KERAS_HOME", "KERAS_EFFNET_WEIGHTS_MIRROR",
                                            "KERAS_EFFNET_OFFLINE")}
    keras_dir = keras_config._KERAS_DIR
    mirror = work / "mirror"
    os.environ.update(KERAS_HOME=str(work / "cache"), KERAS_EFFNET_WEIGHTS_MIRROR=str(mirror))
    os.environ.pop("KERAS_EFFNET_OFFLINE", None)
    keras_config._KERAS_DIR = str(work / "cache")
    try:
        yield mirror
    finally:
        keras_config._KERAS_DIR = keras_dir
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _hashes(row: Any, top: str, notop: str) -> Iterator[None]:
    """The table's md5s, and keras' own, set to the files written (restored after)."""
    from keras_effnet.bench.weight_files import keras_md5_slot
    from keras_effnet.weights import WEIGHTS
    hashes, key = keras_md5_slot(row.variant)
    saved = hashes[key]
    WEIGHTS[(row.variant, row.tag)] = dataclasses.replace(row, md5=(top, notop))
    hashes[key] = (top, notop)
    try:
        yield
    finally:
        WEIGHTS[(row.variant, row.tag)] = row
        hashes[key] = saved


def _measure(cfg: BenchConfig, row: Any, mirror: Path) -> dict[str, Any]:
    import numpy as np
    import keras_effnet
    from keras_effnet.bench import weight_files
    from keras_effnet.port import keras_applications_model

    def path(origin):
        return mirror / urlsplit(origin).path.lstrip("/")

    rng = np.random.default_rng(cfg.seed)
    size = row.image_size or keras_effnet.get_variant(row.variant).eval_size
    x = rng.uniform(0, 255, (cfg.weights_images, size, size, 3)).astype("float32")
    stack = contextlib.ExitStack()
    source = None
    if row.source == "keras":
        weight_files.keras_pair(row.variant, path(row.origin), path(row.origin_notop))
        stack.enter_context(_hashes(row, weight_files.md5(path(row.origin)),
                                    weight_files.md5(path(row.origin_notop))))
    else:
        source = keras_effnet.build(row.variant, classes=row.classes,
                                    classifier_activation=None)
        weight_files.write_tarball(weight_files.official_variables(source, row.variant),
                                   path(row.origin))
    with stack:
        clear_session()
        first = timing.timed(lambda: keras_effnet.build(row.variant, weights=row.tag))
        fns = {"none": lambda: keras_effnet.build(row.variant),
               "cached": lambda: keras_effnet.build(row.variant, weights=row.tag)}
        if row.source == "keras":
            fns["keras.applications"] = lambda: keras_applications_model(
                row.variant, weights="imagenet")
        times = timing.interleaved(fns, cfg.repeats, warmup=0,
                                   timer=lambda fn: (clear_session(), timing.timed(fn))[1])
        ours = keras_effnet.build(row.variant, weights=row.tag, classifier_activation=None)
        # keras tags: keras' own weights="imagenet" model, from the same cache.
        theirs = source if source is not None else keras_applications_model(
            row.variant, weights="imagenet", classifier_activation=None)
        if row.preprocessing != keras_effnet.get_variant(row.variant).preprocessing:
            # The source was built with the variant's normalisation: compare the networks
            # on one normalised input (AdvProp's x * 2 / 255 - 1).
            ours = keras_effnet.build(row.variant, weights=row.tag, classifier_activation=None,
                                      include_preprocessing=False)
            bare = keras_effnet.build(row.variant, classes=row.classes,
                                      classifier_activation=None, include_preprocessing=False)
            bare.set_weights(theirs.get_weights())
            theirs, x = bare, x / 127.5 - 1.0
        agree = agreement(ours.predict(x, verbose=0), theirs.predict(x, verbose=0))
    none, cached = timing.median(times["none"]), timing.median(times["cached"])
    peer = timing.median(times["keras.applications"]) if "keras.applications" in times else None
    clear_session()
    return {"weights": f"{row.variant} {row.tag}", "source": row.source,
            "params": int(ours.count_params()), "first_s": first, "build_s": none,
            "cached_s": cached, "load_s": cached - none, "keras_s": peer,
            "ratio": timing.ratio(cached, peer), "image_size": size, **agree,
            "times_s": dict(times)}


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """Load times and agreement for ``cfg.weights_tags`` (``variant:tag``)."""
    from keras_effnet.weights import get_weight_tag
    rows = []
    with tempfile.TemporaryDirectory(prefix="weights-bench-") as work:
        with _local_mirror(Path(work)) as mirror:
            for item in cfg.weights_tags:
                variant, tag = item.split(":", 1)
                rows.append(_measure(cfg, get_weight_tag(variant, tag), mirror))
    return {
        "columns": [("weights", "weights"), ("params", "parameters"),
                    ("first_s", "first load (s)"), ("build_s", "build, no weights (s)"),
                    ("cached_s", "build + load, cached (s)"),
                    ("keras_s", "keras.applications imagenet, cached (s)"),
                    ("ratio", "ratio ours/keras"), ("max_rel_diff", "max |diff| / max |logit|"),
                    ("top1_agreement", "top-1 agreement")],
        "rows": rows,
        "notes": [f"Publisher-layout files written from random weights into a local mirror "
                  f"(no download); medians of {cfg.repeats} builds after a cleared session. "
                  "First load: copy, hash (keras) or content check and sha256 record plus "
                  "conversion to .weights.h5 (Google's tarballs). Agreement on "
                  f"{cfg.weights_images} random images at the tag's evaluation size: "
                  "against keras.applications' own weights=\"imagenet\" model (keras tags) "
                  "or the model whose weights were written (official tags); \"-\": "
                  "keras.applications has no such tag."]}


SECTION = Section("weights", "10. Pretrained weights: load time and agreement",
                  cpu_only=True, run=run, display=14)
