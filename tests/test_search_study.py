"""keras_effnet.search.study on Optuna, with a stand-in for training (no TensorFlow):
duplicates trained once, resume after a dead worker, interrupted trials retried and
diverged ones not, a study refusing other options, two processes sharing one journal."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keras_effnet.errors import ConfigError
from keras_effnet.search import SearchConfig
from keras_effnet.search.study import Proposal, Study, import_optuna

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def fake_study(study_dir, trials=3, storage=None, values=8, twins=2, seconds=0.0,
               marks=None, diverge=(), seed=0, epochs=10, interrupt=()):
    """A Study whose candidates are ``x`` in ``range(values)``; ``x`` and ``x + values //
    twins`` are the same network (key ``x % (values // twins)``). Training is a sleep
    that records the key in ``marks`` (a directory: one file per training)."""
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


def _trials(study):
    return study.study.get_trials(deepcopy=False)


def _keys(study):
    return [t.user_attrs.get("candidate", {}).get("key") for t in _trials(study)]


def test_duplicates_copy_the_result_and_are_not_trained(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    study = fake_study(tmp_path / "s", trials=4, values=8, twins=2, marks=marks)
    study.run(lambda s, t: None)
    trained = sorted(p.name.split("-")[0] for p in marks.iterdir())
    assert trained == sorted(set(trained)) and len(trained) == 4  # each key once
    assert study.distinct() == 4
    duplicates = [t for t in _trials(study) if "duplicate_of" in t.user_attrs]
    for t in duplicates:
        twin = _trials(study)[t.user_attrs["duplicate_of"]]
        assert twin.user_attrs["candidate"]["key"] == t.user_attrs["candidate"]["key"]
        assert t.value == twin.value and t.user_attrs["result"] == twin.user_attrs["result"]


def test_rerun_continues_the_study_and_trains_nothing_twice(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    fake_study(tmp_path / "s", trials=2, marks=marks).run(lambda s, t: None)
    study = fake_study(tmp_path / "s", trials=2, marks=marks)
    study.run(lambda s, t: None)
    assert len(list(marks.iterdir())) == 2  # already complete: nothing trained
    study = fake_study(tmp_path / "s", trials=3, marks=marks)
    study.run(lambda s, t: None)
    trained = [p.name.split("-")[0] for p in marks.iterdir()]
    assert len(trained) == 3 == len(set(trained)) and study.distinct() == 3


def test_a_dead_workers_trial_is_failed_and_retried(tmp_path):
    study = fake_study(tmp_path / "s", trials=1)
    # A worker that took trial 0 and died (kill -9) without a word to the storage.
    trial = study.study.ask()
    trial.suggest_categorical("x", list(range(8)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("worker", {"host": os.uname().nodename, "pid": dead.pid})
    study = fake_study(tmp_path / "s", trials=1)  # the same command, again
    study.run(lambda s, t: None)
    first, retry = _trials(study)[0], _trials(study)[1]
    assert first.state.name == "FAIL"
    assert retry.state.name == "COMPLETE" and retry.params == first.params
    assert retry.system_attrs["retry_history"] == [0]
    assert retry.user_attrs["worker"]["pid"] == os.getpid()


def test_a_live_workers_trial_is_left_alone(tmp_path):
    study = fake_study(tmp_path / "s", trials=1)
    trial = study.study.ask()
    trial.suggest_categorical("x", list(range(8)))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trial.set_user_attr("worker", {"host": os.uname().nodename, "pid": alive.pid})
        study = fake_study(tmp_path / "s", trials=1)
        study.run(lambda s, t: None)
        assert _trials(study)[0].state.name == "RUNNING"
    finally:
        alive.kill()
        alive.wait()


def test_interrupted_trials_are_retried_diverged_ones_are_results(tmp_path):
    study = fake_study(tmp_path / "s", trials=8, values=8, twins=1, diverge=(3,),
                       interrupt=(5,))
    with pytest.raises(KeyboardInterrupt):
        study.run(lambda s, t: None)
    study = fake_study(tmp_path / "s", trials=8, values=8, twins=1, diverge=(3,))
    study.run(lambda s, t: None)
    rows = _trials(study)
    diverged = [t for t in rows if "error" in t.user_attrs]
    assert diverged and all(t.state.name == "FAIL" for t in diverged)
    assert not any(t.system_attrs.get("retry_history") == [d.number]
                   for t in rows for d in diverged)
    interrupted = next(t for t in rows if t.state.name == "FAIL" and "error" not in t.user_attrs)
    retry = next(t for t in rows if interrupted.number in t.system_attrs.get("retry_history", []))
    assert retry.state.name == "COMPLETE" and retry.params == interrupted.params
    trained = [k for t, k in zip(_trials(study), _keys(study)) if "duplicate_of" not in
               t.user_attrs and t.state.name == "COMPLETE"]
    assert sorted(trained) == [f"k{x}" for x in (0, 1, 2, 4, 5, 6, 7)]  # once each
    assert study.distinct() == 8  # the diverged one counts: it has its result


def test_a_study_refuses_other_options(tmp_path):
    fake_study(tmp_path / "s", trials=1).run(lambda s, t: None)
    with pytest.raises(ConfigError, match="was run with epochs=10, not 3") as info:
        fake_study(tmp_path / "s", trials=1, epochs=3)
    assert info.value.field == "epochs"
    fake_study(tmp_path / "s", trials=2)  # trials may grow


def test_an_rdb_url_holds_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    fake_study(tmp_path / "s", trials=2, storage=url).run(lambda s, t: None)
    study = fake_study(tmp_path / "s", trials=2, storage=url)
    assert study.distinct() == 2 and not (tmp_path / "s" / "study.journal").exists()


WORKER = """
import sys
sys.path.insert(0, {here!r})
from test_search_study import fake_study
fake_study({study_dir!r}, trials=8, values=32, twins=2, seconds=1.0,
           marks={marks!r}).run(lambda s, t: None)
"""


@pytest.mark.slow
def test_two_processes_share_one_journal_without_duplicates(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    code = WORKER.format(here=str(HERE), study_dir=str(tmp_path / "s"), marks=str(marks))
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    trained = [p.name.split("-") for p in marks.iterdir()]
    keys = [key for key, *_ in trained]
    assert len(keys) == len(set(keys)), sorted(keys)  # no network trained twice
    assert len({pid for _, pid, _ in trained}) == 2  # both workers trained some
    study = fake_study(tmp_path / "s", trials=8, values=32, twins=2)
    assert 8 <= study.distinct() <= 9  # a worker may finish one more as the other stops
    assert not [t for t in _trials(study) if t.state.name in ("RUNNING", "FAIL")]
    journal = (tmp_path / "s" / "study.journal").read_text().splitlines()
    assert all(json.loads(line) for line in journal)  # both appended whole records
