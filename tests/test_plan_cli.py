"""`ponder plan` end to end and the quick comparison bench, on the seconds-trained tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.cli import main


@pytest.mark.parametrize("method", ["mppi", "hill"])
def test_ponder_plan_end_to_end(method, trained_tiny_dir, tmp_path, capsys, one_thread):
    out = tmp_path / method
    rc = main(
        [
            "plan",
            "--model",
            str(trained_tiny_dir),
            "--task",
            "add2",
            "--method",
            method,
            "--budget",
            "40",
            "--n-train",
            "2",
            "--n-heldout",
            "4",
            "--horizon",
            "2",
            "--warmup-edits",
            "2",
            "--candidates",
            "6",
            "--lm-proposals",
            "2",
            "--max-thought-tokens",
            "16",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "p.json"),
            "--quiet",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "calls" in printed and "real" in printed and "start" in printed
    summary = json.loads((tmp_path / "p.json").read_text())
    best = json.loads((out / "best_chain.json").read_text())
    assert best == summary["best_chain"] and set(best) == {"instructions", "exemplars", "steps", "answer_format"}
    assert 40 <= summary["calls"] <= 40 + 2 * 2 and summary["vocabulary_calls"] == 4
    assert summary["trajectory"][0]["edit"] == "start" and len(summary["curve"]) == summary["evaluations"]
    assert (out / "report.html").read_text().count("<img") == 2
    if method == "mppi":
        assert any(t["predicted"] is not None for t in summary["trajectory"][1:]) or summary["evaluations"] <= 3


def test_plan_rejects_a_bad_start_chain(tmp_path, trained_tiny_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    rc = main(
        [
            "plan",
            "--model",
            str(trained_tiny_dir),
            "--task",
            "add2",
            "--start",
            str(bad),
            "--budget",
            "4",
            "--lm-proposals",
            "0",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 2


@pytest.mark.slow
def test_plan_compare_quick(trained_tiny_dir, tmp_path):
    bench = Path(__file__).resolve().parents[1] / "bench" / "plan_compare.py"
    out = tmp_path / "c.json"
    subprocess.run(
        [
            sys.executable,
            str(bench),
            "--quick",
            "--models",
            str(trained_tiny_dir),
            "--tasks",
            "add2",
            "--budget",
            "80",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    data = json.loads(out.read_text())
    methods = {r["method"] for r in data["rows"]}
    assert methods == {"mppi", "gradient", "policy", "random", "hill", "evolution"}
    for row in data["rows"]:
        assert 0.0 <= row["final_accuracy"] <= 1.0 and "calls_to_best_baseline_accuracy" in row
    assert "call_savings_vs_best_baseline" in data
    assert set(data["call_savings_per_model_task"]) == {f"{trained_tiny_dir}/add2/seed0"}
    assert {r["seed"] for r in data["rows"]} == {0}
