"""Deployment figures for one architecture, on scikit-learn's digits (no download): a
study of what quantisation and pruning cost, not deployment code.

    python -m keras_effnet.bench.measure --model=efficientnet-lite0 --image_size=32
    python -m keras_effnet.bench.measure --model=efficientnetv2-b0 --sparsities=
    python -m keras_effnet.bench.measure --model=efficientnet-lite0 --xnnpack_latency_size=224

Trains the model briefly with ``keras.Model.fit`` (so top-1 means something), then
measures, on the 397 held-out digits:

* float32 TFLite vs Keras: largest probability difference;
* float16 / dynamic / int8 TFLite (int8 calibrated on the first ``calibration`` training
  images): top-1 agreement with the float32 TFLite, and top-1;
* pruning at each sparsity (fine-tuned for ``prune_epochs``, the sparsity schedule ending
  after ``prune_end_fraction`` of it; defaults are PruneConfig's): smallest kernel
  sparsity of the pruned layers, gzipped TFLite size dense / pruned, top-1 before and
  after, for each of ``block_sizes`` (pruning units; PruneConfig's default is keyed by
  the sparsity alone, others add "block IxO"). The
  briefly trained model still gains from more training, so the dense model fine-tuned
  for the same epochs at the same learning rate is measured too (``control``): the drop
  is reported against both;
* with ``--xnnpack_latency_size``: ``PruneForLatencyOnXNNPack`` at the last sparsity and
  dense vs pruned latency with ai-edge-litert's XNNPACK, interleaved in one run.

Digits are 8x8 scans upscaled to ``image_size``, no crop; BatchNorm momentum is set to
0.9 so a few hundred steps settle its statistics. Prints one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Sequence

import numpy as np

from keras_effnet import cli
from keras_effnet.cli import option, parse_value
from keras_effnet.errors import ConfigError
from keras_effnet.export.prune import LEARNING_RATE_DECAYS, PruneConfig

__all__ = ["MeasureConfig", "measure", "parse_block_size"]


def _top1(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, -1) == labels))


def measure(model: str, image_size: int = 32, epochs: int = 6,
            sparsities: Sequence[float] = (0.5, 0.75),
            prune_epochs: int = PruneConfig.epochs,
            prune_learning_rate: float = PruneConfig.learning_rate,
            prune_learning_rate_decay: str = PruneConfig.learning_rate_decay,
            prune_end_fraction: float = PruneConfig.prune_end_fraction,
            control: bool = True, block_sizes: Sequence[tuple[int, int]] | None = None,
            quantize: Sequence[str] = ("float16", "dynamic", "int8"),
            xnnpack_latency_size: int | None = None, calibration: int = 100,
            seed: int = 0, log: Callable[..., None] = print) -> dict[str, Any]:
    """The figures described in the module docstring, as a dict."""
    import keras

    from keras_effnet.builder import build, resolve_variant
    from keras_effnet.data.digits import digits_arrays
    from keras_effnet.export import prune as prune_lib
    from keras_effnet.export import rewrite, tflite

    started = time.time()
    keras.utils.set_random_seed(seed)
    variant = resolve_variant(model).replace(bn_momentum=0.9)
    x, y, x_test, y_test = digits_arrays(image_size)
    net = build(variant, classes=10, input_shape=(image_size, image_size, 3))
    net.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                jit_compile=False)
    net.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    keras_probabilities = net.predict(x_test, verbose=0)
    result: dict[str, Any] = {"model": variant.name, "image_size": image_size,
                              "params": int(net.count_params()), "epochs": epochs,
                              "held_out": len(x_test), "calibration_images": calibration,
                              "keras_top1": _top1(keras_probabilities, y_test)}
    log(f"trained {variant.name}: top-1 {result['keras_top1']:.2%}")

    dense_float = tflite.convert(net)
    float_probabilities = tflite.LiteRunner(dense_float).predict(x_test)
    result["float32"] = {
        "max_abs_diff_vs_keras": float(np.abs(float_probabilities - keras_probabilities).max()),
        "top1": _top1(float_probabilities, y_test), "bytes": len(dense_float)}
    for mode in quantize:
        content = tflite.convert(net, mode, representative_images=x[:calibration])
        probabilities = tflite.LiteRunner(content).predict(x_test)
        result[mode] = {"agreement_with_float": tflite.top1_agreement(probabilities,
                                                                      float_probabilities),
                        "top1": _top1(probabilities, y_test), "bytes": len(content)}
        log(f"{mode}: {result[mode]}")

    default_block = prune_lib.PruneConfig().block_size
    block_sizes = [tuple(b) for b in block_sizes or [default_block]]

    def prune_config(target, **kwargs):
        return prune_lib.PruneConfig(target_sparsity=target, epochs=prune_epochs,
                                     learning_rate=prune_learning_rate,
                                     learning_rate_decay=prune_learning_rate_decay,
                                     prune_end_fraction=prune_end_fraction, **kwargs)

    if control and sparsities:
        # The same fine-tuning without pruning: Adam with the same learning rate schedule,
        # epochs and batch size as keras_effnet.export.prune.
        dense = keras.models.clone_model(net)
        dense.set_weights(net.get_weights())
        steps = -(-len(x) // prune_lib.ARRAY_BATCH_SIZE)
        dense.compile(keras.optimizers.Adam(prune_lib.fine_tuning_learning_rate(
                          prune_config(sparsities[0]), steps, keras)),
                      "sparse_categorical_crossentropy", jit_compile=False)
        dense.fit(x, y, epochs=prune_epochs, batch_size=prune_lib.ARRAY_BATCH_SIZE, verbose=0)
        result["dense_finetuned_top1"] = _top1(dense.predict(x_test, verbose=0), y_test)
        log(f"dense fine-tuned {prune_epochs} epochs: top-1 "
            f"{result['dense_finetuned_top1']:.2%}")
        del dense

    result["pruning"] = {}
    for target, block in ((t, b) for t in sparsities for b in block_sizes):
        pruned = prune_lib.prune(net, (x, y), prune_config(target, block_size=block),
                                 variant=variant)
        sparse = tflite.convert(pruned.model, sparsity=True)
        figures = {
            "min_kernel_sparsity": pruned.min_sparsity, "pruned_layers": len(pruned.sparsity),
            "gzip_dense": tflite.gzipped_size(dense_float),
            "gzip_pruned": tflite.gzipped_size(sparse),
            "top1_before": result["keras_top1"],
            "top1_after": _top1(pruned.model.predict(x_test, verbose=0), y_test),
            "tflite_top1_after": _top1(tflite.LiteRunner(sparse).predict(x_test), y_test)}
        figures["gzip_ratio"] = figures["gzip_dense"] / figures["gzip_pruned"]
        figures["drop_points"] = 100 * (figures["top1_before"] - figures["top1_after"])
        if "dense_finetuned_top1" in result:
            figures["drop_points_vs_dense_finetuned"] = 100 * (
                result["dense_finetuned_top1"] - figures["top1_after"])
        key = str(target)
        if block != default_block:
            key += f" block {block[0]}x{block[1]}"
        result["pruning"][key] = figures
        log(f"pruned {target:.0%}, block {block}: {figures}")

    if xnnpack_latency_size:
        target = sparsities[-1] if sparsities else 0.75
        pruned = prune_lib.prune(net, (x, y), prune_config(target, policy="xnnpack"),
                                 variant=variant)
        size = xnnpack_latency_size
        dense_model = rewrite.to_xnnpack_form(net, input_size=size)
        pruned_model = rewrite.replay(pruned.model, lambda *args: None, input_size=size)
        dense = tflite.LiteRunner(tflite.convert(dense_model), num_threads=1)
        sparse_content = tflite.convert(pruned_model, sparsity=True)
        sparse = tflite.LiteRunner(sparse_content, num_threads=1)
        image = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)
        dense_times, sparse_times = [], []
        for _ in range(10):  # interleaved, so load changes hit both alike
            dense_times += dense.latency(image, runs=10, warmup=2)
            sparse_times += sparse.latency(image, runs=10, warmup=2)
        result["xnnpack_latency"] = {
            "sparsity": target, "image_size": size,
            "min_kernel_sparsity": pruned.min_sparsity,
            "sparse_encoded": tflite.sparsity_encoded(sparse_content),
            "densify_ops": tflite.densify_ops(sparse_content),
            "pruned_1x1_layers": len(pruned.sparsity),
            "sparse_path_unavailable": tflite.xnnpack_sparse_unavailable(),
            "dense_ms": 1e3 * float(np.median(dense_times)),
            "pruned_ms": 1e3 * float(np.median(sparse_times)),
            "ratio": float(np.median(dense_times) / np.median(sparse_times))}
        log(f"xnnpack latency: {result['xnnpack_latency']}")
    result["wall_s"] = round(time.time() - started, 1)
    return result


def parse_block_size(text: str) -> tuple[int, int]:
    """``"4x1"`` -> ``(4, 1)``: a pruning unit as INxOUT (ConfigError naming
    ``block_sizes`` otherwise)."""
    try:
        block = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        block = ()
    if len(block) != 2 or min(block) < 1:
        raise ConfigError(f"block_sizes are INxOUT, e.g. 4x1 or 1x1. Received: {text!r}",
                          "block_sizes")
    return block


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """The command line of ``python -m keras_effnet.bench.measure``: :func:`measure`'s
    arguments as flags."""

    model: str = option("efficientnet-lite0", help="Variant name or block strings.")
    image_size: int = option(32, help="Digits are upscaled to this size.")
    epochs: int = option(6, help="Training epochs before measuring.")
    sparsities: tuple[str, ...] = option(("0.5", "0.75"), help="Pruning targets.")
    prune_epochs: int = option(PruneConfig.epochs, help="Fine-tuning epochs while pruning.")
    prune_learning_rate: float = option(PruneConfig.learning_rate,
                                        help="Adam learning rate while pruning.")
    prune_learning_rate_decay: str = option(
        PruneConfig.learning_rate_decay, choices=LEARNING_RATE_DECAYS,
        help="cosine: decay to 0 once the target sparsity is reached; constant: keep the "
        "learning rate.")
    prune_end_fraction: float = option(
        PruneConfig.prune_end_fraction, help="The sparsity schedule reaches the target "
        "after this fraction of the fine-tuning steps.")
    block_sizes: tuple[str, ...] = option(
        ("4x1",), help="Pruning units of 1x1 kernels to measure, as INxOUT (4x1: "
        "keras_effnet's default; 1x1: element-wise).")
    control: bool = option(True, help="Also fine-tune the dense model for the same epochs.")
    calibration: int = option(100, flag="representative_images",
                              help="int8 calibration images (train).")
    xnnpack_latency_size: int | None = option(
        None, help="Also measure XNNPACK latency of a PruneForLatencyOnXNNPack model at "
        "this size (lite variants).")

    def run(self, log: Callable[..., None] = print) -> dict[str, Any]:
        """:func:`measure` with these settings."""
        return measure(self.model, image_size=self.image_size, epochs=self.epochs,
                       sparsities=[parse_value("sparsities", float, s)
                                   for s in self.sparsities],
                       prune_epochs=self.prune_epochs,
                       prune_learning_rate=self.prune_learning_rate,
                       prune_learning_rate_decay=self.prune_learning_rate_decay,
                       prune_end_fraction=self.prune_end_fraction, control=self.control,
                       block_sizes=[parse_block_size(b) for b in self.block_sizes],
                       xnnpack_latency_size=self.xnnpack_latency_size,
                       calibration=self.calibration, log=log)


def main(flagset: cli.FlagSet) -> int:
    """The command line: flags -> :class:`MeasureConfig` -> one JSON object printed."""
    result = MeasureConfig(**flagset.values()).run()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    FLAGS = cli.FlagSet(MeasureConfig)
    FLAGS.define()
    cli.run(lambda: main(FLAGS), flagsets=(FLAGS,))
