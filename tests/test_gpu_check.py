"""bench/gpu/check.sh --dry-run: the GPU check's plumbing on the CPU (what CI can run of it)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_summarize():
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "bench" / "gpu" / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_checks_and_wheels_and_writes_a_summary(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PONDER_COMMIT": "abc123"}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu" / "check.sh"), "--dry-run", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    wheels = [
        w for w in (ROOT / "bench" / "gpu" / "wheels.txt").read_text().splitlines() if w and not w.startswith("#")
    ]
    assert wheels and all(w in text for w in wheels)
    for check in ("test_tree_forward_equals_padded_rows[sdpa-bf16]", "test_rlp_cli_two_steps_bf16_then_resume"):
        assert check in text
    for model in ("tiny", "smollm2-135m-shape", "qwen3-0.6b-shape"):
        assert f"--model {model} --device cuda --dtype bf16" in text
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["check.log", "summary.json"]  # the device returns <= 8 files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["environment"]["commit"] == "abc123"
    assert [s["stage"] for s in summary["stages"]] == ["pytest-collect", "bench:tiny"]
    assert all(s["exit"] == 0 for s in summary["stages"])
    tiny = summary["benches"]["tiny"]
    assert tiny["train_pass"]["tokens_per_s"] > 0 and 0 < tiny["train_pass"]["mfu"] < 1
    assert tiny["sft"]["tokens_per_s"] > 0 and tiny["rlp_vs_sft_docs_per_s"] > 0
    assert tiny["rows"][0]["impl"] == "ponder" and tiny["rows"][0]["thought_tokens"] > 0


def test_targets_follow_the_issue():
    summarize = load_summarize()
    benches = {
        "tiny": {"train_pass": {"mfu": 0.45, "tokens_per_s": 1e6}},
        "qwen3-0.6b-shape": {"train_pass": {"mfu": 0.30, "tokens_per_s": 2 * 11_900 - 1}},
    }
    got = {(t["target"].split(":")[0], "MFU" in t["target"]): t["met"] for t in summarize.targets(benches)}
    assert got == {("tiny", True): True, ("qwen3-0.6b-shape", True): False, ("qwen3-0.6b-shape", False): False}
    benches["qwen3-0.6b-shape"]["train_pass"]["tokens_per_s"] = 2 * 11_900
    assert [t["met"] for t in summarize.targets(benches)][-1] is True
