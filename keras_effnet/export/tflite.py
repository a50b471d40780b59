"""Keras 3 model -> TFLite (float32, float16, dynamic-range int8, full int8), and an
ai-edge-litert runner to check what the converter produced.

Conversion goes through a Keras 3 SavedModel written with ``keras.export.ExportArchive``
and ``tf.lite.TFLiteConverter.from_saved_model`` (Keras 3 throughout). The TFLite model
takes the same float32 pixels in [0, 255] as the Keras model (preprocessing is
inside), batch 1 by default, and returns softmax probabilities under the signature
key ``probabilities``.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from keras_effnet.export.formats import MIN_REPRESENTATIVE_IMAGES, QUANTIZE_MODES
from keras_effnet.export.report import Artifact, size_text
from keras_effnet.run_dir import atomic_path, write_text

if TYPE_CHECKING:  # for the hints only
    from keras_effnet.export.context import ExportContext

__all__ = ["QUANTIZE_MODES", "MIN_REPRESENTATIVE_IMAGES", "TFLiteExport", "LiteRunner",
           "convert", "write_tflite", "gzipped_size", "top1_agreement", "top1_accuracy",
           "sparsity_encoded", "densify_ops", "xnnpack_sparse_unavailable", "export"]

logger = logging.getLogger("keras_effnet.export")


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """A written ``.tflite`` file and its sizes."""

    path: Path
    quantize: str
    size_bytes: int
    gzipped_bytes: int
    sparse: bool


def _check_quantize(quantize: str) -> str:
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}. "
                         f"Received: quantize={quantize!r}")
    return quantize


def convert(model: Any, quantize: str = "none", *, image_size: int | None = None,
            representative_images: Iterable[np.ndarray] | np.ndarray | None = None,
            sparsity: bool = False, int8_io: bool = False,
            batch_size: int | None = 1) -> bytes:
    """Converts a Keras 3 classifier to a TFLite flatbuffer.

    Args:
        model: Keras 3 model taking float32 pixels in [0, 255].
        quantize: ``none`` (float32), ``float16`` (float16 weights), ``dynamic``
            (int8 weights, float activations) or ``int8`` (int8 weights and
            activations, calibrated on ``representative_images``).
        image_size: input size (default: the model's static size or its eval size).
        representative_images: for ``int8``: at least 100 float32 ``[H, W, 3]`` images
            in [0, 255] from the training data, at ``image_size``.
        sparsity: encode zero-rich weights sparsely (``Optimize.EXPERIMENTAL_SPARSITY``),
            for pruned models. XNNPACK (the default CPU delegate of TFLite and
            ai-edge-litert) rejects some quantised sparse kernels (dynamic-range convs,
            int8 fully-connected) at ``allocate_tensors``; when the result does not load
            with XNNPACK, the model is converted again without sparse encoding (its zeros
            still compress) and a warning is logged. :func:`sparsity_encoded` tells.
        int8_io: for ``int8``, uint8 input and output tensors (integer-only
            accelerators); by default input and output stay float32.
        batch_size: static batch size (1 for on-device use) or None for dynamic.
    """
    from keras_effnet.builder import model_image_size
    _check_quantize(quantize)
    size = model_image_size(model, image_size)
    calibration = None
    if quantize == "int8":
        if representative_images is None:
            raise ValueError("quantize='int8' needs representative_images: at least "
                             f"{MIN_REPRESENTATIVE_IMAGES} training images.")
        calibration = np.asarray(list(representative_images) if not isinstance(
            representative_images, np.ndarray) else representative_images, np.float32)
        if calibration.ndim != 4 or calibration.shape[1:] != (size, size, 3):
            raise ValueError(f"representative_images must be [N, {size}, {size}, 3]. "
                             f"Received shape {calibration.shape}")
        if len(calibration) < MIN_REPRESENTATIVE_IMAGES:
            raise ValueError(f"quantize='int8' needs at least {MIN_REPRESENTATIVE_IMAGES} "
                             f"representative images. Received: {len(calibration)}")
    elif int8_io:
        raise ValueError("int8_io applies only to quantize='int8'.")
    import keras
    import tensorflow as tf

    def serve(images):
        return {"probabilities": tf.cast(model(images, training=False), tf.float32)}

    with tempfile.TemporaryDirectory() as work:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=[
            tf.TensorSpec([batch_size, size, size, 3], tf.float32, name="images")])
        archive.write_out(work, verbose=False)
        content = _convert(work, quantize, calibration, sparsity, int8_io)
        if sparsity and not _loads_with_xnnpack(content):
            logger.warning("The sparse-encoded %s model does not load with XNNPACK; "
                           "converting it with dense encoding instead.", quantize)
            content = _convert(work, quantize, calibration, False, int8_io)
    return content


def _loads_with_xnnpack(content: bytes) -> bool:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - cannot check without the runtime
        return True
    try:
        Interpreter(model_content=content).allocate_tensors()
    except (RuntimeError, ValueError):
        return False
    return True


def _convert(saved_model_dir: str, quantize: str, calibration: np.ndarray | None,
             sparsity: bool, int8_io: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=["serving_default"])
    optimizations = []
    if quantize != "none":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        def representative_dataset():
            for image in calibration:
                yield [image[None]]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    return converter.convert()


def gzipped_size(content: bytes) -> int:
    """Size after ``gzip -9``: what an app download or OTA update actually costs."""
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def sparsity_encoded(content: bytes) -> bool:
    """Whether any tensor of the flatbuffer uses TFLite's sparse encoding."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(content, 0)
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            if subgraph.Tensors(t).Sparsity() is not None:
                return True
    return False


def densify_ops(content: bytes) -> int:
    """Number of DENSIFY operators: one per sparse-encoded constant the interpreter
    expands at load. A float32 model needs them for XNNPACK's sparse inference, which
    reads the DENSIFY inputs as its hint that a convolution's weights are sparse."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(content, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    return sum(codes[subgraph.Operators(o).OpcodeIndex()] == schema.BuiltinOperator.DENSIFY
               for subgraph in (model.Subgraphs(s) for s in range(model.SubgraphsLength()))
               for o in range(subgraph.OperatorsLength()))


def xnnpack_sparse_unavailable(machine: str | None = None,
                               cpu_flags: Iterable[str] | None = None) -> str | None:
    """Why XNNPACK will run a sparse model densely on this CPU, or None if it may not.

    XNNPACK's sparse (NCHW) inference is switched off on x86 processors with AVX: its
    sparse micro-kernels target only SSE there, and dense inference is expected to be
    faster (``xnn_is_chw_compatible_config`` in XNNPACK's hardware config). A pruned
    model then runs as fast as its dense twin, no faster. ARM CPUs (phones, the TFMOT
    guide's Pixel 4) take the sparse path. ``machine`` and ``cpu_flags`` default to this
    machine's (``platform.machine()``, the flags line of /proc/cpuinfo).
    """
    import platform
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    if cpu_flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None  # cannot tell
        line = next((l for l in text.splitlines() if l.startswith("flags")), "")
        cpu_flags = line.partition(":")[2].split()
    if "avx" not in set(cpu_flags):
        return None
    return ("XNNPACK runs sparse models densely on x86 CPUs with AVX (its sparse kernels "
            "target SSE only); measure on ARM for the sparse speed-up")


def write_tflite(content: bytes, path: str | os.PathLike, quantize: str,
                 overwrite: bool = False) -> TFLiteExport:
    """Writes ``content`` atomically (temp file, then rename) and reports its sizes."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or version.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(content)
    return TFLiteExport(path=path, quantize=_check_quantize(quantize),
                        size_bytes=len(content), gzipped_bytes=gzipped_size(content),
                        sparse=sparsity_encoded(content))


class LiteRunner:
    """Runs a TFLite classifier with ai-edge-litert on float32 pixels in [0, 255].

    Quantised inputs and outputs are (de)quantised here, so every model variant is
    called, and compared, the same way. ``xnnpack=False`` uses the builtin kernels only.
    """

    def __init__(self, content: bytes, num_threads: int | None = None, xnnpack: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Running TFLite models needs ai-edge-litert: "
                              "pip install 'keras_effnet[tflite]'") from e
        resolver = (OpResolverType.AUTO if xnnpack
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads,
                                       experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    def _quantize(self, images: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, values: np.ndarray) -> np.ndarray:
        if values.dtype == np.float32:
            return values
        scale, zero_point = self._output["quantization"]
        return (values.astype(np.float32) - zero_point) * scale

    def _batch_size(self, n: int) -> int:
        fixed = int(self._input["shape_signature"][0])
        return fixed if fixed > 0 else n

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities ``[N, classes]`` for float32 images ``[N, H, W, 3]``."""
        images = np.asarray(images, np.float32)
        step = self._batch_size(batch_size or len(images))
        outputs = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            if tuple(self._input["shape"]) != (len(chunk),) + chunk.shape[1:]:
                if int(self._input["shape_signature"][0]) > 0:
                    raise ValueError(f"This model takes batches of {step}; "
                                     f"received {len(chunk)} images.")
                self.interpreter.resize_tensor_input(self._input["index"], chunk.shape)
                self.interpreter.allocate_tensors()
                self._input = self.interpreter.get_input_details()[0]
                self._output = self.interpreter.get_output_details()[0]
            self.interpreter.set_tensor(self._input["index"], self._quantize(chunk))
            self.interpreter.invoke()
            outputs.append(self._dequantize(self.interpreter.get_tensor(self._output["index"])))
        return np.concatenate(outputs, axis=0)

    def latency(self, image: np.ndarray, runs: int = 50, warmup: int = 5) -> list[float]:
        """Seconds per ``invoke()`` on one input, ``runs`` times after ``warmup`` runs."""
        import time
        self.interpreter.set_tensor(self._input["index"],
                                    self._quantize(np.asarray(image, np.float32)[None]))
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return times


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose argmax is the same in ``a`` and ``b``."""
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def top1_accuracy(probabilities: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """Top-1 accuracy against integer or one-hot labels."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.argmax(labels, -1)
    return float(np.mean(np.argmax(probabilities, -1) == labels))


def export(model: Any, context: ExportContext) -> list[Artifact]:
    """The ``tflite`` format of an export (:mod:`keras_effnet.export.job`): one file per
    ``config.quantize`` mode, with ``labels.txt``, in ``<tflite_dir>/<name>/<version>/``,
    each measured with :class:`LiteRunner`. A pruned ``model`` is written with sparse
    encoding, and compared with the same conversion of the dense model (unless
    ``config.compare_dense`` is off)."""
    config, pruned = context.config, context.is_pruned(model)
    out_dir = Path(config.tflite_dir) / context.name / str(context.version)
    calibration = None
    if "int8" in config.quantize:
        calibration = context.source.representative_images(
            n=config.representative_images, image_size=context.image_size)
        if len(calibration) < MIN_REPRESENTATIVE_IMAGES:
            # Before anything is written: a small folder's run stays as it is, exportable
            # without int8.
            from keras_effnet.errors import ConfigError
            raise ConfigError(
                f"int8 calibration needs at least {MIN_REPRESENTATIVE_IMAGES} training "
                f"images and {context.source.name!r} has {len(calibration)}: add images, or "
                "export without int8 (quantize none, float16 or dynamic; scripts/train.py "
                "--export_quantize=dynamic, or scripts/export.py --model_dir=<run> "
                "--quantize=dynamic).", "quantize")
    out_dir.mkdir(parents=True, exist_ok=False)
    write_text(out_dir / "labels.txt", "".join(f"{c}\n" for c in context.class_names))
    suffix, dense_model = "", None
    if pruned:
        suffix = f"-pruned{round(config.prune.target_sparsity * 100)}"
        dense_model = context.model
        if config.prune.policy == "xnnpack" and config.compare_dense:
            # the pruned model is in XNNPACK form: compare with the same form, dense
            from keras_effnet.export.rewrite import to_xnnpack_form
            dense_model = to_xnnpack_form(context.model, input_size=context.image_size)
    artifacts = []
    for mode in config.quantize:
        content = convert(model, mode, image_size=context.image_size,
                          representative_images=calibration, sparsity=pruned)
        written = write_tflite(content, out_dir / f"{context.name}{suffix}-{mode}.tflite", mode)
        notes = ""
        if pruned:
            notes = ("sparse encoding" if written.sparse else
                     "dense encoding (XNNPACK cannot load this one sparse)")
        if pruned and config.compare_dense:
            dense = gzipped_size(convert(dense_model, mode, image_size=context.image_size,
                                         representative_images=calibration))
            notes += (f"; unpruned gzipped {size_text(dense)}: "
                      f"{dense / written.gzipped_bytes:.2f}x smaller")
        artifacts.append(Artifact(
            f"tflite {mode}" + (" pruned" if pruned else ""), str(written.path),
            size_bytes=written.size_bytes, gzipped_bytes=written.gzipped_bytes, notes=notes,
            **context.measure(LiteRunner(content).predict, made_from=model)))
    return artifacts
