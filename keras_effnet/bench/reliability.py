"""Reliability checks: fuzzed block strings, fuzzed serving requests, a messy image folder,
and training killed with SIGKILL then resumed.

The generators are pure and seeded (the same inputs on every run); the runners count
outcomes instead of asserting, so a report can say "0 crashes out of 10,000".
"""

from __future__ import annotations

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
from typing import Any, Callable, Iterable

__all__ = ["TINY_ARCH", "fuzz_block_strings", "block_string_fuzz", "serving_fuzz_inputs",
           "fuzz_serving", "seed_image_folder", "kill_and_resume", "photo_crop", "encode"]

# Two tiny stages (~25k parameters at 10 classes): trains at 8-16 px in seconds.
TINY_ARCH = "r1_k3_s1_e1_i8_o8_f,r1_k3_s2_e2_i8_o16_se0.25"

_SPEC_ALPHABET = "rkseiof_c0123456789.-+eEnoskip _,;:/\\\t\n\x00é∞٣"
_WEIRD_NUMBERS = ("0", "-1", "00", "1e400", "nan", "inf", "-0", "1.5", "0x10", "१", "٣",
                  "99999999999999999999999999", "1_000", " 1", "1 ", "", ".", "e", "1e-400")


def _seed_strings() -> list[str]:
    from keras_effnet.variants import VARIANTS
    seeds = sorted({b for v in VARIANTS.values() for b in v.blocks})
    seeds += ["r4_k3_s2_e4_i24_o48_c1", "r1_k3_s11_e1_i32_o16_se0.25",
              "r2_k5_s22_e6_i16_o24_se0.25_noskip", "r1_k3_s1_e1_i32_o16_c0"]
    return seeds


def block_string_fuzz(n: int, seed: int = 0) -> list[str]:
    """``n`` mutated block strings: characters inserted, deleted, replaced; tokens
    dropped, duplicated, swapped; numbers made absurd; random text."""
    rng = random.Random(seed)
    seeds = _seed_strings()
    out = []
    for _ in range(n):
        s = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(9)
            tokens = s.split("_")
            if op == 0 and s:  # delete a character
                i = rng.randrange(len(s))
                s = s[:i] + s[i + 1:]
            elif op == 1:  # insert a character
                i = rng.randint(0, len(s))
                s = s[:i] + rng.choice(_SPEC_ALPHABET) + s[i:]
            elif op == 2 and s:  # replace a character
                i = rng.randrange(len(s))
                s = s[:i] + rng.choice(_SPEC_ALPHABET) + s[i + 1:]
            elif op == 3 and tokens:  # drop a token
                tokens.pop(rng.randrange(len(tokens)))
                s = "_".join(tokens)
            elif op == 4 and tokens:  # duplicate a token
                tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(tokens))
                s = "_".join(tokens)
            elif op == 5 and len(tokens) > 1:  # swap two tokens
                i, j = rng.sample(range(len(tokens)), 2)
                tokens[i], tokens[j] = tokens[j], tokens[i]
                s = "_".join(tokens)
            elif op == 6:  # an absurd number
                s = re.sub(r"[0-9.]+", lambda m: rng.choice(_WEIRD_NUMBERS)
                           if rng.random() < 0.4 else m.group(0), s)
            elif op == 7:  # random text
                s = "".join(rng.choice(_SPEC_ALPHABET) for _ in range(rng.randint(0, 40)))
            else:  # repeat, pad or truncate
                s = rng.choice([s * rng.randint(2, 50), s[:rng.randint(0, len(s))],
                                " " + s + " ", s.upper(), s + "_", "_" + s])
        out.append(s)
    return out


