"""A throw-away PostgreSQL server, for checking the search's scale-out storage for real.

    with temporary_server() as url:   # postgresql://effnet@127.0.0.1:<port>/optuna
        ... scripts/search.py --storage=<url> in two processes ...

Debian's server binaries (``initdb``, ``pg_ctl``; package ``postgresql``), installed with
apt-get when they are missing and this process may (root, apt-get on the path); a new
cluster in a temporary directory, trusting local connections, listening on one free port
of 127.0.0.1 only, with fsync off (nothing in it outlives the block); stopped at once and
removed when the block ends. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` user the package creates (else ``nobody``).

Used by the reliability section of the benchmark and by the tests; nothing else in the
package starts a database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["server_binaries", "temporary_server"]

_APT_LOCK = os.path.join(tempfile.gettempdir(), "keras_effnet-apt.lock")


def _find_binaries() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb", path=str(Path(on_path).resolve().parent)):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def server_binaries(install: bool = True) -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``, installing Debian's
    ``postgresql`` package first when they are missing and ``install`` is true.

    Raises:
        RuntimeError: they are missing and cannot be installed (not root, no apt-get, or
            apt-get failed: its output is in the message).
    """
    found = _find_binaries()
    if found is not None or not install:
        if found is None:
            raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not "
                               "installed: apt-get install postgresql")
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed, "
                           "and this process cannot install them (it needs root and "
                           "apt-get): apt-get install postgresql")
    import fcntl

    with open(_APT_LOCK, "w") as lock:  # test workers installing at once share one run
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _find_binaries() is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            command = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                       "postgresql"]
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            if result.returncode != 0:  # a fresh machine has no package lists yet
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
                result = subprocess.run(command, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise RuntimeError(f"apt-get install postgresql failed ({result.returncode}):"
                                   f" {(result.stderr or result.stdout)[-2000:]}")
    found = _find_binaries()
    if found is None:
        raise RuntimeError("apt-get installed postgresql, but no initdb / pg_ctl was found "
                           "under /usr/lib/postgresql/*/bin")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """Who runs the server: this process' user, or a user without root's rights."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("PostgreSQL refuses to run as root, and there is no 'postgres' or "
                       "'nobody' user to run it as")


def _run(command: list[str], user: str | None) -> None:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout)[-2000:]}")


@contextlib.contextmanager
def temporary_server(database: str = "optuna") -> Iterator[str]:
    """Starts a new PostgreSQL cluster; yields its URL (user ``effnet``, no password,
    database ``database``); stops and removes it when the block ends."""
    binaries = server_binaries()
    user = _server_user()
    # Directly under the temporary directory: the server's user must reach it (a
    # pytest tmp_path sits under a directory only its owner may enter).
    root = Path(tempfile.mkdtemp(prefix="keras_effnet-pg-"))
    data = root / "data"
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    started = False
    try:
        _run([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "effnet",
              "-E", "UTF8", "--no-sync"], user)
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off")
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
              "-w", "-t", "60", "-o", options, "start"], user)
        started = True
        _run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
              "effnet", database], user)
        yield f"postgresql://effnet@127.0.0.1:{port}/{database}"
    finally:
        if started:
            with contextlib.suppress(RuntimeError):
                _run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                      "stop"], user)
        shutil.rmtree(root, ignore_errors=True)
