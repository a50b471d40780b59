"""Reliability checks that need files or processes: a messy image folder, training
killed with SIGKILL then resumed, and unlucky disks and misleading inputs around a run
(:func:`hostile_files`). (The fuzzers are in :mod:`keras_effnet.bench.fuzz`.)

Everything is seeded (the same files and kill points on every run); the runners report
outcomes instead of asserting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from keras_effnet.bench.photos import encode, photo_crop

__all__ = ["TINY_ARCH", "seed_image_folder", "kill_and_resume", "disk_full", "hostile_files"]

# Two tiny stages (~25k parameters at 10 classes): trains at 8-16 px in seconds.
TINY_ARCH = "r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25"


# --- image folder ------------------------------------------------------------------------

def seed_image_folder(root: str | os.PathLike, per_class: int = 24, seed: int = 0
                      ) -> dict[str, str]:
    """Writes a two-class image folder with good images and every kind of bad or odd
    file. Returns ``{relative path: "present" | "skipped"}``, what a tolerant folder
    source should do with each file."""
    rng = random.Random(seed)
    root = Path(root)
    expected: dict[str, str] = {}

    def put(rel: str, data: bytes, expect: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = expect

    for label in ("cats", "dogs"):
        for i in range(per_class):
            image = photo_crop(rng, rng.randint(24, 64), rng.randint(24, 64))
            fmt = "JPEG" if i % 2 else "PNG"
            put(f"{label}/{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}", encode(image, fmt),
                "present")
    good = encode(photo_crop(rng, 48, 48), "JPEG")
    # Odd modes: decodable, converted to RGB by the source.
    put("cats/gray.png", encode(photo_crop(rng, 40, 40).convert("L"), "PNG"), "present")
    put("cats/gray.jpg", encode(photo_crop(rng, 40, 40).convert("L"), "JPEG"), "present")
    put("dogs/rgba.png", encode(photo_crop(rng, 40, 40).convert("RGBA"), "PNG"), "present")
    put("dogs/palette.png", encode(photo_crop(rng, 40, 40).convert("P"), "PNG"), "present")
    put("cats/palette.gif", encode(photo_crop(rng, 40, 40).convert("P"), "GIF"), "present")
    put("dogs/rgb.bmp", encode(photo_crop(rng, 40, 40), "BMP"), "present")
    put("dogs/UPPER.JPG", encode(photo_crop(rng, 40, 40), "JPEG"), "present")
    frames = [photo_crop(rng, 32, 32).convert("P") for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    put("cats/animated.gif", buffer.getvalue(), "present")
    # Bad files: skipped.
    put("cats/empty.jpg", b"", "skipped")
    put("dogs/empty.png", b"", "skipped")
    put("cats/truncated.jpg", good[:len(good) // 3], "skipped")
    put("dogs/truncated.png", encode(photo_crop(rng, 40, 40), "PNG")[:60], "skipped")
    put("cats/garbage.jpg", bytes(rng.getrandbits(8) for _ in range(500)), "skipped")
    put("dogs/text.png", b"this is not an image\n" * 5, "skipped")
    put("cats/notes.txt", b"a text file\n", "skipped")
    put("dogs/model.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "skipped")
    put("stray.jpg", good, "skipped")  # not inside a class folder
    return expected


# --- kill -9 and resume ------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x08]")
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)")
_RESUMED = re.compile(r"Resumed from .*: step (\d+),")


def _run_with_pty(cmd: list[str], env: dict, cwd: str, steps_per_epoch: int,
                  kill_at_step: int | None, timeout: float) -> dict[str, Any]:
    """Runs ``cmd`` on a pseudo-terminal (so Keras' progress bar updates every step),
    follows its progress, and sends SIGKILL once it has shown ``kill_at_step``."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    # Keras' bar: "\b...\r\x1b[1m 12/44\x1b[0m ━━━..." (the epoch line is "Epoch 1/2").
    progress = re.compile(rf"(?<![0-9])([0-9]+)/{steps_per_epoch}(?![0-9])")
    epoch, step_seen, resumed, killed_at = 0, 0, None, None
    buffer, text = "", []
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536).decode("utf-8", "replace")
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buffer += chunk
            parts = re.split(r"[\r\n]", buffer)
            buffer = parts.pop()
            for part in parts:
                part = _ANSI.sub("", part)
                text.append(part)
                if (m := _EPOCH.match(part.strip())):
                    epoch = int(m.group(1)) - 1
                elif (m := _RESUMED.search(part)):
                    resumed = int(m.group(1))
                elif (m := progress.search(part)):
                    step_seen = max(step_seen, epoch * steps_per_epoch + int(m.group(1)))
            # A partial line holds the progress bar between carriage returns.
            if (m := progress.search(_ANSI.sub("", buffer))) and "Epoch" not in buffer:
                step_seen = max(step_seen, epoch * steps_per_epoch + int(m.group(1)))
            if kill_at_step is not None and killed_at is None and step_seen >= kill_at_step:
                proc.send_signal(signal.SIGKILL)
                killed_at = step_seen
        else:
            proc.kill()
    finally:
        proc.wait(timeout=60)
        os.close(master)
    return {"returncode": proc.returncode, "step_seen": step_seen, "resumed_from": resumed,
            "killed_at": killed_at, "tail": "\n".join(text[-15:])}


def kill_and_resume(work_dir: str | os.PathLike, kill_points: int = 3, seed: int = 0,
                    script: str | os.PathLike | None = None, timeout: float = 600
                    ) -> dict[str, Any]:
    """Trains with ``keras-effnet-train`` (tiny flags; ``script``: a train script's path
    to run instead), kills it with SIGKILL at ``kill_points`` random steps, reruns the
    same command after each kill, and compares the final held-out accuracy with an
    uninterrupted run of the same seed.

    Steps lost per kill = the last step the progress bar showed before the kill minus the
    step the next run resumed from (the bar lags the true step by at most one refresh,
    so this can undercount by a step or two).
    """
    from keras_effnet.run_dir import RunDir

    train = [sys.executable, str(script)] if script else \
        [sys.executable, "-m", "keras_effnet.commands.train"]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    epochs, batch, num_train = 2, 32, 1438  # digits: 1438 train / 359 held-out
    steps_per_epoch = num_train // batch
    total = epochs * steps_per_epoch

    def command(model_dir: Path) -> list[str]:
        return [*train, f"--model={TINY_ARCH}", "--image_size=16",
                "--min_image_size=8", f"--epochs={epochs}", "--stages=2",
                f"--batch_size={batch}", "--checkpoint_every_steps=10",
                "--eval_every_epochs=0", f"--seed={seed}", f"--model_dir={model_dir}",
                "--noexport"]

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "COLUMNS": "200"}
    rng = random.Random(seed)
    points = sorted(rng.sample(range(3, total - 2), kill_points)) if kill_points else []

    started = time.time()
    reference = subprocess.run(command(work / "uninterrupted"), capture_output=True,
                               text=True, env=env, cwd=str(work), timeout=timeout)
    reference_s = time.time() - started
    interrupted_dir = work / "interrupted"
    kills, previous_kill = [], None
    started = time.time()
    for point in points + [None]:
        run = _run_with_pty(command(interrupted_dir), env, str(work), steps_per_epoch,
                            point, timeout)
        if previous_kill is not None:
            # No "Resumed from" line: no checkpoint yet, the run started over at step 0.
            resumed = run["resumed_from"] if run["resumed_from"] is not None else 0
            kills[-1]["resumed_from"] = resumed
            if kills[-1]["killed_at"] is not None:
                kills[-1]["steps_lost"] = kills[-1]["killed_at"] - resumed
        if point is not None:
            kills.append({"kill": len(kills) + 1, "target_step": point,
                          "killed_at": run["killed_at"], "returncode": run["returncode"],
                          "resumed_from": None, "steps_lost": None})
            previous_kill = point
        final_run = run
    interrupted_s = time.time() - started

    def final_top1(model_dir: Path) -> float | None:
        try:
            return float(RunDir(model_dir).read_metrics()["final"]["top1"])
        except (KeyError, TypeError, ValueError):
            return None

    ref_top1, int_top1 = final_top1(work / "uninterrupted"), final_top1(interrupted_dir)
    return {
        "total_steps": total, "kill_points": points, "kills": kills,
        "uninterrupted_returncode": reference.returncode,
        "final_returncode": final_run["returncode"],
        "uninterrupted_top1": ref_top1, "interrupted_top1": int_top1,
        "top1_difference": (None if ref_top1 is None or int_top1 is None
                            else int_top1 - ref_top1),
        "uninterrupted_s": reference_s, "interrupted_s": interrupted_s,
        "final_tail": final_run["tail"][-2000:] if final_run["returncode"] else "",
        "uninterrupted_tail": reference.stderr[-2000:] if reference.returncode else "",
    }


# --- hostile files, runs and requests (issue 16) ------------------------------------------

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@contextlib.contextmanager
def disk_full(limit_bytes: int) -> Iterator[None]:
    """Inside the block, writing a file past ``limit_bytes`` fails with ``OSError``
    (EFBIG) as on a full disk (``RLIMIT_FSIZE``, its signal ignored); restored after."""
    import resource

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def hostile_files(work_dir: str | os.PathLike, slow_s: float = 30.0) -> dict[str, Any]:
    """Unlucky disks and misleading inputs around a run, each checked for the expected
    clean refusal or recovery; counts ``crashed`` (another exception, or the wrong
    outcome), ``hangs`` (slower than ``slow_s``), ``partial_files`` (a file left
    half-written, or a temporary left behind) and ``lost_files`` (a file the user had,
    changed or gone)."""
    import numpy as np

    import keras_effnet
    from keras_effnet.bench.photos import encode, photo_crop
    from keras_effnet.data import FolderSource
    from keras_effnet.errors import ConfigError
    from keras_effnet.export import serving_config
    from keras_effnet.export.config import ExportConfig
    from keras_effnet.run_dir import RunConfig, RunDir, RunDirError
    from keras_effnet.train.checkpointing import Checkpointer

    work = Path(work_dir)
    rng = random.Random(0)

    def full_disk_save(root):
        run = RunDir(root)
        run.save_model(keras_effnet.build(TINY_ARCH, classes=10))
        kept = run.final_model_path.read_bytes()
        with disk_full(20_000):
            try:
                run.save_model(keras_effnet.build(TINY_ARCH, classes=10))
            except RunDirError:
                pass
        return _files(root) == {"final_model.keras": kept}, 0

    def damaged_checkpoint(root):
        import tensorflow as tf
        variable = tf.Variable(np.zeros(64, np.float32))
        saver = Checkpointer(str(root), {"v": variable})
        first = saver.save()
        variable.assign(np.ones(64, np.float32))
        second = saver.save()
        data = Path(second + ".data-00000-of-00001")
        data.write_bytes(data.read_bytes()[:40])
        restored = tf.Variable(np.full(64, 5.0, np.float32))
        path = Checkpointer(str(root), {"v": restored}).restore_latest()
        return path == first and float(restored.numpy()[0]) == 0.0, 0

    def garbage_run_files(root):
        run = RunDir(root)
        root.mkdir(parents=True)
        run.config_path.write_text("\n\x00 not json")
        try:
            run.read_config()
        except RunDirError as e:
            return str(run.config_path) in str(e) and "delete it" in str(e), 0
        return False, 0

    def resume_other_dataset(root):
        run = RunDir(root)
        config = RunConfig(model="m", variant={}, dataset="folder", num_classes=2,
                           class_names=("cat", "dog"), eval_image_size=16)
        run.write_config(config)
        before = _files(root)
        try:
            run.check_resume(dataclasses.replace(config, class_names=("apple", "pear")))
            return False, 0
        except RunDirError:
            return True, len(set(before.items()) - set(_files(root).items()))

    def model_dir_is_a_file(root):
        root.mkdir(parents=True)
        (root / "notes.txt").write_text("mine")
        try:
            RunDir(root / "notes.txt").check_writable()
            return False, 0
        except RunDirError:
            return (root / "notes.txt").read_text() == "mine", 0

    def broken_models_config(root):
        (root / "cats" / "1").mkdir(parents=True)
        (root / str(2 ** 63 + 1)).mkdir()  # a version directory past int64, elsewhere
        broken = b'model_config_list { config { name: "mine" colour: "red" } }\n'
        (root / "models.config").write_bytes(broken)
        import warnings
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            serving_config.update_models_config(root)
        backups = list(root.glob("models.config.broken-*"))
        return bool(backups), 0 if backups and backups[0].read_bytes() == broken else 1

    def versions_at_once(root):
        bases = [root / "saved_models", root / "tflite"]
        with serving_config.reserve_version(bases, "m") as a:
            with serving_config.reserve_version(bases, "m") as b:
                return (a, b) == (1, 2), 0

    def bad_request_values(root):
        refused = 0
        for kwargs in ({"model_name": "abc\n"}, {"version": 2 ** 63}):
            try:
                ExportConfig(model="efficientnet-lite0", **kwargs)
            except ConfigError:
                refused += 1
        for kwargs in ({"depth": 1e6}, {"width": float("inf")}):
            try:
                keras_effnet.build("efficientnet-b0", **kwargs)
            except ConfigError:
                refused += 1
        return refused == 4, 0

    def symlink_loops(root):
        for label in ("cats", "dogs"):
            (root / label).mkdir(parents=True)
            for i in range(6):
                (root / label / f"{i}.png").write_bytes(
                    encode(photo_crop(rng, 16, 16), "PNG"))
        os.symlink(".", root / "cats" / "loop")
        os.symlink("..", root / "dogs" / "up")
        source = FolderSource(str(root))
        return source.num_train + source.num_val == 12, 0

    def line_break_class(root):
        for label in ("cats", "do\ngs"):
            (root / label).mkdir(parents=True)
            (root / label / "0.png").write_bytes(encode(photo_crop(rng, 16, 16), "PNG"))
        try:
            FolderSource(str(root))
            return False, 0
        except ValueError:
            return True, 0

    def swapped_run(root):
        from keras_effnet.export import job
        from keras_effnet.variants import custom_variant

        variant = custom_variant(TINY_ARCH)
        run = RunDir(root / "run")
        other = TINY_ARCH.replace("_o16", "_o24")  # the same name, a wider network
        run.save_model(keras_effnet.build(other, classes=2, name=variant.name))
        run.write_labels(["cat", "dog"])
        config = RunConfig(model=variant.name, variant=variant.to_dict(), dataset="digits",
                           num_classes=2, class_names=("cat", "dog"), eval_image_size=16)
        run.write_config(config)
        export = ExportConfig(model_dir=str(run.path), formats=("saved_model",),
                              saved_models=str(root / "saved_models"))
        refused = 0
        for edit in (None, {"eval_image_size": 10 ** 9}):
            if edit:
                run.write_config(dataclasses.replace(config, **edit))
            try:
                job.run(export, log=lambda line: None)
            except ConfigError:
                refused += 1
        left = [p for p in (root / "saved_models").rglob("*") if p.name != ".export.lock"]
        return refused == 2 and not left, 0

    cases = [("final_model.keras save on a full disk", full_disk_save),
             ("newest checkpoint truncated", damaged_checkpoint),
             ("config.json garbage", garbage_run_files),
             ("resume with another dataset's class names", resume_other_dataset),
             ("model_dir is a file", model_dir_is_a_file),
             ("models.config with an unknown field; a version dir past int64",
              broken_models_config),
             ("two exports reserve versions at once", versions_at_once),
             ("model_name with a newline, version 2**63, depth 1e6, width inf",
              bad_request_values),
             ("image folder with symlink loops", symlink_loops),
             ("class folder with a newline in its name", line_break_class),
             ("export of a swapped final_model.keras; eval_image_size 10**9",
              swapped_run)]
    rows, counts = [], {"tried": 0, "crashed": 0, "hangs": 0, "partial_files": 0,
                        "lost_files": 0}
    for i, (what, case) in enumerate(cases):
        root = work / f"case{i}"
        started = time.perf_counter()
        try:
            ok, lost = case(root)
            error = "" if ok else "wrong outcome"
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            ok, lost, error = False, 0, f"{type(e).__name__}: {str(e)[:160]}"
        seconds = time.perf_counter() - started
        partial = [p for p in (root.rglob(".*") if root.exists() else [])
                   if p.is_file() and not p.name.startswith((".export.lock", ".reserved"))
                   and p.suffix not in (".lock",)]
        counts["tried"] += 1
        counts["crashed"] += not ok
        counts["hangs"] += seconds > slow_s
        counts["partial_files"] += len(partial)
        counts["lost_files"] += lost
        rows.append({"case": what, "ok": ok, "seconds": round(seconds, 2),
                     "partial_files": [str(p.relative_to(root)) for p in partial],
                     "error": error})
    return {**counts, "cases": rows}