def fuzz_block_strings(n: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Parses ``n`` fuzzed block strings: each must give a ``BlockSpec`` (which formats
    and parses back to itself) or raise ``SpecError``. Anything else is a crash."""
    from keras_effnet import spec as spec_lib

    counts = {"strings": n, "block_spec": 0, "spec_error": 0, "crashed": 0,
              "round_trip_failures": 0}
    examples: list[str] = []
    for s in block_string_fuzz(n, seed):
        try:
            parsed = spec_lib.parse(s)
        except spec_lib.SpecError:
            counts["spec_error"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            counts["crashed"] += 1
            examples.append(f"{s!r}: {type(e).__name__}: {e}"[:200])
            continue
        if not isinstance(parsed, spec_lib.BlockSpec):
            counts["crashed"] += 1
            examples.append(f"{s!r}: returned {type(parsed).__name__}")
            continue
        counts["block_spec"] += 1
        try:
            if spec_lib.parse(spec_lib.format(parsed)) != parsed:
                counts["round_trip_failures"] += 1
        except Exception as e:  # noqa: BLE001
            counts["round_trip_failures"] += 1
            examples.append(f"{s!r}: round trip {type(e).__name__}: {e}"[:200])
    counts["examples"] = examples[:10]
    return counts


# --- serving ----------------------------------------------------------------------------

def photo_crop(rng: random.Random, width: int, height: int):
    """A random crop of one of scikit-learn's two photographs, resized to
    ``width x height``, as a PIL image (real image statistics, no download)."""
    from PIL import Image

    photos = _photos()
    array = photos[rng.randrange(len(photos))]
    h, w = array.shape[:2]
    ch, cw = rng.randint(h // 4, h), rng.randint(w // 4, w)
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    return Image.fromarray(array[top:top + ch, left:left + cw]).resize((width, height))


_PHOTOS: list = []


def _photos():
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images
        _PHOTOS.extend(load_sample_images().images)
    return _PHOTOS


def encode(image, fmt: str, **kwargs) -> bytes:
    """A PIL image encoded as ``fmt`` ("JPEG", "PNG", "GIF", "BMP")."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _valid_image(rng: random.Random, max_side: int = 200) -> tuple[str, bytes]:
    w, h = rng.randint(1, max_side), rng.randint(1, max_side)
    image = photo_crop(rng, w, h)
    fmt = rng.choice(["JPEG", "PNG", "GIF", "BMP"])
    mode = rng.choice(["RGB", "RGB", "L", "RGBA", "P"])
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        mode = "RGB"
    if fmt == "BMP" and mode == "RGBA":
        mode = "RGB"
    image = image.convert(mode)
    return f"{fmt.lower()}-{mode}", encode(image, fmt)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width x height`` pixels, with a tiny IDAT:
    the first bytes of a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def serving_fuzz_inputs(n: int = 1000, seed: int = 0, max_pixels: int = 250_000
                        ) -> list[tuple[str, bytes]]:
    """``n`` request bodies as ``(kind, bytes)``; kinds: ``valid:*`` (decodable images
    within ``max_pixels``), ``random``, ``magic`` (an image signature then noise),
    ``truncated``, ``corrupted`` (bytes flipped inside a valid image: may still decode),
    ``oversized`` (more pixels than ``max_pixels``, real or claimed by the header)."""
    rng = random.Random(seed)
    magics = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"RIFF"]
    out: list[tuple[str, bytes]] = []
    kinds = ["random"] * 2 + ["magic"] * 2 + ["truncated"] * 3 + ["corrupted"] * 1 + \
        ["oversized"] * 1 + ["valid"] * 1
    side = int(max_pixels ** 0.5)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "random":
            data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 7, 64, 999])))
        elif kind == "magic":
            data = rng.choice(magics) + bytes(rng.getrandbits(8)
                                              for _ in range(rng.randint(0, 300)))
        elif kind == "truncated":
            _, valid = _valid_image(rng)
            data = valid[:rng.randint(0, max(0, len(valid) - 1))]
        elif kind == "corrupted":
            _, valid = _valid_image(rng)
            raw = bytearray(valid)
            for _ in range(rng.randint(1, 20)):
                j = rng.randrange(len(raw))
                raw[j] = rng.getrandbits(8)
            data = bytes(raw)
        elif kind == "oversized":
            choice = rng.randrange(3)
            if choice == 0:
                data = _png_header_only(rng.randint(side + 1, 200_000),
                                        rng.randint(side + 1, 200_000))
            elif choice == 1:  # a real image over the budget
                data = encode(photo_crop(rng, side + 50, side + 50), rng.choice(["JPEG", "PNG"]))
            else:  # a GIF whose logical screen claims 65535 x 65535
                valid = encode(photo_crop(rng, 8, 8).convert("P"), "GIF")
                data = valid[:6] + b"\xff\xff\xff\xff" + valid[10:]
        else:
            sub, data = _valid_image(rng, max_side=min(side, 300))
            kind = f"valid:{sub}"
        out.append((kind, data))
    return out


