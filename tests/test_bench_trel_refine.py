"""bench/trelawney.py and bench/refine_filter.py in --quick mode: they run and write the documented JSON."""

import json

import pytest

from bench_scripts import load_bench


@pytest.mark.slow
def test_trelawney_bench_quick(tmp_path, one_thread):
    out = tmp_path / "t.json"
    load_bench("trelawney").main(
        ["--quick", "--conditions", "plain,goal-span", "--out", str(tmp_path), "--json", str(out)]
    )
    data = json.loads(out.read_text())
    assert list(data["conditions"]) == ["plain", "goal-span"]
    for row in data["conditions"].values():
        assert set(row["goal"]) == {"mean", "std", "per_seed"} and 0 <= row["goal"]["mean"] <= 1
        assert row["tokens_seen"] > 0
    # spans make documents longer (the bench then gives that condition fewer steps for the same tokens)
    assert data["conditions"]["goal-span"]["mean_doc_tokens"] > data["conditions"]["plain"]["mean_doc_tokens"]


@pytest.mark.slow
def test_refine_bench_quick(trained_tiny_dir, tmp_path, one_thread):
    out = tmp_path / "r.json"
    argv = ["--quick", "--task", "add2", "--teacher", str(trained_tiny_dir), "--student", str(trained_tiny_dir)]
    argv += ["--conditions", "all,loss-band,quantile-gap-drop", "--out", str(tmp_path), "--json", str(out)]
    load_bench("refine_filter").main(argv)
    data = json.loads(out.read_text())
    rows = data["conditions"]
    assert rows["all"]["kept"] == 16 and rows["all"]["documents"] == 16
    assert rows["quantile-gap-drop"]["documents"] == rows["quantile-gap-drop"]["kept"] == 12  # 0.75 of 16
    assert 0 <= data["per_seed"][0]["teacher_train_accuracy"] <= 1
