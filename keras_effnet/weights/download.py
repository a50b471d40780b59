"""Fetching weight files: verified, cached, resumable by re-running, mirror- and
offline-aware.

A file is fetched once into the cache (``$KERAS_HOME/models``, keras' own, so a cache
that holds keras.applications' files already is reused), written to a temporary name
beside its final one and renamed only once complete and verified: an interrupted or
failed download leaves nothing that a later call would take for good.

Verification: by the published hash where one exists (keras.applications publishes md5s);
otherwise the caller checks the file's content (every checkpoint variable and shape) and
then :func:`record` writes its sha256 beside it (``<file>.sha256``), so a file that
changes in the cache later is detected. A cached file that fails its check is fetched
again (or, offline, named in the error).

Environment:

* ``KERAS_EFFNET_WEIGHTS_MIRROR``: a URL or a local directory that replaces the origin's
  host, with the same paths below it (``https://mirror.example/keras-applications/...``
  or ``/srv/weights/keras-applications/...``): air-gapped sites, and the tests.
* ``KERAS_EFFNET_OFFLINE=1``: never touch the network; a missing file is one error that
  names the file, its origin URL and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["WeightsDownloadError", "cache_dir", "fetch", "record", "recorded_hash", "verified",
           "file_hash", "mirror_url", "offline", "MIRROR_ENV", "OFFLINE_ENV"]

MIRROR_ENV = "KERAS_EFFNET_WEIGHTS_MIRROR"
OFFLINE_ENV = "KERAS_EFFNET_OFFLINE"
_CHUNK = 1 << 20
# Progress is shown for files at least this large (or of unknown size).
_PROGRESS_BYTES = 8 << 20
_TIMEOUT_S = 60


class WeightsDownloadError(OSError):
    """A weight file could not be fetched or verified; the message says what to do."""


def cache_dir() -> Path:
    """``$KERAS_HOME/models`` (default ``~/.keras/models``; ``/tmp/.keras/models`` when
    that is not writable), where keras.applications caches its weight files too."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if os.path.isdir(home) and not os.access(home, os.W_OK):
        home = os.path.join(tempfile.gettempdir(), ".keras")  # keras' own fallback
    return Path(home) / "models"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mirror_url(origin: str) -> str:
    """``origin`` with its scheme and host replaced by ``$KERAS_EFFNET_WEIGHTS_MIRROR``
    (unchanged without one). A mirror that is a directory gives a local path."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return origin
    path = urllib.parse.urlsplit(origin).path.lstrip("/")
    if "://" not in mirror:
        return os.path.join(mirror, *path.split("/"))
    if mirror.startswith("file://"):
        return os.path.join(urllib.parse.urlsplit(mirror).path, *path.split("/"))
    return mirror.rstrip("/") + "/" + path


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_hash(path: str | os.PathLike) -> str | None:
    """The sha256 :func:`record` wrote for ``path``, or None."""
    record_file = _record_path(Path(path))
    try:
        return record_file.read_text().split()[0]
    except (OSError, IndexError):
        return None


def record(path: str | os.PathLike) -> str:
    """Writes ``path``'s sha256 beside it (after its content was checked); returns it."""
    from keras_effnet.run_dir import write_text
    digest = file_hash(path)
    write_text(_record_path(Path(path)), f"{digest}  {Path(path).name}\n")
    return digest


def verified(path: Path, expected: str | None, algorithm: str) -> bool | None:
    """True: matches the published or recorded hash; False: does not; None: nothing to
    check it against yet (the caller checks the content, then records it)."""
    if expected is not None:
        return file_hash(path, algorithm) == expected
    recorded = recorded_hash(path)
    if recorded is None:
        return None
    return file_hash(path) == recorded


