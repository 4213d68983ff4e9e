"""bench/memory.py --quick runs and reports its rows and ratios (the figures themselves are in bench/RESULTS.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a one-layer model at SmolLM2's real vocabulary (the full grid is Qwen3's)
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="CPU peaks read /proc/self (Linux)")
def test_memory_bench_quick_reports_rows_and_ratios(tmp_path):
    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "bench/memory.py"), "--quick", "--no-rlp", "--no-trl", "--json", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    configs = {(r["kind"], r["config"], r["vocab"]) for r in result["rows"]}
    assert ("score", "chunked", 49152) in configs and ("score", "unchunked", 49152) in configs
    assert ("grpo", "ponder micro_batch=1", 49152) in configs
    assert all(r["peak_bytes"] > 0 for r in result["rows"])
    assert result["chunked_over_unchunked"] > 0
    assert result["micro_1_over_one_batch"] > 0 and result["ponder_over_trl"] is None  # TRL left out (--no-trl)
    assert "| score |" in proc.stdout and "chunked_over_unchunked" in proc.stdout
