"""bench/memory.py --quick runs and reports its rows and both ratios (the figures themselves are in bench/RESULTS.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="CPU peaks read /proc/self (Linux)")
def test_memory_bench_quick_reports_rows_and_ratios(tmp_path):
    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench/memory.py"), "--quick", "--no-rlp", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    configs = {(r["kind"], r["config"], r["vocab"]) for r in result["rows"]}
    assert ("score", "chunked", 151936) in configs and ("score", "unchunked", 151936) in configs
    assert ("grpo", "ponder micro_batch=1", 151936) in configs
    assert all(r["peak_bytes"] > 0 for r in result["rows"])
    assert result["chunked_over_unchunked"] > 0
    has_trl = any(r["config"] == "trl GRPOTrainer" for r in result["rows"])
    assert (result["ponder_over_trl"] is not None) == has_trl
    assert "| score |" in proc.stdout and "chunked_over_unchunked" in proc.stdout
