"""The benchmark's hostile sets (issue 16): every request and every unlucky disk of the
reliability section ends cleanly, with nothing decoded past the budget and no partial
file."""

import json

from keras_effnet.bench import reliability
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
    assert result["tried"] == 10
    row = section._hostile_row("(f)", result, "partial_files", "partial files")
    assert row["ok"] and row["result"].startswith("10 tried: 0 crashes, 0 hangs")
