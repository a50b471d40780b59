"""Running a search as an Optuna study: storage, samplers, resume, duplicates, stopping.

Storage: by default a journal file in the study directory (crash-safe appends, nothing
to start); ``storage="postgresql://..."`` (any RDB URL) lets workers on many machines run
the same command against one study. Every result lives in the storage, so the same
command, rerun, continues where the study stands.

Resume after ``kill -9``: a trial whose process died stays RUNNING in the storage. A
journal has no heartbeat, so each trial records its worker (host, pid); a RUNNING trial
whose worker on this host is gone is failed and re-queued (Optuna's
``RetryHeartbeatStaleTrialCallback``) when the next trial starts, and its training
resumes from the checkpoint in its run directory. With an RDB URL, Optuna's own
heartbeat does the same for workers on other machines. Interrupted (Ctrl-C) trials are
re-queued too; a candidate whose loss diverged is a result, not retried.

Duplicates: a proposal whose network (:func:`~keras_effnet.search.space.network_key`)
already has a result copies it without training. Before training, a trial *claims* its
network in the storage: the claim is a study named ``<study>:claim:<key>:<generation>``,
and creating a study under a taken name fails atomically in every storage (a journal
replays its records in one order; an RDB has a unique name column), so of any number of
workers proposing one network, whatever the interleaving, exactly one trains it and the
others wait for its result. A claim whose trial died or was interrupted is taken over
at the next generation (by the retry or by a waiting twin). ``trials`` counts distinct
networks, so duplicates cost nothing and do not count.

A journal whose last record was cut (a full disk, a lost NFS mount) has that record cut
off, with a warning, before the study opens; a damaged record elsewhere is refused with
one error naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import socket
import time
import warnings
from typing import Any, Callable

from keras_effnet.errors import ConfigError
from keras_effnet.run_dir import jsonable
from keras_effnet.search.config import RESUME_FIELDS, SearchConfig, redacted
from keras_effnet.search.journal import repair_journal

__all__ = ["import_optuna", "open_storage", "repair_journal", "claim_name", "is_claim",
           "plain", "worker", "requeue", "recover", "Proposal", "Study"]

MAX_RETRIES = 3
POLL_S = 5.0
HEARTBEAT_S, GRACE_S = 60, 180  # RDB storages: Optuna's own stale-trial detection
# A sampler that only proposes networks already trained (a converged TPE, an exhausted
# grid) ends the run after this many proposals per distinct candidate asked for.
PROPOSALS_PER_TRIAL = 10
CLAIM = ":claim:"  # in the name of a network's claim study (see the module docstring)


def import_optuna():
    """Optuna, with its per-trial INFO lines off (the search prints its own)."""
    try:
        import optuna
    except ImportError:
        raise ImportError("keras_effnet.search runs on Optuna: pip install "
                          "'keras_effnet[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial ended by Ctrl-C or a diverged loss: the search says so in one line of its
    # own, so Optuna's "Trial 3 failed" and its traceback are dropped.
    trial_logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _ReportedElsewhere) for f in trial_logger.filters):
        trial_logger.addFilter(_ReportedElsewhere())
    # The retry callback and GridSampler-with-enqueue are marked experimental; the
    # search pins what it uses in its tests.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


class _ReportedElsewhere(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, KeyboardInterrupt)
                    or type(error).__name__ == "NonFiniteLossError")


def open_storage(config: SearchConfig) -> Any:
    """The study's storage: ``config.storage`` when it is an RDB URL, else a journal
    file (``config.storage`` or ``<study_dir>/study.journal``), repaired first
    (:func:`repair_journal`).

    Raises:
        ConfigError: (field ``storage``) the storage cannot be opened: an unknown URL
            scheme or missing driver, an unreachable server, a path that is a directory.
    """
    optuna = import_optuna()
    if config.storage and "://" in config.storage:
        # A server that drops packets would hold the first connection for minutes.
        connect = ({"connect_args": {"connect_timeout": 10}}
                   if config.storage.startswith("postgresql") else {})
        try:
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(
                        config.storage, engine_kwargs=connect,
                        heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                        heartbeat_stale_trial_callback=requeue)
                except Exception as e:  # noqa: BLE001 - re-raised below unless a race
                    # Workers started together on an empty database all create Optuna's
                    # tables; the losers see a unique violation, and the tables exist.
                    if type(e).__name__ != "IntegrityError" or attempt == 2:
                        raise
                    time.sleep(0.5 * (attempt + 1))
        except Exception as e:  # SQLAlchemy and the drivers raise many types
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot open storage {redacted(config.storage)!r} "
                              f"({type(e).__name__}: {reason[:300]})", "storage") from None
    path = config.storage or os.path.join(config.resolved_study_dir(), "study.journal")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        from optuna.storages.journal import JournalFileBackend
        backend = JournalFileBackend(path)
        repair_journal(path)
    except OSError as e:
        raise ConfigError(f"cannot open the journal {path} ({e.strerror or e}); pass a "
                          "storage (or study_dir) that is a file you can write.",
                          "storage" if config.storage else "study_dir") from None
    return optuna.storages.JournalStorage(backend)


def claim_name(study_name: str, key: str, generation: int) -> str:
    """The name of the study that claims network ``key`` for one trial."""
    return f"{study_name}{CLAIM}{key}:{generation}"


def is_claim(study_name: str) -> bool:
    return CLAIM in study_name


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (what a storage keeps): tuples become
    lists, numpy numbers Python ones."""
    return json.loads(json.dumps(value, default=jsonable))


