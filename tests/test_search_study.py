"""keras_effnet.search.study on Optuna, with a stand-in for training (no TensorFlow):
duplicates trained once, resume after a dead worker, interrupted trials retried and
diverged ones not, a study refusing other options, two processes sharing one journal."""

import json
import os
import subprocess
import sys

import pytest

from keras_effnet.bench.search_hostile import (stand_in_study, start_interleaved,
                                                 two_workers)
from keras_effnet.errors import ConfigError

fake_study = stand_in_study  # training is a sleep that leaves one file in marks


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


@pytest.mark.slow
def test_two_processes_share_one_journal_without_duplicates(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    trained = two_workers(tmp_path / "s", marks, trials=8, values=32, seconds=1.0)
    keys = [key for key, _ in trained]
    assert len(keys) == len(set(keys)), sorted(keys)  # no network trained twice
    assert len({pid for _, pid in trained}) == 2  # both workers trained some
    study = fake_study(tmp_path / "s", trials=8, values=32, twins=2)
    assert 8 <= study.distinct() <= 9  # a worker may finish one more as the other stops
    assert not [t for t in _trials(study) if t.state.name in ("RUNNING", "FAIL")]
    journal = (tmp_path / "s" / "study.journal").read_text().splitlines()
    assert all(json.loads(line) for line in journal)  # both appended whole records


# --- hostile journals, interleavings and reruns (issue 31) -----------------------------


def test_a_torn_last_record_is_cut_and_the_study_continues(tmp_path, capfd):
    marks = tmp_path / "marks"
    marks.mkdir()
    fake_study(tmp_path / "s", trials=2, marks=marks).run(lambda s, t: None)
    journal = tmp_path / "s" / "study.journal"
    whole = journal.read_bytes()
    torn = b'{"op_code":5,"worker_id":"x","trial_id":1,"us'
    with open(journal, "ab") as f:  # the disk filled up halfway through a record
        f.write(torn)
    study = fake_study(tmp_path / "s", trials=3, marks=marks)
    study.run(lambda s, t: None)
    assert study.distinct() == 3 and len(list(marks.iterdir())) == 3  # 2 kept, 1 new
    text = journal.read_bytes()
    assert text.startswith(whole) and all(json.loads(x) for x in text.splitlines())
    assert f"was cut short ({len(torn)} bytes): removed" in capfd.readouterr().err
    # Rerun again: nothing left to repair, nothing trained.
    again = fake_study(tmp_path / "s", trials=3, marks=marks)
    assert again.distinct() == 3 and "warning" not in capfd.readouterr().err


def test_a_last_record_without_its_newline_is_kept(tmp_path, capfd):
    fake_study(tmp_path / "s", trials=2).run(lambda s, t: None)
    journal = tmp_path / "s" / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-1])
    assert fake_study(tmp_path / "s", trials=2).distinct() == 2
    assert journal.read_bytes().endswith(b"}\n")
    assert "ended without its newline: completed" in capfd.readouterr().err


def test_a_damaged_record_in_the_middle_is_one_error_naming_file_and_line(tmp_path):
    fake_study(tmp_path / "s", trials=1).run(lambda s, t: None)
    journal = tmp_path / "s" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"op_code": 4, "trial_i\x00\xff garbage\n'
    journal.write_bytes(b"".join(lines))
    with pytest.raises(ConfigError, match=rf"{journal}, line 3 of {len(lines)}: not a "
                       "journal record") as info:
        fake_study(tmp_path / "s", trials=1)
    assert info.value.field == "storage"
    assert journal.read_bytes() == b"".join(lines)  # left as it was


def test_a_refused_rerun_writes_nothing_and_a_rerun_no_create_record(tmp_path):
    fake_study(tmp_path / "s", trials=1).run(lambda s, t: None)
    journal = tmp_path / "s" / "study.journal"
    before = journal.read_bytes()
    with pytest.raises(ConfigError, match="epochs=10, not 3"):
        fake_study(tmp_path / "s", trials=1, epochs=3)
    fake_study(tmp_path / "s", trials=1)  # continues a complete study
    assert journal.read_bytes() == before


def test_a_renamed_study_directory_continues_its_study(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    fake_study(tmp_path / "s", trials=2, marks=marks).run(lambda s, t: None)
    (tmp_path / "s").rename(tmp_path / "renamed")
    study = fake_study(tmp_path / "renamed", trials=2, marks=marks)
    study.run(lambda s, t: None)
    assert study.study.study_name == "s" and study.distinct() == 2
    assert len(list(marks.iterdir())) == 2  # nothing trained again


def test_ctrl_c_prints_no_optuna_traceback(tmp_path, capfd):
    study = fake_study(tmp_path / "s", trials=1, values=1, twins=1, interrupt=(0,))
    with pytest.raises(KeyboardInterrupt):
        study.run(lambda s, t: None)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed" not in err, err


def test_a_claim_whose_trial_died_is_taken_over(tmp_path):
    """A worker claimed network k0, then was killed before training it: the next run
    claims the next generation and trains it."""
    from keras_effnet.search.study import claim_name

    marks = tmp_path / "marks"
    marks.mkdir()
    study = fake_study(tmp_path / "s", trials=1, values=1, twins=1)
    trial = study.study.ask()
    trial.suggest_categorical("x", [0])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = claim_name("s", "k0", 0)
    trial.set_user_attr("worker", {"host": os.uname().nodename, "pid": dead.pid})
    trial.set_user_attr("candidate", {"key": "k0"})
    trial.set_user_attr("claim", name)
    study.study._storage.create_new_study(study.study.directions, name)
    study = fake_study(tmp_path / "s", trials=1, values=1, twins=1, marks=marks)
    study.run(lambda s, t: None)
    assert [p.name.split("-")[0] for p in marks.iterdir()] == ["k0"]
    retry = _trials(study)[-1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs["claim"] == \
        claim_name("s", "k0", 1)


@pytest.mark.slow
def test_a_lower_trial_proposing_later_does_not_train_twice(tmp_path):
    """Trial 0 is asked first but proposes network k0 while trial 1 (another process)
    already trains it: it waits for trial 1's result instead of training k0 again."""
    marks = tmp_path / "marks"
    marks.mkdir()
    fake_study(tmp_path / "s", trials=1)  # created before either worker starts
    workers = start_interleaved(tmp_path / "s", marks)
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    trained = [p.name for p in marks.iterdir()]
    assert len(trained) == 1 and trained[0].endswith("-1"), trained  # trial 1 only
    study = fake_study(tmp_path / "s", trials=1, values=1, twins=1)
    low, high = _trials(study)
    assert low.user_attrs["duplicate_of"] == 1 and low.value == high.value