def fuzz_serving(serve: Callable[[bytes], Any], inputs: Iterable[tuple[str, bytes]]
                 ) -> dict[str, Any]:
    """Sends each body alone to ``serve`` (a ``serving_default`` signature called with
    ``image_bytes``) and sorts the outcomes: ``errored_cleanly``
    (``tf.errors.InvalidArgumentError``), ``crashed`` (any other exception, or outputs
    that are not finite probabilities summing to 1), ``ok`` (finite probabilities
    summing to 1)."""
    import numpy as np
    import tensorflow as tf

    counts = {"requests": 0, "ok": 0, "errored_cleanly": 0, "crashed": 0,
              "valid_requests": 0, "valid_ok": 0, "valid_rejected": 0}
    by_kind: dict[str, dict[str, int]] = {}
    rejected: dict[str, int] = {}
    crash_types: dict[str, int] = {}
    examples: list[str] = []
    for kind, data in inputs:
        counts["requests"] += 1
        group = kind.split(":")[0]
        stats = by_kind.setdefault(group, {"ok": 0, "errored_cleanly": 0, "crashed": 0})
        if group == "valid":
            counts["valid_requests"] += 1
        try:
            outputs = serve(tf.constant([data]))
            probs = np.asarray(outputs["probabilities"], np.float64)
            good = probs.ndim == 2 and probs.shape[0] == 1 and bool(
                np.all(np.isfinite(probs))) and abs(float(probs.sum()) - 1.0) < 1e-3 and \
                bool(np.all(probs >= 0))
            outcome = "ok" if good else "crashed"
            if not good:
                crash_types["bad output"] = crash_types.get("bad output", 0) + 1
                examples.append(f"{kind} ({len(data)} bytes): bad probabilities {probs}"[:200])
        except tf.errors.InvalidArgumentError:
            outcome = "errored_cleanly"
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            outcome = "crashed"
            crash_types[type(e).__name__] = crash_types.get(type(e).__name__, 0) + 1
            examples.append(f"{kind} ({len(data)} bytes): {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}"[:200])
        counts[outcome] += 1
        stats[outcome] += 1
        if group == "valid":
            counts["valid_ok" if outcome == "ok" else "valid_rejected"] += 1
            if outcome != "ok":
                rejected[kind] = rejected.get(kind, 0) + 1
    counts["by_kind"] = by_kind
    counts["valid_rejected_kinds"] = rejected
    counts["crash_types"] = crash_types
    counts["examples"] = examples[:10]
    return counts


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
    """Trains with ``scripts/train.py`` (tiny flags), kills it with SIGKILL at
    ``kill_points`` random steps, reruns the same command after each kill, and compares
    the final held-out accuracy with an uninterrupted run of the same seed.

    Steps lost per kill = the last step the progress bar showed before the kill minus the
    step the next run resumed from (the bar lags the true step by at most one refresh,
    so this can undercount by a step or two).
    """
    import json

    root = Path(__file__).resolve().parents[2]
    script = str(script or root / "scripts" / "train.py")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    epochs, batch, num_train = 2, 32, 1438  # digits: 1438 train / 359 held-out
    steps_per_epoch = num_train // batch
    total = epochs * steps_per_epoch

    def command(model_dir: Path) -> list[str]:
        return [sys.executable, script, f"--model={TINY_ARCH}", "--image_size=16",
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
                               text=True, env=env, cwd=str(root), timeout=timeout)
    reference_s = time.time() - started
    interrupted_dir = work / "interrupted"
    kills, previous_kill = [], None
    started = time.time()
    for point in points + [None]:
        run = _run_with_pty(command(interrupted_dir), env, str(root), steps_per_epoch,
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
            metrics = json.loads((model_dir / "metrics.json").read_text())
            return float(metrics["final"]["top1"])
        except (OSError, ValueError, KeyError, TypeError):
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
