"""bench/rewards_compare.py --quick: every reward trains, the JSON has the documented shape."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "rewards_compare.py"


@pytest.mark.slow
def test_quick_bench_writes_the_documented_json(trained_tiny_dir, tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("rewards_compare", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rc.json"
    bench.main(
        [
            "--quick",
            "--model",
            str(trained_tiny_dir),
            "--task",
            "add2",
            "--out",
            str(tmp_path / "runs"),
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    assert 0 <= data["base_think_accuracy"] <= 1
    assert [r["reward"] for r in data["rows"]] == [
        "verifiable",
        "majority_vote",
        "self_certainty",
        "answer_confidence",
        "answer_likelihood",
    ]
    for row in data["rows"]:
        assert 0 <= row["think_accuracy_mean"] <= 1 and row["think_accuracy_std"] == 0.0  # one seed in --quick
        assert row["mean_thought_tokens"] >= 0 and 0 <= row["format/think_closed"] <= 1
    assert all((tmp_path / "runs" / f"{r}-s0" / "final" / "config.json").is_file() for r in bench.REWARDS)
