"""Test doubles for pretrained weights, with no internet: a weight server on 127.0.0.1, and
weight files written the way their publishers lay them out.

* keras.applications' files: legacy (Keras 2) weights-only ``.h5``, layers under their
  keras.applications names, V1 with its ``Normalization`` state as keras' released files
  hold it (ImageNet mean, and the std where the variance belongs: tensorflow#49930).
* Google's checkpoints: a TF1 name-based bundle inside a tarball whose top directory is
  the archive's name, variables named as the official code names them. The names are
  derived here on their own terms, not by the package's mapping: TensorFlow numbers a
  scope's layers per class in call order (``conv2d``, ``conv2d_1``; ``se/`` apart), so
  walking a model's layers in order and counting gives them. Each variable has an
  ``/ExponentialMovingAverage`` shadow holding the real values while the variable itself
  holds noise (the official evaluation restores the shadows), plus RMSProp slots and
  ``global_step``, which belong to no layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import tarfile
import threading
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LEAVES = {"Conv2D": ("kernel", "bias"), "DepthwiseConv2D": ("depthwise_kernel",),
           "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
           "Dense": ("kernel", "bias")}


class WeightServer:
    """Serves ``root`` on 127.0.0.1; records each request's path; ``drop[path] = n``
    announces the full length and then closes the connection after ``n`` bytes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self.drop: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                cut = server.drop.get(self.path)
                if cut is None:
                    return super().do_GET()
                data = (server.root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def path_of(self, origin: str) -> Path:
        """Where the file of ``origin`` lies below the served root (the mirror layout)."""
        from urllib.parse import urlsplit
        return self.root / urlsplit(origin).path.lstrip("/")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def weight_server(root: Path, monkeypatch, cache: Path):
    """A server of ``root`` set as the mirror, with keras_effnet's (and keras') cache at
    ``cache``."""
    import keras.src.backend.config as keras_config
    monkeypatch.setenv("KERAS_HOME", str(cache))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(cache))
    monkeypatch.delenv("KERAS_EFFNET_OFFLINE", raising=False)
    with WeightServer(root) as server:
        monkeypatch.setenv("KERAS_EFFNET_WEIGHTS_MIRROR", server.url)
        yield server


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_keras_h5(model, path: Path) -> Path:
    """``model`` (a keras.applications model) as keras' released weights-only ``.h5``."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    norm = next((layer for layer in model.layers
                 if type(layer).__name__ == "Normalization" and len(layer.weights) == 3), None)
    if norm is not None:  # keras' V1 files: ImageNet mean, and the std as the variance
        mean, _, count = norm.get_weights()
        norm.set_weights([np.array(IMAGENET_MEAN, "float32"),
                          np.array(IMAGENET_STD, "float32"), count])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def official_variables(model, scope: str) -> dict[str, np.ndarray]:
    """Official variable name -> value, for a keras_effnet ``model``: numbered per block
    scope by class in call (= model) order."""
    out: dict[str, np.ndarray] = {}
    blocks: dict[str, int] = {}
    counts: dict[tuple[str, str], int] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        match = re.match(r"(stage\d+_block\d+_)", layer.name)
        if match:
            where = f"blocks_{blocks.setdefault(match[1], len(blocks))}"
        elif layer.name.startswith("stem_"):
            where = "stem"
        else:
            where = "head"
        if "_se_" in layer.name:
            where += "/se"
        base = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
                "BatchNormalization": "tpu_batch_normalization", "Dense": "dense"}[kind]
        n = counts.get((where, base), 0)
        counts[(where, base)] = n + 1
        name = f"{scope}/{where}/{base}{'' if n == 0 else f'_{n}'}"
        for leaf, value in zip(_LEAVES[kind], layer.get_weights()):
            out[f"{name}/{leaf}"] = value
    return out


def write_checkpoint(variables: dict[str, np.ndarray], prefix: Path, ema: bool = True,
                     seed: int = 0) -> None:
    """A TF1 name-based checkpoint bundle at ``prefix``: with ``ema``, every variable's
    value goes to its ``/ExponentialMovingAverage`` shadow and the variable holds noise;
    RMSProp slots and ``global_step`` are added as training leaves them."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, value in variables.items():
        if ema:
            tensors[name + "/ExponentialMovingAverage"] = value
            tensors[name] = (value + rng.normal(size=value.shape)).astype(value.dtype)
            if name.endswith(("kernel", "gamma")):
                tensors[name + "/RMSProp"] = np.ones_like(value)
        else:
            tensors[name] = value
    tensors["global_step"] = np.array(218750, "int64")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def write_tarball(variables: dict[str, np.ndarray], path: Path, ema: bool = True) -> Path:
    """``variables`` as an official tarball: ``<name>/model.ckpt.*`` inside ``path``."""
    name = path.name.split(".")[0]
    work = path.parent / f".{name}-work"
    write_checkpoint(variables, work / name / "model.ckpt", ema=ema)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(work / name, arcname=name)
    for f in sorted(work.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    work.rmdir()
    return path


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def files_below(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
