"""The benchmark's hostile sets (issue 16): every request and every unlucky disk of the
reliability section ends cleanly, with nothing decoded past the budget and no partial
file."""

import json

from keras_effnet.bench import reliability, search_hostile
from keras_effnet.bench.sections import reliability as section


def test_hostile_requests_end_cleanly_within_the_budget(tmp_path):
    result = section.serving_hostile(None, tmp_path)
    summary = {k: result[k] for k in ("crashed", "hangs", "past_budget", "unexpected")}
    assert summary == {"crashed": 0, "hangs": 0, "past_budget": 0, "unexpected": 0}, \
        json.dumps(result["requests"], indent=1)
    assert result["tried"] == 15
    json.dumps(result)  # what results.json stores


def test_unlucky_disks_and_misleading_inputs_end_cleanly(tmp_path):
    result = reliability.hostile_files(tmp_path)
    summary = {k: result[k] for k in ("crashed", "hangs", "partial_files", "lost_files")}
    assert summary == {"crashed": 0, "hangs": 0, "partial_files": 0, "lost_files": 0}, \
        json.dumps(result["cases"], indent=1)
    assert result["tried"] == 11
    row = section._hostile_row("(f)", result, "partial_files", "partial files")
    assert row["ok"] and row["result"].startswith("11 tried: 0 crashes, 0 hangs")


def test_the_hostile_search_set_ends_cleanly(tmp_path):
    # The cases in one process; the racing, two-worker and PostgreSQL ones have their
    # own tests (test_search_study.py, test_search_postgres.py).
    quick = ("torn_tail", "damaged_middle", "huge_grids", "bad_storages", "lite_nas_space",
             "deep_grid", "renamed_and_refused")
    result = search_hostile.hostile_search(tmp_path, only=quick)
    summary = {k: result[k] for k in ("tried", "crashed", "hangs", "duplicates",
                                      "lost_files")}
    assert summary == {"tried": 7, "crashed": 0, "hangs": 0, "duplicates": 0,
                       "lost_files": 0}, json.dumps(result["cases"], indent=1)
    row = section._hostile_row("(g)", result, "duplicates", "duplicate trainings")
    assert row["ok"] and row["result"].startswith("7 tried: 0 crashes, 0 hangs, 0 "
                                                  "duplicate trainings, 0 files lost")
