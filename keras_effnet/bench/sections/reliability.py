"""Reliability: training killed with SIGKILL and resumed, fuzzed serving requests and
block strings, a messy image folder, hostile requests, unlucky disks and a hostile search
(run with the reliability switch)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_effnet.bench.sections.base import Context, Section
from keras_effnet.bench.sections.steps import clear_session

if TYPE_CHECKING:
    from keras_effnet.bench.config import BenchConfig

__all__ = ["SECTION", "run", "serving_fuzz", "serving_hostile"]


def serving_fuzz(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    """Fuzzed request bodies through a tiny model's serving_default; runs in a child
    process (a crash there is counted, not fatal to the benchmark)."""
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.bench import fuzz, reliability
    from keras_effnet.export.saved_model import export_saved_model

    max_pixels = 250_000
    model = keras_effnet.build(reliability.TINY_ARCH, classes=10)
    with tempfile.TemporaryDirectory() as work:
        export = export_saved_model(model, Path(work) / "models", model_name="fuzz",
                                    image_size=32, warmup=False, max_pixels=max_pixels)
        serve = tf.saved_model.load(str(export.path)).signatures["serving_default"]
        inputs = fuzz.serving_fuzz_inputs(cfg.serving_fuzz, cfg.seed, max_pixels)
        result = fuzz.fuzz_serving(lambda body: serve(image_bytes=body), inputs)
    result["max_pixels"] = max_pixels
    return result


def serving_hostile(cfg: BenchConfig, out: Path) -> dict[str, Any]:
    """Hostile requests (:func:`keras_effnet.bench.fuzz.hostile_serving`) through a tiny
    model's signatures, in a child process: its peak memory is what they are measured
    by, and a crash there is counted, not fatal to the benchmark."""
    import tensorflow as tf

    import keras_effnet
    from keras_effnet.bench import fuzz, reliability
    from keras_effnet.export.saved_model import export_saved_model

    max_pixels = 250_000
    model = keras_effnet.build(reliability.TINY_ARCH, classes=10)
    with tempfile.TemporaryDirectory() as work:
        export = export_saved_model(model, Path(work) / "models", model_name="hostile",
                                    image_size=32, warmup=False, max_pixels=max_pixels)
        loaded = tf.saved_model.load(str(export.path))
        return fuzz.hostile_serving(loaded.signatures["serving_default"],
                                    loaded.signatures["predict_images"], max_pixels)


def run(cfg: BenchConfig, out: Path, ctx: Context) -> dict[str, Any]:
    """(a) SIGKILL and resume, (b) serving fuzz, (c) block-string fuzz, (d) a messy
    image folder: each as a check with a goal."""
    from keras_effnet.bench import fuzz, reliability, search_hostile
    from keras_effnet.bench.child import run_in_child
    from keras_effnet.data import FolderSource
    from keras_effnet.train import TrainConfig, train

    result: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        # (a) SIGKILL and resume
        started = time.perf_counter()
        kill = reliability.kill_and_resume(Path(work) / "kill", cfg.kill_points, cfg.seed)
        kill["wall_s"] = time.perf_counter() - started
        result["kill_resume"] = kill
        lost = [k["steps_lost"] for k in kill["kills"] if k.get("steps_lost") is not None]
        rows.append({"check": "(a) SIGKILL at random steps, rerun the same command",
                     "result": f"{len(kill['kills'])} kills at steps "
                               f"{[k['killed_at'] for k in kill['kills']]}, resumed from "
                               f"{[k['resumed_from'] for k in kill['kills']]}; steps lost "
                               f"{lost}; final top-1 {_pct(kill['interrupted_top1'])} vs "
                               f"uninterrupted {_pct(kill['uninterrupted_top1'])}",
                     "goal": "completes; equal top-1",
                     "ok": kill["final_returncode"] == 0 and kill["top1_difference"] == 0})
        # (b) serving fuzz, in a child process: a crash there is counted, not fatal here
        served = run_in_child(serving_fuzz, cfg, out)
        result["serving_fuzz"] = served
        if served.get("error"):
            rows.append({"check": f"(b) {cfg.serving_fuzz} fuzzed byte strings through "
                                  "serving_default", "result": f"process failed: "
                                                               f"{served['error'][:200]}",
                         "goal": "0 crashed", "ok": False})
        else:
            rows.append({"check": f"(b) {served['requests']} random, truncated, corrupted, "
                                  "oversized and valid byte strings through serving_default",
                         "result": f"errored cleanly {served['errored_cleanly']}, crashed "
                                   f"{served['crashed']}"
                                   + (f" {served['crash_types']}" if served.get("crash_types")
                                      else "")
                                   + f", ok {served['ok']} (valid images: "
                                   f"{served['valid_ok']}/{served['valid_requests']} finite, "
                                   "summing to 1"
                                   + (f"; rejected: {served['valid_rejected_kinds']}"
                                      if served.get("valid_rejected_kinds") else "") + ")",
                         "goal": "0 crashed; valid all ok",
                         "ok": served["crashed"] == 0 and served["valid_rejected"] == 0})
        # (c) block-string fuzz
        spec = fuzz.fuzz_block_strings(cfg.spec_fuzz, cfg.seed)
        result["spec_fuzz"] = spec
        rows.append({"check": f"(c) {spec['strings']} fuzzed block strings through "
                              "keras_effnet.spec.parse",
                     "result": f"BlockSpec {spec['block_spec']}, SpecError "
                               f"{spec['spec_error']}, other {spec['crashed']}; round-trip "
                               f"failures {spec['round_trip_failures']}",
                     "goal": "0 other", "ok": spec["crashed"] == 0
                     and spec["round_trip_failures"] == 0})
        # (d) messy image folder
        folder = Path(work) / "folder"
        expected = reliability.seed_image_folder(folder, seed=cfg.seed)
        source = FolderSource(str(folder))
        skipped = {os.path.relpath(p, folder) for p, _ in source.skipped}
        actual = {rel: ("skipped" if rel in skipped else "present") for rel in expected}
        mismatches = {rel: {"expected": expected[rel], "actual": actual[rel]}
                      for rel in expected if expected[rel] != actual[rel]}
        clear_session()
        trained = train(TrainConfig(model=reliability.TINY_ARCH, dataset="folder",
                                data_dir=str(folder), model_dir=str(Path(work) / "run"),
                                epochs=2, stages=2, batch_size=8, image_size=16,
                                min_image_size=8, eval_every_epochs=0, verbose=0,
                                seed=cfg.seed), source=source)
        result["folder"] = {"files": len(expected),
                            "expected_skipped": sum(v == "skipped" for v in expected.values()),
                            "skipped": len(skipped), "present": source.num_train + source.num_val,
                            "mismatches": mismatches,
                            "skip_reasons": {os.path.relpath(p, folder): r
                                             for p, r in source.skipped},
                            "training_completed": trained.epochs_completed == 2,
                            "training_top1": trained.top1, "steps": trained.steps}
        f = result["folder"]
        rows.append({"check": f"(d) image folder of {f['files']} files: corrupt, empty, "
                              "non-image, grayscale, RGBA, palette, animated GIF, BMP",
                     "result": f"skipped {f['skipped']} (expected {f['expected_skipped']}), "
                               f"present {f['present']}; mismatches "
                               f"{list(mismatches) or 'none'}; a 2-epoch training run "
                               f"{'completed' if f['training_completed'] else 'FAILED'}",
                     "goal": "bad skipped, odd modes kept; run completes",
                     "ok": not mismatches and f["training_completed"]})
        # (e) hostile requests, in a child process (its peak memory measures them)
        hostile = run_in_child(serving_hostile, cfg, out)
        result["hostile_requests"] = hostile
        rows.append(_hostile_row(
            "(e) hostile requests: GIF frames larger than their screen, second frames, "
            "tiny sub-blocks; forged JPEG / PNG / BMP / WebP sizes; a bad image in a batch; "
            "NaN pixels", hostile, "past_budget", "decoded past the budget"))
        # (f) unlucky disks and misleading inputs around a run
        files = reliability.hostile_files(Path(work) / "hostile")
        result["hostile_files"] = files
        rows.append(_hostile_row(
            "(f) full disk on save, damaged checkpoint and config.json, resume with other "
            "classes, model_dir a file, broken models.config, versions past int64 or at "
            "once, absurd sizes, symlink loops, line breaks in class names", files,
            "partial_files", "partial files"))
        # (g) the search: journals, racing workers, grids, storages, a real PostgreSQL
        searched = search_hostile.hostile_search(Path(work) / "search")
        result["hostile_search"] = searched
        rows.append(_hostile_row(
            "(g) the search: a torn or damaged journal, a lower trial racing another "
            "process for one network, two workers on one journal, absurd grids, storages "
            "that cannot open, lite NAS, depth 60, a renamed study, a PostgreSQL server "
            "shared by two workers and one of them killed", searched, "duplicates",
            "duplicate trainings"))
    result["columns"] = [("check", "check"), ("result", "result"), ("goal", "goal"),
                         ("ok", "meets goal")]
    result["rows"] = rows
    result["notes"] = ["(a) scripts/train.py on digits with a tiny two-stage arch "
                       "(16 px, 2 epochs, batch 32, checkpoint every 10 steps), killed with "
                       "SIGKILL when its progress bar (on a pseudo-terminal) passes each "
                       "random step, then rerun; steps lost = last step shown - step resumed "
                       "from (can undercount by a step: the bar refreshes every 50 ms). "
                       "(b) SavedModel of a tiny model with max_pixels=250,000; errored "
                       "cleanly = tf.errors.InvalidArgumentError, crashed = anything else or "
                       "non-finite / non-normalised output. (e) the same model with "
                       "max_pixels=250,000; decoded past the budget = the process's peak "
                       "memory grew by more than 32 MB on one request; a hang = over 10 s. "
                       "(f) a full disk is RLIMIT_FSIZE; partial files = temporaries or "
                       "half-written files left; files lost = a file the user had that "
                       "changed or went. (g) training is a stand-in (a sleep leaving one "
                       "file per training): a duplicate is a network trained twice; the "
                       "PostgreSQL server is a throw-away cluster on 127.0.0.1 "
                       "(keras_effnet.bench.postgres)."]
    return result


def _hostile_row(check: str, found: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """A table row for a hostile set: tried, crashes, hangs, ``key`` (requests decoded
    past the budget, or partial files) and files lost, against a goal of 0 each."""
    if found.get("error"):
        return {"check": check, "result": f"process failed: {found['error'][:200]}",
                "goal": "0 crashes, hangs, " + what, "ok": False}
    bad = {"crashes": found["crashed"], "hangs": found["hangs"], what: found[key],
           "files lost": found.get("lost_files", 0),
           "unexpected outcomes": found.get("unexpected", 0)}
    return {"check": check,
            "result": f"{found['tried']} tried: " + ", ".join(f"{n} {k}"
                                                             for k, n in bad.items()),
            "goal": f"0 crashes, hangs, {what}, files lost", "ok": not any(bad.values())}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


SECTION = Section("reliability", "Reliability", cpu_only=True, run=run, display=9,
                  default=False)
