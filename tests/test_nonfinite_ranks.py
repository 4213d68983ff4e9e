"""A non-finite reward on one rank: every rank skips the step together (no rank left waiting at a collective)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gloo import launch  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("job", ["grpo", "ttrl"])
def test_nan_rewards_on_one_rank_skip_the_step_on_every_rank(job, tmp_path):
    out = tmp_path / "summary.json"
    launch("nonfinite_worker.py", [job, str(out)], ranks=2, timeout=120)
    summary = json.loads(out.read_text())
    assert summary["steps"] == 2 and summary["world_size"] == 2
    assert summary["skipped_nonfinite"] == 1  # step 1 dropped on both ranks, step 2 trained