def worker() -> dict[str, Any]:
    """This process, as a trial records it."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _dead(owner: dict[str, Any] | None, current: int | None, number: int) -> bool:
    """Whether a RUNNING trial's worker is known to be gone: on this host, and either
    its pid is not alive or it is this process but not the trial it is running."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    if owner.get("pid") == os.getpid():
        return number != current
    return not _pid_alive(int(owner.get("pid", -1)))


def requeue(study: Any, failed: Any) -> bool:
    """Queues a failed trial's parameters again (what Optuna's
    ``RetryHeartbeatStaleTrialCallback`` does, minus the failed run's own records, such
    as the dead worker, which would make the retry look dead too). False once a trial
    has been retried :data:`MAX_RETRIES` times."""
    optuna = import_optuna()
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > MAX_RETRIES:
        return False
    system_attrs = {**failed.system_attrs, "retry_history": history,
                    "failed_trial": history[0]}
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=failed.params,
        distributions=failed.distributions, system_attrs=system_attrs))
    return True


def recover(study: Any, current: int | None = None) -> list[int]:
    """Fails the RUNNING trials of dead workers on this host, and re-queues every
    failed trial that was interrupted rather than diverged (once). Returns the numbers
    of the trials re-queued."""
    optuna = import_optuna()
    state = optuna.trial.TrialState
    storage = study._storage  # noqa: SLF001 - the public Study has no "fail this trial"
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        if _dead(t.user_attrs.get("worker"), current, t.number):
            try:
                storage.set_trial_state_values(t._trial_id, state.FAIL)  # noqa: SLF001
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first
    trials = study.get_trials(deepcopy=False)
    handled = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t.number for t in trials
            if t.state == state.FAIL and "error" not in t.user_attrs
            and t.number not in handled and requeue(study, t)]


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What the sampler proposed, resolved into a network."""

    params: dict[str, Any]  # alpha/beta/gamma, or the stage choices
    variant: Any
    image_size: int
    key: str
    slug: str  # the run directory's name
    info: dict[str, Any]  # macs, params_count, ratios, arch: what result.json shows


class Study:
    """One search: the Optuna study plus what its objective needs.

    The search (``keras_effnet.search.runner``) says what a trial is:
    ``propose(trial) -> Proposal`` (the sampler's parameters as a network),
    ``evaluate(proposal, trial) -> dict`` (its training: ``top1``, ``train_s``, ...)
    and ``objective_values(result)`` (what Optuna optimises); this class knows Optuna.
    """

    def __init__(self, config: SearchConfig, *, directions: list[str], sampler_fn:
                 Callable[[int], Any], propose: Callable[[Any], Proposal],
                 evaluate: Callable[[Proposal, Any], dict[str, Any]],
                 objective_values: Callable[[dict[str, Any]], Any],
                 first: dict[str, Any] | None, log: Callable[[str], None],
                 storage: Any = None):
        optuna = import_optuna()
        self.config, self.log = config, log
        self._propose, self._evaluate, self._values = propose, evaluate, objective_values
        storage = storage if storage is not None else open_storage(config)
        name = self._study_name(storage)
        # The creator samples from the seed; a worker joining (or resuming) a study gets
        # its own stream, or two workers would propose the same candidates in lockstep.
        # A study already there is loaded without a create record (a journal keeps
        # every record it is sent); of two workers creating it together, the storage
        # lets one create it and the other joins.
        try:
            storage.get_study_id_from_name(name)
            created = False
        except KeyError:
            try:
                self.study = optuna.create_study(storage=storage, study_name=name,
                                                 directions=directions,
                                                 sampler=sampler_fn(config.seed))
                created = True
            except optuna.exceptions.DuplicatedStudyError:
                created = False
        if not created:
            seed = random.SystemRandom().randrange(2 ** 31)
            self.study = optuna.load_study(study_name=name, storage=storage,
                                           sampler=sampler_fn(seed))
        self._check_identity()
        if created and first is not None:
            self.study.enqueue_trial(first)

    def _study_name(self, storage: Any) -> str:
        """``config.study_name()``, or the one study that the study directory's own
        journal holds under another name (the directory was renamed or moved)."""
        name = self.config.study_name()
        if self.config.storage:
            return name
        names = [s.study_name for s in storage.get_all_studies()
                 if not is_claim(s.study_name)]
        if len(names) == 1 and names[0] != name:
            self.log(f"{self.config.resolved_study_dir()} holds study {names[0]!r} (the "
                     "directory was renamed): continuing it.")
            return names[0]
        return name

    def _check_identity(self) -> None:
        mine = plain(self.config.identity())
        saved = self.study.user_attrs.get("config")
        if saved is None:
            self.study.set_user_attr("config", mine)
            return
        for field in RESUME_FIELDS:
            if saved.get(field) != mine.get(field):
                raise ConfigError(
                    f"study {self.study.study_name!r} was run with {field}="
                    f"{saved.get(field)!r}, not {mine.get(field)!r}: use another study_dir "
                    "(or storage) for a new study, or that study's options to continue it.",
                    field)

    # --- counting -----------------------------------------------------------------------

    def results(self) -> list[Any]:
        """The trials with a result: completed, or failed because the candidate's loss
        diverged (a property of the network, so it counts, and is not trained again)."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state == state.COMPLETE or (t.state == state.FAIL
                                                  and "error" in t.user_attrs)]

    def distinct(self) -> int:
        """How many distinct networks have a result."""
        return len({t.user_attrs["candidate"]["key"] for t in self.results()
                    if "candidate" in t.user_attrs})

    # --- the objective ------------------------------------------------------------------

    def _twin(self, trial: Any, key: str) -> Any:
        """A finished trial of the same network, waiting while another trial holds the
        network's claim; None once ``trial`` holds it and should train the network."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        storage = self.study._storage  # noqa: SLF001 - claims are studies of the storage
        while True:
            # The claim before the trials: a claim's trial records it before creating
            # it, so a claim seen here has its trial's record in the read that follows.
            generation = self._claim_generation(storage, key)
            same = [t for t in self.study.get_trials(deepcopy=False)
                    if t.number != trial.number
                    and t.user_attrs.get("candidate", {}).get("key") == key]
            done = [t for t in same if t.state == state.COMPLETE or
                    (t.state == state.FAIL and "error" in t.user_attrs)]
            if done:
                return done[0]
            holders = [] if generation is None else [
                t for t in same if t.user_attrs.get("claim") ==
                claim_name(self.study.study_name, key, generation)]
            if any(t.state == state.RUNNING for t in holders):
                time.sleep(POLL_S)  # its worker is training it, or losing the race
                recover(self.study, current=trial.number)
                continue
            # No claim yet, or every trial that held or tried it is gone: take the next.
            if self._claim(storage, trial, key, 0 if generation is None else generation + 1):
                return None

    def _claim_generation(self, storage: Any, key: str) -> int | None:
        """The latest claim's generation for network ``key`` (None: never claimed)."""
        generation = None
        while True:
            try:
                storage.get_study_id_from_name(
                    claim_name(self.study.study_name, key, 0 if generation is None
                               else generation + 1))
            except KeyError:
                return generation
            generation = 0 if generation is None else generation + 1

    def _claim(self, storage: Any, trial: Any, key: str, generation: int) -> bool:
        """Whether ``trial`` won the claim on ``key`` at ``generation``. The trial
        records the claim it tries first (a claim with no such record is abandoned) and
        clears it when another worker won."""
        optuna = import_optuna()
        name = claim_name(self.study.study_name, key, generation)
        trial.set_user_attr("claim", name)
        try:
            storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
        except optuna.exceptions.DuplicatedStudyError:
            trial.set_user_attr("claim", None)
            return False
        return True

    def objective(self, trial: Any) -> Any:
        from keras_effnet.train.trainer import NonFiniteLossError

        started = time.perf_counter()
        recover(self.study, current=trial.number)
        trial.set_user_attr("worker", worker())
        proposal = self._propose(trial)
        trial.set_user_attr("candidate", {"key": proposal.key, "params": proposal.params,
                                          "image_size": proposal.image_size,
                                          **proposal.info})
        twin = self._twin(trial, proposal.key)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            if "error" in twin.user_attrs:  # diverged before: diverges again
                trial.set_user_attr("error", twin.user_attrs["error"])
                raise NonFiniteLossError(twin.user_attrs["error"])
            trial.set_user_attr("result", twin.user_attrs["result"])
            return self._values(twin.user_attrs["result"])
        try:
            result = self._evaluate(proposal, trial)
        except NonFiniteLossError as e:
            trial.set_user_attr("error", str(e))  # a property of the candidate: no retry
            raise
        result["overhead_s"] = time.perf_counter() - started - result["train_s"]
        trial.set_user_attr("result", plain(result))
        return self._values(result)

    def run(self, on_trial: Callable[[Any, Any], None]) -> None:
        """Trains candidates until ``config.trials`` distinct networks have results (or
        the sampler runs out of new ones)."""
        from keras_effnet.train.trainer import NonFiniteLossError

        recover(self.study)
        if self.distinct() >= self.config.trials:
            self.log(f"study {self.study.study_name!r} already has {self.distinct()} "
                     f"distinct candidates (trials={self.config.trials}): nothing to train.")
            return

        def after(study: Any, frozen: Any) -> None:
            on_trial(self, frozen)
            if self.distinct() >= self.config.trials:
                study.stop()

        self.study.optimize(self.objective,
                            n_trials=PROPOSALS_PER_TRIAL * self.config.trials,
                            callbacks=[after], catch=(NonFiniteLossError,),
                            gc_after_trial=True)

