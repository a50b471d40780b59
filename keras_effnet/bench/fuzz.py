"""Fuzzers: mutated block strings through ``keras_effnet.spec.parse`` and random,
truncated, corrupted and oversized request bodies through a serving signature.

The generators are pure and seeded (the same inputs on every run); the runners count
outcomes instead of asserting, so a report can say "0 crashes out of 10,000".
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Iterable, Sequence

from keras_effnet.bench.photos import encode, photo_crop

__all__ = ["block_string_fuzz", "fuzz_block_strings", "gif_bytes", "gif_comment",
           "serving_fuzz_inputs", "fuzz_serving"]

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


def _lzw(indices: Sequence[int], min_code_size: int) -> bytes:
    """GIF's variable-length LZW code stream of palette ``indices`` (clear code first,
    end code last, table reset when full)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out, acc, bits = bytearray(), 0, 0
    table: dict[tuple[int, int], int] = {}
    code_size, next_code = min_code_size + 1, end + 1

    def emit(code: int) -> None:
        nonlocal acc, bits
        acc |= code << bits
        bits += code_size
        while bits >= 8:
            out.append(acc & 0xFF)
            acc, bits = acc >> 8, bits - 8

    emit(clear)
    prefix = None  # the code of the run read so far
    for index in indices:
        if prefix is None:
            prefix = index
            continue
        code = table.get((prefix, index))
        if code is not None:
            prefix = code
            continue
        emit(prefix)
        if next_code < 4096:
            table[(prefix, index)] = next_code
            next_code += 1
            if next_code > (1 << code_size) and code_size < 12:
                code_size += 1
        else:
            emit(clear)
            table, code_size, next_code = {}, min_code_size + 1, end + 1
        prefix = index
    if prefix is not None:
        emit(prefix)
    emit(end)
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def gif_bytes(screen: tuple[int, int], frames: Sequence[tuple[int, int, int, int, int | None]],
              sub_block: int = 255) -> bytes:
    """A GIF built byte by byte: a logical ``screen`` of ``(width, height)`` and
    ``frames`` of ``(left, top, width, height, colour)`` with a two-colour palette (colour
    0 black, 1 white). ``colour=None`` writes the descriptor with an empty code stream:
    a frame that declares its size (what the decoder allocates) and holds no pixels.
    Image data goes in ``sub_block``-byte sub-blocks (real encoders use 255)."""
    import struct

    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0))
    out += bytes([0, 0, 0, 255, 255, 255])  # global colour table: 2 entries
    for left, top, width, height, colour in frames:
        out += b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0) + b"\x02"
        data = _lzw([] if colour is None else [colour] * (width * height), 2)
        for i in range(0, len(data), sub_block):
            out += bytes([len(data[i:i + sub_block])]) + data[i:i + sub_block]
        out += b"\x00"
    return bytes(out + b";")


def gif_comment(data: bytes, sizes: Sequence[int]) -> bytes:
    """A GIF comment extension holding ``data`` in sub-blocks of the given sizes (cycled):
    uneven tiny ones keep a block walker busy."""
    out, i, k = bytearray(b"\x21\xfe"), 0, 0
    while i < len(data):
        size = min(sizes[k % len(sizes)], len(data) - i)
        out += bytes([size]) + data[i:i + size]
        i, k = i + size, k + 1
    return bytes(out + b"\x00")


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


# --- hostile requests (issue 16) ----------------------------------------------------------