def fetch(origin: str, path: str | os.PathLike, *, expected_hash: str | None = None,
          hash_algorithm: str = "md5", what: str = "weights",
          log: Callable[[str], None] | None = None) -> Path:
    """``path`` (a cache file), fetched from ``origin`` (or the mirror) unless a verified
    copy is there already.

    Raises:
        WeightsDownloadError: offline with no file; the server or mirror failed; the
            download was cut short or does not match ``expected_hash``. Nothing is left
            at ``path`` then.
    """
    path = Path(path)
    log = log or _stderr
    if path.is_file():
        ok = verified(path, expected_hash, hash_algorithm)
        if ok is not False:
            return path
        if offline():
            raise WeightsDownloadError(
                f"The cached {what} file {path} is corrupt (its hash does not match) and "
                f"{OFFLINE_ENV} is set: delete it and download {origin} again, or put a "
                "good copy there.")
        log(f"Warning: the cached {path.name} is corrupt (hash mismatch); fetching it again.")
        _remove(path)
    if offline():
        raise WeightsDownloadError(
            f"{what} file {path.name} is not in the cache and {OFFLINE_ENV} is set. "
            f"Download {origin} on a machine with internet and put it at {path} (or point "
            f"{MIRROR_ENV} at a directory that holds it below the same path).")
    source = mirror_url(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _partial(path) as tmp:
        if "://" in source:
            _download(source, tmp, origin, log)
        else:
            _copy(source, tmp, origin)
        if expected_hash is not None:
            got = file_hash(tmp, hash_algorithm)
            if got != expected_hash:
                raise WeightsDownloadError(
                    f"{source} does not match the published {hash_algorithm} of "
                    f"{path.name} ({got} != {expected_hash}): a corrupt or substituted "
                    "file, not kept. Retry later or check the mirror.")
    return path


@contextlib.contextmanager
def _partial(path: Path) -> Iterator[str]:
    from keras_effnet.run_dir import current_umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(Path(tmp))
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _copy(source: str, tmp: str, origin: str) -> None:
    if not os.path.isfile(source):
        raise WeightsDownloadError(
            f"The mirror directory has no {source} ({MIRROR_ENV} replaces the host of "
            f"{origin}; the paths below it are the same).")
    shutil.copyfile(source, tmp)


def _download(url: str, tmp: str, origin: str, log: Callable[[str], None]) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "keras_effnet"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, \
                open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done, shown, start = 0, -1, time.monotonic()
            show = total is None or total >= _PROGRESS_BYTES
            name = url.rsplit("/", 1)[-1]
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                done += len(chunk)
                if show:
                    shown = _progress(name, done, total, shown, start)
            if total is not None and done != total:
                raise WeightsDownloadError(
                    f"The download of {url} stopped after {done:,} of {total:,} bytes; "
                    "nothing was kept. Run again to retry.")
            if show:
                sys.stderr.write("\n" if sys.stderr.isatty() else "")
    except WeightsDownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise WeightsDownloadError(f"Cannot download {url}: HTTP {e.code} {e.reason}"
                                   f"{_hint(url, origin)}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsDownloadError(f"Cannot download {url}: {reason}{_hint(url, origin)}"
                                   ) from None
    except http.client.HTTPException as e:  # IncompleteRead: the connection dropped
        raise WeightsDownloadError(
            f"The download of {url} failed ({type(e).__name__}: {e}); nothing was kept. "
            f"Run again to retry.{_hint(url, origin)}") from None


def _hint(url: str, origin: str) -> str:
    if url != origin:
        return f" (from {MIRROR_ENV}; the origin is {origin})."
    return (f". Without internet: put the file in the cache by hand, or set {MIRROR_ENV} "
            "to a server or directory that holds it.")


def _progress(name: str, done: int, total: int | None, shown: int, start: float) -> int:
    mb = done / 2**20
    if total:
        step = int(100 * done / total) // (1 if sys.stderr.isatty() else 25)
        if step == shown:
            return shown
        pct = 100 * done / total
        text = f"Downloading {name}: {mb:,.0f} / {total / 2**20:,.0f} MB ({pct:.0f} %)"
    else:
        step = int(mb) // (1 if sys.stderr.isatty() else 64)
        if step == shown:
            return shown
        text = f"Downloading {name}: {mb:,.0f} MB"
    rate = mb / max(time.monotonic() - start, 1e-6)
    text += f", {rate:,.1f} MB/s"
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text)
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return step


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
