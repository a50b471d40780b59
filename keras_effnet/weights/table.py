"""Every pretrained checkpoint keras_effnet can start from: one row per (variant, tag).

Sources (docs/reference.md §7 lists them with their provenance):

* ``keras``: keras.applications' own weight files, the same names and md5s (so keras'
  cache is shared), ported by keras from Google's checkpoints.
* ``official``: Google's checkpoint tarballs (tensorflow/tpu for V1 and lite,
  google/automl for V2), converted here by variable name. No hash is published for them:
  a download is checked by its variables and shapes, then its sha256 is recorded.

Published top-1 is each source's own ImageNet-1k figure (the tensorflow/tpu README's
latest table, the google/automl README), for comparison;
ImageNet-21k heads (21,843 classes) have none.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["WeightTag", "WEIGHTS", "weight_tags", "get_weight_tag", "list_weights",
           "is_tag"]

_KERAS_V1 = "https://storage.googleapis.com/keras-applications/"
_KERAS_V2 = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
_TPU = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/"
_IMAGENET21K_CLASSES = 21843


@dataclasses.dataclass(frozen=True)
class WeightTag:
    """One pretrained checkpoint of one variant."""

    variant: str
    tag: str
    source: str  # "keras" or "official"
    origin: str  # the file's URL (keras: the with-top file)
    classes: int
    preprocessing: str  # builder.preprocessing_constants kind the weights expect
    top1: float | None
    provenance: str
    image_size: int | None = None  # the size the source evaluates at, if not the variant's
    origin_notop: str | None = None  # keras: the file without the classifier
    md5: tuple[str, str] | None = None  # keras: (top, notop)

    @property
    def file_name(self) -> str:
        return self.origin.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _keras_v1(i: int, top1: float, top: str, notop: str) -> WeightTag:
    name = f"efficientnetb{i}"
    return WeightTag(f"efficientnet-b{i}", "imagenet", "keras", f"{_KERAS_V1}{name}.h5",
                     1000, "imagenet", top1, "keras.applications EfficientNetB"
                     f"{i} (ported from tensorflow/tpu's AutoAugment checkpoint)",
                     origin_notop=f"{_KERAS_V1}{name}_notop.h5", md5=(top, notop))


def _keras_v2(size: str, top1: float, top: str, notop: str) -> WeightTag:
    name = f"efficientnetv2-{size}"
    return WeightTag(name, "imagenet", "keras", f"{_KERAS_V2}{name}.h5", 1000,
                     "imagenet" if size.startswith("b") else "symmetric", top1,
                     f"keras.applications EfficientNetV2{size.upper()} (ported from "
                     "google/automl's ImageNet-1k checkpoint)",
                     origin_notop=f"{_KERAS_V2}{name}_notop.h5", md5=(top, notop))


def _official(variant: str, tag: str, path: str, classes: int, preprocessing: str,
              top1: float | None, provenance: str, image_size: int | None = None
              ) -> WeightTag:
    return WeightTag(variant, tag, "official", _TPU + path, classes, preprocessing, top1,
                     provenance, image_size=image_size)


_KERAS_V1_MD5 = {
    0: ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    1: ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    2: ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    3: ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    4: ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    5: ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    6: ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    7: ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}
_KERAS_V2_MD5 = {
    "b0": ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "b1": ("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
    "b2": ("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
    "b3": ("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
    "s": ("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "m": ("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
    "l": ("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
}
# The ported checkpoints' own figures: tensorflow/tpu's AutoAugment row, google/automl's
# ImageNet-1k row.
_KERAS_V1_TOP1 = (77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3)
_KERAS_V2_TOP1 = {"b0": 78.7, "b1": 79.8, "b2": 80.5, "b3": 82.1, "s": 83.9, "m": 85.2,
                  "l": 85.7}
# tensorflow/tpu README (AdvProp + AutoAugment; Noisy Student + RandAugment).
_ADVPROP_TOP1 = (77.6, 79.6, 80.5, 81.9, 83.3, 84.3, 84.8, 85.2, 85.5)
_NOISY_TOP1 = (78.8, 81.5, 82.4, 84.1, 85.3, 86.1, 86.4, 86.9)
_LITE_TOP1 = (75.1, 76.7, 77.6, 79.8, 81.5)
# google/automl README: ImageNet-21k pretrained, fine-tuned on ImageNet-1k.
_V2_FT1K_TOP1 = {"s": 84.9, "m": 86.2, "l": 86.9, "xl": 87.2}


def _rows() -> tuple[WeightTag, ...]:
    rows = [_keras_v1(i, _KERAS_V1_TOP1[i], *_KERAS_V1_MD5[i]) for i in range(8)]
    rows += [_keras_v2(s, _KERAS_V2_TOP1[s], *_KERAS_V2_MD5[s]) for s in _KERAS_V2_MD5]
    rows += [_official(f"efficientnet-lite{i}", "imagenet", f"lite/efficientnet-lite{i}.tar.gz",
                       1000, "lite", _LITE_TOP1[i],
                       "tensorflow/tpu EfficientNet-lite checkpoint (float)")
             for i in range(5)]
    rows += [_official(f"efficientnet-b{i}", "noisy-student",
                       f"noisystudent/noisy_student_efficientnet-b{i}.tar.gz", 1000,
                       "imagenet", _NOISY_TOP1[i],
                       "tensorflow/tpu Noisy Student (JFT-300M unlabelled + ImageNet), "
                       "RandAugment") for i in range(8)]
    rows += [
        _official("efficientnet-l2", "noisy-student",
                  "noisystudent/noisy_student_efficientnet-l2.tar.gz", 1000, "imagenet", 88.4,
                  "tensorflow/tpu Noisy Student L2, evaluated at 800 px"),
        _official("efficientnet-l2", "noisy-student-475",
                  "noisystudent/noisy_student_efficientnet-l2_475.tar.gz", 1000, "imagenet",
                  88.2, "tensorflow/tpu Noisy Student L2, trained and evaluated at 475 px",
                  image_size=475)]
    # AdvProp expects inputs in [-1, 1]: tpu's eval applies x * 2 / 255 - 1.
    rows += [_official(f"efficientnet-b{i}", "advprop", f"advprop/efficientnet-b{i}.tar.gz",
                       1000, "inception", _ADVPROP_TOP1[i],
                       "tensorflow/tpu AdvProp + AutoAugment") for i in range(9)]
    for size in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl"):
        name = f"efficientnetv2-{size}"
        pre = "imagenet" if size.startswith("b") else "symmetric"
        rows += [
            _official(name, "imagenet21k", f"v2/{name}-21k.tgz", _IMAGENET21K_CLASSES, pre,
                      None, "google/automl ImageNet-21k pretrained (21,843 classes)",
                      image_size=224),
            _official(name, "imagenet21k-ft1k", f"v2/{name}-21k-ft1k.tgz", 1000, pre,
                      _V2_FT1K_TOP1.get(size),
                      "google/automl ImageNet-21k pretrained, fine-tuned on ImageNet-1k")]
    return tuple(rows)


WEIGHTS: dict[tuple[str, str], WeightTag] = {(r.variant, r.tag): r for r in _rows()}


def weight_tags(variant: str) -> list[str]:
    """The tags ``variant`` has (``[]`` for none)."""
    return [tag for (name, tag) in WEIGHTS if name == variant]


def is_tag(weights: Any) -> bool:
    """Whether ``weights`` reads as a tag rather than a path: a plain word that names no
    existing file or directory."""
    return (isinstance(weights, str) and bool(weights) and "/" not in weights
            and "\\" not in weights and "." not in weights
            and not os.path.exists(weights))


def get_weight_tag(variant: str, tag: str) -> WeightTag:
    """The row of ``(variant, tag)``.

    Raises:
        ValueError: no such tag for ``variant``; the message lists the variant's tags.
    """
    row = WEIGHTS.get((variant, tag))
    if row is not None:
        return row
    tags = weight_tags(variant)
    have = (f"{variant!r} has {', '.join(repr(t) for t in tags)}" if tags else
            f"{variant!r} has no pretrained weights (variants with weights: "
            f"{', '.join(sorted({v for v, _ in WEIGHTS}))})")
    raise ValueError(f"Unknown weights tag {tag!r}: {have}; or pass the path of a weights "
                     f"file, checkpoint or run directory. Received: weights={tag!r}")


def list_weights(name: str | None = None, *, print_table: bool = False
                 ) -> list[dict[str, Any]]:
    """The pretrained weights table (one dict per row), for ``name`` or every variant.

    Each row: variant, tag, source, origin URL, classes, preprocessing, published top-1
    and provenance. ``print_table=True`` also prints it as a Markdown table.

    Example:
        >>> [r["tag"] for r in keras_effnet.list_weights("efficientnetv2-s")]
        ['imagenet', 'imagenet21k', 'imagenet21k-ft1k']
    """
    if name is not None:
        from keras_effnet.variants import get_variant
        name = get_variant(name).name
    from keras_effnet.variants import list_models
    order = {v: i for i, v in enumerate(list_models())}
    rows = [r.to_dict() for r in sorted(WEIGHTS.values(), key=lambda r: order[r.variant])
            if name is None or r.variant == name]
    if print_table:
        print(format_table(rows))
    return rows


def format_table(rows: list[dict[str, Any]], *, by_variant: bool = False) -> str:
    """Markdown table of :func:`list_weights` rows: one row per tag, or with
    ``by_variant`` one per variant (each tag with its top-1 and publisher)."""
    if by_variant:
        lines = ["| variant | tags: published ImageNet top-1 (publisher) |", "|---|---|"]
        variants: dict[str, list[str]] = {}
        for r in rows:
            top1 = (f"{r['top1']:.1f} %" if r["top1"] is not None else
                    f"{r['classes']:,} classes" if r["classes"] != 1000 else "no figure")
            variants.setdefault(r["variant"], []).append(
                f"`{r['tag']}` {top1} ({r['provenance'].split(' ', 1)[0]})")
        lines += [f"| {v} | {' · '.join(tags)} |" for v, tags in variants.items()]
        return "\n".join(lines)
    lines = ["| variant | tag | classes | input | top-1 (published) | provenance |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        top1 = f"{r['top1']:.1f}" if r["top1"] is not None else "-"
        lines.append(f"| {r['variant']} | `{r['tag']}` | {r['classes']:,} | "
                     f"{r['preprocessing']} | {top1} | {r['provenance']} |")
    return "\n".join(lines)