def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def hostile_serving_inputs(seed: int = 0) -> list[tuple[str, bytes, str]]:
    """``(what, body, expected)`` requests built to get past a pixel budget of a few
    hundred thousand pixels or to keep a parser busy; ``expected`` is ``answered`` or
    ``refused``. Sizes a check could read wrongly (a GIF's screen vs its frames, forged
    JPEG / PNG / BMP / WebP headers) and structures that are valid but adversarial."""
    import struct

    rng = random.Random(seed)
    photo = photo_crop(rng, 48, 32)
    jpeg, webp = encode(photo, "JPEG"), bytearray(encode(photo, "WEBP", lossless=True))
    sof = jpeg.index(b"\xff\xc0") + 5
    small = gif_bytes((8, 8), [(0, 0, 8, 8, 1)])
    frames = [photo, photo.transpose(0)]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    bmp = encode(photo, "BMP")
    exif = photo.getexif()
    exif[0x0112] = 6
    return [
        ("GIF: 1x1 screen around a 4000x4000 frame",
         gif_bytes((1, 1), [(0, 0, 4000, 4000, 1)]), "refused"),
        ("GIF: 65535x65535 frame descriptor, no pixels",
         gif_bytes((8, 8), [(0, 0, 65535, 65535, None)]), "refused"),
        ("GIF: 65535x65535 screen around an 8x8 frame",
         gif_bytes((65535, 65535), [(0, 0, 8, 8, 1)]), "answered"),
        ("GIF: 10x10 first frame, 4000x4000 second frame",
         gif_bytes((10, 10), [(0, 0, 10, 10, 1), (0, 0, 4000, 4000, 0)]), "answered"),
        ("GIF: 1 MB comment in uneven 1-9 byte sub-blocks",
         small[:19] + gif_comment(b"x" * 1_000_000, [1, 5, 2, 9, 3]) + small[19:], "refused"),
        ("GIF: cut inside its first frame", gif_bytes((64, 64), [(0, 0, 64, 64, 1)])[:28],
         "refused"),
        ("PNG: IHDR claims 100000x100000", _png_header_only(100_000, 100_000), "refused"),
        ("JPEG: frame header claims 60000x60000",
         _patched(jpeg, sof, struct.pack(">HH", 60000, 60000)), "refused"),
        ("BMP: header claims 50000x50000",
         _patched(bmp, 18, struct.pack("<ii", 50000, 50000))[:200], "refused"),
        ("WebP: VP8L header claims 16384x16384",
         _patched(bytes(webp), 21, struct.pack("<I", 16383 | (16383 << 14))), "refused"),
        ("WebP: animated", animated, "refused"),
        ("WebP: still, with alpha", encode(photo.convert("RGBA"), "WEBP"), "answered"),
        ("JPEG: EXIF orientation 6 (a phone photo)", encode(photo, "JPEG", exif=exif),
         "answered"),
    ]


def hostile_serving(serve: Callable[..., Any], predict: Callable[..., Any],
                    max_pixels: int, slow_s: float = 10.0, memory_mb: float = 32.0
                    ) -> dict[str, Any]:
    """Sends :func:`hostile_serving_inputs` one by one to ``serve`` (``serving_default``),
    then a batch with one bad image and NaN pixels to ``predict`` (``predict_images``),
    and counts: ``crashed`` (not a clean ``InvalidArgumentError``), ``hangs`` (slower
    than ``slow_s``), ``past_budget`` (the process's peak memory grew by more than
    ``memory_mb`` on one request: a decode past ``max_pixels``), ``unexpected`` (answered
    when it should be refused, or the reverse, or an error not naming the image)."""
    import resource
    import time

    import numpy as np
    import tensorflow as tf

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    good = encode(photo_crop(random.Random(1), 40, 40), "PNG")
    cases = [(what, lambda body=body: serve(image_bytes=tf.constant([body])), expected, None)
             for what, body, expected in hostile_serving_inputs()]
    cases.append(("batch of 3, the second not an image",
                  lambda: serve(image_bytes=tf.constant([good, b"not an image", good])),
                  "refused", "image_bytes[1]"))
    nan = np.full((2, 32, 32, 3), 100.0, np.float32)
    nan[1, 0, 0, 0] = np.nan
    cases.append(("predict_images: NaN in the second image",
                  lambda: predict(images=tf.constant(nan)), "refused", "images[1]"))
    serve(image_bytes=tf.constant([good]))  # traced and warm before measuring
    rows, counts = [], {"tried": 0, "crashed": 0, "hangs": 0, "past_budget": 0,
                        "unexpected": 0}
    for what, call, expected, names in cases:
        before, started = peak_mb(), time.perf_counter()
        try:
            call()
            outcome, message = "answered", ""
        except tf.errors.InvalidArgumentError as e:
            # What a client reads: the assertion, not TensorFlow's frame around it.
            found = re.search(r"assertion failed: \[(.*)\]", e.message)
            outcome, message = "refused", found.group(1) if found else e.message
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            outcome, message = "crashed", f"{type(e).__name__}: {e}"
        seconds, grew = time.perf_counter() - started, peak_mb() - before
        wrong = outcome != expected or (names is not None and names not in message)
        counts["tried"] += 1
        counts["crashed"] += outcome == "crashed"
        counts["hangs"] += seconds > slow_s
        counts["past_budget"] += grew > memory_mb
        counts["unexpected"] += wrong and outcome != "crashed"
        rows.append({"request": what, "expected": expected, "outcome": outcome,
                     "seconds": round(seconds, 3), "peak_memory_growth_mb": round(grew, 1),
                     "message": message.split("\n")[0][:200]})
    return {**counts, "max_pixels": max_pixels, "requests": rows}
