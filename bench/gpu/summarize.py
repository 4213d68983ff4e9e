"""Collect one bench/gpu/check.sh run into ``summary.json`` and print its short report.

Reads the stage file, the pytest JUnit XML and the benches' JSON files that check.sh left in its work
folder, adds the environment (device, versions, commit) and judges the issue's targets:

* the training forward + backward at >= 40% of the bf16 matmul peak measured in the same run;
* on the Qwen3-0.6B shape, >= 2x the trainer tokens/s prime-rl publishes for Qwen3-0.6B on one H100
  (11.9k tokens/s at 11.1% MFU, 16k-token packed sequences): prime-rl counts every token that goes
  through the trainer's forward and backward, and so does ``train_pass.tokens_per_s`` (each shared
  prefix once plus every thought branch), over the forward + backward + optimizer step;
* RLP's documents/s against plain next-token training on the same documents (the paper: 0.44x).

    python bench/gpu/summarize.py WORK_DIR OUT/summary.json [--dry-run]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

PRIME_RL_QWEN3_TOKENS_PER_S = 11_900  # prime-rl benchmarks: Qwen3-0.6B, RL full, seq 16384, 1x H100, 11.1% MFU
MFU_TARGET = 0.40


def environment() -> dict:
    env = {"python": platform.python_version()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception as e:  # noqa: BLE001 - the report must still be written
        env["torch"] = f"unavailable: {e}"
    for name in ("transformers", "pydantic", "flash-attn", "vllm"):
        try:
            env[name] = metadata.version(name)  # without importing it
        except metadata.PackageNotFoundError:
            env[name] = None
    commit = os.environ.get("PONDER_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except Exception:  # noqa: BLE001 - no git on the device copy: pass PONDER_COMMIT
            commit = None
    env["commit"] = commit
    return env


def read_stages(work: Path) -> list[dict]:
    path = work / "stages.txt"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, rc, seconds = line.split()
        rows.append({"stage": name, "exit": int(rc), "seconds": int(seconds), "timed_out": int(rc) in (124, 137)})
    return rows


def read_pytest(work: Path) -> dict | None:
    path = work / "pytest.xml"
    if not path.exists():
        return None
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "")[:300]
        tests.append(
            {"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)), "detail": detail}
        )
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def bench_rows(work: Path) -> dict:
    return {p.stem.removeprefix("rlp_"): json.loads(p.read_text()) for p in sorted(work.glob("rlp_*.json"))}


def targets(benches: dict) -> list[dict]:
    out = []
    for model, b in benches.items():
        train = b.get("train_pass")
        if train:
            out.append(
                {
                    "target": f"{model}: training forward+backward MFU >= {MFU_TARGET:.0%} of the measured peak",
                    "value": train["mfu"],
                    "met": train["mfu"] >= MFU_TARGET,
                }
            )
        if model.startswith("qwen3-0.6b-shape") and train:
            goal = 2 * PRIME_RL_QWEN3_TOKENS_PER_S
            out.append(
                {
                    "target": f"{model}: trainer tokens/s >= 2x prime-rl's Qwen3-0.6B figure ({goal})",
                    "value": train["tokens_per_s"],
                    "met": train["tokens_per_s"] >= goal,
                }
            )
    return out


def report(summary: dict) -> str:
    lines = [f"ponder GPU check{' (DRY RUN on CPU)' if summary['dry_run'] else ''}: {summary['environment']}"]
    for s in summary["stages"]:
        flag = "TIMED OUT" if s["timed_out"] else ("ok" if s["exit"] == 0 else f"exit {s['exit']}")
        lines.append(f"  stage {s['stage']:<28} {flag:<10} {s['seconds']:>4} s")
    if summary["pytest"]:
        lines.append(f"  pytest -m cuda: {summary['pytest']['counts']}")
        lines += [
            f"    {t['outcome']}: {t['test']} {t['detail']}"
            for t in summary["pytest"]["tests"]
            if t["outcome"] != "passed"
        ]
    lines.append(
        "  | model | positions/s | thought tok/s | trainer tok/s | train MFU | SFT tok/s | RLP/SFT docs/s | peak GiB |"
    )
    for model, b in summary["benches"].items():
        row = next((r for r in b["rows"] if r["impl"] == "ponder"), {})
        train, sft = b.get("train_pass") or {}, b.get("sft") or {}
        mems = [x.get("peak_memory_bytes") for x in (row, train, sft) if x.get("peak_memory_bytes")]
        lines.append(
            f"  | {model} | {row.get('positions_per_s', float('nan')):.2f} | {row.get('thought_tokens_per_s', float('nan')):.0f} | "
            f"{train.get('tokens_per_s', float('nan')):.0f} | {train.get('mfu', float('nan')):.1%} | "
            f"{sft.get('tokens_per_s', float('nan')):.0f} | {b.get('rlp_vs_sft_docs_per_s') or float('nan'):.3f} | "
            f"{max(mems) / 2**30 if mems else float('nan'):.2f} |"
        )
        if b.get("failed"):
            lines.append(f"    failed: {b['failed']}")
    lines += [
        f"  target {'MET' if t['met'] else 'NOT MET'}: {t['target']} (measured {t['value']:.4g})"
        for t in summary["targets"]
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = sys.argv[1:] if argv is None else argv
    work, out = Path(args[0]), Path(args[1])
    benches = bench_rows(work)
    memory = work / "memory.json"
    summary = {
        "dry_run": "--dry-run" in args,
        "environment": environment(),
        "stages": read_stages(work),
        "pytest": read_pytest(work),
        "benches": benches,
        "memory": json.loads(memory.read_text()) if memory.exists() else None,
        "targets": [] if "--dry-run" in args else targets(benches),
        "token_counting": "trainer tokens = tokens through the training forward and backward (each shared prefix once, "
        "every <think> c </think> x_t branch), per forward+backward+optimizer step: prime-rl's count",
    }
    out.write_text(json.dumps(summary, indent=2))
    print(report(summary))
    return summary


if __name__ == "__main__":
    main()
