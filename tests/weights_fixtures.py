"""Test doubles for pretrained weights, with no internet: a weight server on 127.0.0.1; the
publisher-layout files come from :mod:`keras_effnet.bench.weight_files` (re-exported)."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np

from keras_effnet.bench.weight_files import (keras_md5_slot, keras_pair, md5,  # noqa: F401
                                             official_variables, write_checkpoint,
                                             write_keras_h5, write_tarball)


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


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def write_photos(root: Path, classes: int = 5, per_class: int = 4) -> Path:
    """``root/photos/class_<k>/<i>.jpg``: small JPEGs, a class-coloured channel each."""
    import keras
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "photos" / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            pixels[:, :, c % 3] = 40 * c
            keras.utils.save_img(folder / f"{i}.jpg", pixels)
    return root / "photos"


def files_below(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
