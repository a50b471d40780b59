"""The search under hostile conditions, for the reliability section: torn and damaged
journals, workers racing for one network, absurd grids, storages that cannot be opened,
renamed study directories, and a real PostgreSQL server shared by two workers, one of
them killed.

Training is a stand-in (:func:`stand_in_study`: a sleep that leaves one file per
training), so what is counted is the study's bookkeeping, not TensorFlow: a
*duplicate* is a network trained twice to completion, a *lost file* a journal record or
result the user had that changed or went.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["stand_in_study", "start_worker", "start_interleaved", "two_workers",
           "hostile_search", "CASES"]


def stand_in_study(study_dir: str | os.PathLike, trials: int = 3, storage: str | None = None,
                   values: int = 8, twins: int = 2, seconds: float = 0.0,
                   marks: str | os.PathLike | None = None, diverge: tuple = (),
                   seed: int = 0, epochs: int = 10, interrupt: tuple = ()) -> Any:
    """A :class:`~keras_effnet.search.study.Study` whose candidates are ``x`` in
    ``range(values)``; ``x`` and ``x + values // twins`` are the same network (key
    ``k<x % (values // twins)>``). Training is a sleep of ``seconds`` that first leaves
    ``<key>-<pid>-<trial>`` in ``marks`` (a directory); keys in ``diverge`` raise
    NonFiniteLossError, in ``interrupt`` KeyboardInterrupt."""
    from keras_effnet.search import SearchConfig
    from keras_effnet.search.study import Proposal, Study, import_optuna
    from keras_effnet.train.trainer import NonFiniteLossError

    optuna = import_optuna()
    config = SearchConfig(search="nas", sampler="random", study_dir=str(study_dir),
                          storage=storage, trials=trials, seed=seed, epochs=epochs)
    distinct = values // twins

    def propose(trial):
        x = trial.suggest_categorical("x", list(range(values)))
        return Proposal(params={"x": x}, variant=None, image_size=16,
                        key=f"k{x % distinct}", slug=f"x{x}", info={})

    def evaluate(proposal, trial):
        if marks is not None:
            Path(marks, f"{proposal.key}-{os.getpid()}-{trial.number}").touch()
        time.sleep(seconds)
        x = proposal.params["x"] % distinct
        if x in diverge:
            raise NonFiniteLossError("Loss became nan")
        if x in interrupt:
            raise KeyboardInterrupt
        return {"top1": 0.5 + x / 100, "train_s": seconds, "reward": 0.5 + x / 100}

    return Study(config, directions=["maximize"],
                 sampler_fn=lambda s: optuna.samplers.RandomSampler(seed=s),
                 propose=propose, evaluate=evaluate, objective_values=lambda r: r["top1"],
                 first=None, log=lambda message: None)


_WORKER = """
import sys
from keras_effnet.bench.search_hostile import stand_in_study
stand_in_study({study_dir!r}, storage={storage!r}, trials={trials}, values={values},
               twins=2, seconds={seconds}, marks={marks!r}).run(lambda s, t: None)
"""

# Trial 0 is asked first but proposes its network only once trial 1 (the other
# process) is training it: before claims, both trained it.
_INTERLEAVED = """
import sys, time
from pathlib import Path
from keras_effnet.bench.search_hostile import stand_in_study
role, marks = sys.argv[1], Path({marks!r})
study = stand_in_study({study_dir!r}, trials=1, values=1, twins=1, seconds=3.0,
                       marks=marks)
if role == "low":
    trial = study.study.ask()
    Path(marks.parent, "asked").touch()
    while not list(marks.iterdir()):
        time.sleep(0.1)
else:
    while not Path(marks.parent, "asked").exists():
        time.sleep(0.1)
    trial = study.study.ask()
study.study.tell(trial, study.objective(trial))
"""


def start_worker(study_dir: Path, marks: Path, *, storage: str | None = None,
                 trials: int, values: int, seconds: float) -> subprocess.Popen:
    """A worker process running :func:`stand_in_study` to completion (its own
    process group, so it can be killed whole)."""
    code = _WORKER.format(study_dir=str(study_dir), storage=storage, trials=trials,
                          values=values, seconds=seconds, marks=str(marks))
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def two_workers(study_dir: Path, marks: Path, *, storage: str | None = None, trials: int,
                values: int, seconds: float, timeout: float = 180
                ) -> list[tuple[str, int]]:
    """Two :func:`start_worker` processes on one study, to completion: ``(key, pid)``
    of every training they did.

    Raises:
        RuntimeError: a worker failed.
    """
    workers = [start_worker(study_dir, marks, storage=storage, trials=trials, values=values,
                            seconds=seconds) for _ in range(2)]
    codes = [w.wait(timeout=timeout) for w in workers]
    if any(codes):
        raise RuntimeError(f"a worker failed (exit codes {codes})")
    return [(key, int(pid)) for key, pid, _ in (p.name.split("-") for p in marks.iterdir())]


def start_interleaved(study_dir: Path, marks: Path) -> list[subprocess.Popen]:
    """The two processes of the lower-trial-proposes-later race (see ``_INTERLEAVED``)."""
    code = _INTERLEAVED.format(study_dir=str(study_dir), marks=str(marks))
    return [subprocess.Popen([sys.executable, "-c", code, role], start_new_session=True)
            for role in ("low", "high")]


def _marks(root: Path) -> Path:
    path = root / "marks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _trained(marks: Path) -> list[str]:
    return [p.name.split("-")[0] for p in marks.iterdir()]


def _duplicates(keys: list[str]) -> int:
    return len(keys) - len(set(keys))


def _wait(workers: list[subprocess.Popen], timeout: float = 180) -> bool:
    return all(w.wait(timeout=timeout) == 0 for w in workers)


# Each case: root -> (outcome as expected, duplicate trainings, files lost).


def torn_tail(root: Path) -> tuple[bool, int, int]:
    marks = _marks(root)
    stand_in_study(root / "s", trials=2, marks=marks).run(lambda s, t: None)
    journal = root / "s" / "study.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"x","trial_id":1,"us')
    study = stand_in_study(root / "s", trials=3, marks=marks)
    study.run(lambda s, t: None)
    kept = journal.read_bytes().startswith(whole)
    return study.distinct() == 3, _duplicates(_trained(marks)), int(not kept)


def damaged_middle(root: Path) -> tuple[bool, int, int]:
    from keras_effnet.errors import ConfigError

    stand_in_study(root / "s", trials=1).run(lambda s, t: None)
    journal = root / "s" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b"garbage\n"
    journal.write_bytes(b"".join(lines))
    try:
        stand_in_study(root / "s", trials=1)
        return False, 0, 0
    except ConfigError as e:
        unchanged = journal.read_bytes() == b"".join(lines)
        return f"{journal}, line 3" in str(e), 0, int(not unchanged)


def interleaved(root: Path) -> tuple[bool, int, int]:
    marks = _marks(root)
    stand_in_study(root / "s", trials=1)
    ok = _wait(start_interleaved(root / "s", marks))
    return ok, _duplicates(_trained(marks)), 0


def two_journal_workers(root: Path) -> tuple[bool, int, int]:
    trained = two_workers(root / "s", _marks(root), trials=6, values=12, seconds=0.5)
    ok = stand_in_study(root / "s", trials=6, values=12).distinct() >= 6
    return ok, _duplicates([key for key, _ in trained]), 0


def huge_grids(root: Path) -> tuple[bool, int, int]:
    from keras_effnet.errors import ConfigError
    from keras_effnet.search import SearchConfig

    refused = 0
    for fields in (dict(target_ratio=float("inf")), dict(target_ratio=1e12),
                   dict(grid_step=1e-9), dict(grid_step=0.002)):
        try:
            SearchConfig(**fields).validate()
        except ConfigError:
            refused += 1
    return refused == 4, 0, 0


def bad_storages(root: Path) -> tuple[bool, int, int]:
    import socket

    from keras_effnet.errors import ConfigError
    from keras_effnet.search import SearchConfig
    from keras_effnet.search.study import open_storage

    root.mkdir(parents=True, exist_ok=True)
    (root / "file").write_text("mine\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    requests = [dict(storage="foo://bar"), dict(storage=f"sqlite:///{root}"),
                dict(storage=f"postgresql://me@127.0.0.1:{port}/db"),
                dict(storage=str(root)), dict(study_dir=str(root / "file"))]
    refused = 0
    for fields in requests:
        config = SearchConfig(**{"study_dir": str(root / "study"), **fields})
        try:
            config.check_request()
            open_storage(config)
        except ConfigError:
            refused += 1
    kept = (root / "file").read_text() == "mine\n"
    return refused == len(requests), 0, int(not kept)


def lite_nas_space(root: Path) -> tuple[bool, int, int]:
    from keras_effnet.search import space
    from keras_effnet.variants import resolve_variant

    lite = list(resolve_variant("efficientnet-lite0").blocks)
    return space.arch_from_params(space.params_from_arch(lite, lite), lite) == lite, 0, 0


def deep_grid(root: Path) -> tuple[bool, int, int]:
    from keras_effnet.search import space
    from keras_effnet.variants import resolve_variant

    grid = space.scaling_grid(resolve_variant("efficientnet-b0", width=0.25, depth=60), 16,
                              10)
    return bool(grid.too_large and grid.candidates), 0, 0


def renamed_and_refused(root: Path) -> tuple[bool, int, int]:
    from keras_effnet.errors import ConfigError

    marks = _marks(root)
    stand_in_study(root / "s", trials=2, marks=marks).run(lambda s, t: None)
    (root / "s").rename(root / "renamed")
    journal = root / "renamed" / "study.journal"
    before = journal.read_bytes()
    try:
        stand_in_study(root / "renamed", trials=2, epochs=3)  # other options: refused
        return False, 0, 0
    except ConfigError:
        pass
    unchanged = journal.read_bytes() == before
    study = stand_in_study(root / "renamed", trials=2, marks=marks)
    study.run(lambda s, t: None)
    return study.distinct() == 2, _duplicates(_trained(marks)), int(not unchanged)


def postgres_workers(root: Path) -> tuple[bool, int, int]:
    """Two workers sharing one study on a fresh PostgreSQL server; then a worker killed
    mid-training, and the same command again."""
    from keras_effnet.bench.postgres import temporary_server

    with temporary_server() as url:
        trained = two_workers(root / "shared" / "s", _marks(root / "shared"), storage=url,
                              trials=6, values=12, seconds=0.5)
        duplicates = _duplicates([key for key, _ in trained])
        killed = _marks(root / "killed")
        worker = start_worker(root / "killed" / "k", killed, storage=url, trials=1,
                              values=2, seconds=600)
        deadline = time.monotonic() + 120
        while not list(killed.iterdir()) and worker.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        study = stand_in_study(root / "killed" / "k", storage=url, trials=1, values=2,
                               marks=killed)
        study.run(lambda s, t: None)
        states = [t.state.name for t in study.study.get_trials(deepcopy=False)]
    return states == ["FAIL", "COMPLETE"], duplicates, 0


CASES: dict[str, Callable[[Path], tuple[bool, int, int]]] = {
    "journal with a torn last record": torn_tail,
    "journal with a damaged middle record": damaged_middle,
    "a lower trial proposing a network another process trains": interleaved,
    "two workers on one journal": two_journal_workers,
    "target_ratio inf or 1e12, grid_step 1e-9 or 0.002": huge_grids,
    "storage foo://, a sqlite directory, an unreachable postgres, a directory journal, "
    "a file study_dir": bad_storages,
    "NAS around efficientnet-lite0 (no squeeze-excite)": lite_nas_space,
    "scaling grid at depth 60 (points past the block limit)": deep_grid,
    "renamed study directory; a rerun with other options": renamed_and_refused,
    "PostgreSQL: two workers, then one killed and the command rerun": postgres_workers,
}


def hostile_search(work_dir: str | os.PathLike, slow_s: float = 120.0,
                   only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Runs :data:`CASES` (or those named in ``only``); counts ``crashed`` (an exception,
    or the wrong outcome), ``hangs`` (slower than ``slow_s``), ``duplicates`` (networks
    trained twice) and ``lost_files``."""
    work = Path(work_dir)
    rows, counts = [], {"tried": 0, "crashed": 0, "hangs": 0, "duplicates": 0,
                        "lost_files": 0}
    for i, (what, case) in enumerate(CASES.items()):
        if only is not None and case.__name__ not in only:
            continue
        started = time.perf_counter()
        try:
            ok, duplicates, lost = case(work / f"case{i}")
            error = "" if ok else "wrong outcome"
        except Exception as e:  # noqa: BLE001 - counting exactly these is the point
            ok, duplicates, lost, error = False, 0, 0, f"{type(e).__name__}: {str(e)[:160]}"
        seconds = time.perf_counter() - started
        counts["tried"] += 1
        counts["crashed"] += not ok
        counts["hangs"] += seconds > slow_s
        counts["duplicates"] += duplicates
        counts["lost_files"] += lost
        rows.append({"case": what, "ok": ok, "seconds": round(seconds, 2),
                     "duplicates": duplicates, "error": error})
    return {**counts, "cases": rows}
