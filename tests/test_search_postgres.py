"""The search's scale-out storage on a real PostgreSQL server that the tests start
(``keras_effnet.bench.postgres``: Debian's binaries, installed with apt-get when missing):
two worker processes sharing one study train no network twice, and a killed worker's
trial is retried. Training is a stand-in (keras_effnet.bench.search_hostile: a sleep).
"""

import os
import signal
import time

import pytest

from keras_effnet.bench.postgres import temporary_server
from keras_effnet.bench.search_hostile import stand_in_study as fake_study
from keras_effnet.bench.search_hostile import start_worker, two_workers


@pytest.fixture(scope="module")
def postgres_url():
    # No skip when the server is missing: temporary_server installs it, or fails loudly.
    with temporary_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_without_duplicates(tmp_path, postgres_url):
    marks = tmp_path / "marks"
    marks.mkdir()
    study_dir = tmp_path / "shared"  # the study's name: one per test in one database
    trained = two_workers(study_dir, marks, storage=postgres_url, trials=6, values=12,
                          seconds=1.0)
    keys = [key for key, _ in trained]
    assert len(keys) == len(set(keys)), sorted(keys)  # no network trained twice
    assert len({pid for _, pid in trained}) == 2  # both workers trained some
    study = fake_study(study_dir, storage=postgres_url, trials=6, values=12, twins=2)
    assert 6 <= study.distinct() <= 7  # a worker may finish one more as the other stops
    states = [t.state.name for t in study.study.get_trials(deepcopy=False)]
    assert "RUNNING" not in states and "FAIL" not in states
    assert not (study_dir / "study.journal").exists()  # the database holds the study


@pytest.mark.slow
def test_a_killed_workers_postgres_trial_is_retried(tmp_path, postgres_url):
    marks = tmp_path / "marks"
    marks.mkdir()
    study_dir = tmp_path / "killed"
    worker = start_worker(study_dir, marks, storage=postgres_url, trials=1, values=2,
                          seconds=600)
    deadline = time.monotonic() + 120
    while not list(marks.iterdir()) and worker.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # mid-training, without a word to the server
    worker.wait()
    assert len(list(marks.iterdir())) == 1
    study = fake_study(study_dir, storage=postgres_url, trials=1, values=2, twins=2,
                       marks=marks)  # the same command, again
    study.run(lambda s, t: None)
    killed, retry = study.study.get_trials(deepcopy=False)
    assert killed.state.name == "FAIL" and "error" not in killed.user_attrs
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.system_attrs["retry_history"] == [0]
    assert retry.user_attrs["claim"].endswith(":1")  # took the dead trial's claim over
    assert sorted(p.name.split("-")[0] for p in marks.iterdir()) == ["k0", "k0"]
