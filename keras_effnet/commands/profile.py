"""Prints parameters and MACs of EfficientNet variants, from the specs alone.

``keras-effnet-profile``, ``python -m keras_effnet.commands.profile`` and, in a checkout,
``python scripts/profile.py`` are the same command.

    keras-effnet-profile                         # every variant, markdown table
    keras-effnet-profile --models=efficientnetv2-s,efficientnet-b0 --format=csv
    keras-effnet-profile --image_size=224 --format=json
"""

from __future__ import annotations

import csv
import io
import json

from absl import flags

from keras_effnet import cli, commands
from keras_effnet.profile import profile
from keras_effnet.variants import get_variant, list_models

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Variants to profile (default: all).")
flags.DEFINE_integer("image_size", None, "Image size (default: each variant's eval size).")
flags.DEFINE_integer("classes", 1000, "Classifier width.")
flags.DEFINE_enum("format", "markdown", ["markdown", "csv", "json"], "Output format.")

COLUMNS = ["model", "image_size", "params", "trainable_params", "macs_b", "blocks",
           "paper_top1", "paper_params_m", "paper_macs_b"]


def table(models: list[str], image_size: int | None, classes: int) -> list[dict]:
    rows = []
    for name in models:
        v = get_variant(name)
        p = profile(v, image_size=image_size, classes=classes)
        rows.append(dict(model=v.name, image_size=p.image_size, params=p.params,
                         trainable_params=p.trainable_params, macs_b=round(p.macs / 1e9, 3),
                         blocks=p.blocks, paper_top1=v.paper_top1,
                         paper_params_m=v.paper_params_m, paper_macs_b=v.paper_macs_b))
    return rows


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    header = ("| model | image size | params | trainable | MACs (B) | blocks | "
              "paper top-1 | paper params (M) | paper MACs (B) |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        cells = [r["model"], r["image_size"], f"{r['params']:,}", f"{r['trainable_params']:,}",
                 f"{r['macs_b']:.3f}", r["blocks"]] + \
            ["–" if r[k] is None else r[k] for k in ("paper_top1", "paper_params_m",
                                                     "paper_macs_b")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    try:
        rows = table(FLAGS.models or list_models(), FLAGS.image_size, FLAGS.classes)
    except ValueError as e:
        return cli.fail(str(e))
    print(render(rows, FLAGS.format))
    return 0


def run() -> None:
    """The console script ``keras-effnet-profile``."""
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
