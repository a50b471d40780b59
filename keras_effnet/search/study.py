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
already has a result copies it without training; one that another worker is training
right now waits for it (the lower trial number trains, so two never wait on each other).
``trials`` counts distinct networks, so duplicates cost nothing and do not count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import time
import warnings
from typing import Any, Callable

from keras_effnet.errors import ConfigError
from keras_effnet.run_dir import jsonable
from keras_effnet.search.config import RESUME_FIELDS, SearchConfig

__all__ = ["import_optuna", "open_storage", "plain", "worker", "requeue", "recover",
           "Proposal", "Study"]

MAX_RETRIES = 3
POLL_S = 5.0
HEARTBEAT_S, GRACE_S = 60, 180  # RDB storages: Optuna's own stale-trial detection
# A sampler that only proposes networks already trained (a converged TPE, an exhausted
# grid) ends the run after this many proposals per distinct candidate asked for.
PROPOSALS_PER_TRIAL = 10


def import_optuna():
    """Optuna, with its per-trial INFO lines off (the search prints its own)."""
    try:
        import optuna
    except ImportError:
        raise ImportError("keras_effnet.search runs on Optuna: pip install "
                          "'keras_effnet[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The retry callback and GridSampler-with-enqueue are marked experimental; the
    # search pins what it uses in its tests.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(config: SearchConfig) -> Any:
    """The study's storage: ``config.storage`` when it is an RDB URL, else a journal
    file (``config.storage`` or ``<study_dir>/study.journal``)."""
    optuna = import_optuna()
    if config.storage and "://" in config.storage:
        return optuna.storages.RDBStorage(config.storage, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S,
                                          heartbeat_stale_trial_callback=requeue)
    path = config.storage or os.path.join(config.resolved_study_dir(), "study.journal")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(path))


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
                 first: dict[str, Any] | None, log: Callable[[str], None]):
        optuna = import_optuna()
        self.config, self.log = config, log
        self._propose, self._evaluate, self._values = propose, evaluate, objective_values
        storage = open_storage(config)
        name = config.study_name()
        # The creator samples from the seed; a worker joining (or resuming) a study gets
        # its own stream, or two workers would propose the same candidates in lockstep.
        # Creation is atomic in the storage: of two workers starting together, one
        # creates and the other joins.
        try:
            self.study = optuna.create_study(storage=storage, study_name=name,
                                             directions=directions,
                                             sampler=sampler_fn(config.seed))
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            seed = random.SystemRandom().randrange(2 ** 31)
            self.study = optuna.load_study(study_name=name, storage=storage,
                                           sampler=sampler_fn(seed))
            created = False
        self._check_identity()
        if created and first is not None:
            self.study.enqueue_trial(first)

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
        """A finished trial of the same network, waiting for one that a lower-numbered
        trial is training right now; None when this trial should train it."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        while True:
            same = [t for t in self.study.get_trials(deepcopy=False)
                    if t.number != trial.number
                    and t.user_attrs.get("candidate", {}).get("key") == key]
            done = [t for t in same if t.state == state.COMPLETE or
                    (t.state == state.FAIL and "error" in t.user_attrs)]
            if done:
                return done[0]
            if not any(t.state == state.RUNNING and t.number < trial.number for t in same):
                return None
            time.sleep(POLL_S)
            recover(self.study, current=trial.number)

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

