"""Every file in examples/ runs, in a reduced form: its own settings, with flags shrinking the work to one step
on a small random-init model (flags given after --config override the file's keys)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RUN = ["--quiet"]
SMALL_RL = ["--steps", "1", "--group-size", "2", "--max-thought-tokens", "4", "--save-every", "1"]
SMALL_GRPO = ["--prompts-per-step", "1", "--pool-size", "4", "--max-answer-tokens", "3", "--eval-n", "0"]
# What each test below runs; test_every_example_is_run_and_documented checks this covers the folder.
TESTED = {
    "rlp_tiny.yaml",
    "rlp_hf_lora.yaml",
    "grpo_custom_reward.py",
    "ttrl.yaml",
    "audit.yaml",
    "plan.yaml",
    "torchrun_rlp.sh",
}


def test_every_example_is_run_and_documented():
    assert {p.name for p in EXAMPLES.iterdir() if p.is_file()} == TESTED
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    assert all(f"examples/{name}" in docs for name in TESTED)


def _rlp_small(model: Path, out: Path) -> list[str]:
    return ["--model", str(model), *SMALL_RL, "--docs-per-step", "1", "--positions-per-doc", "2",
            "--context-length", "32", "--out", str(out), *RUN]  # fmt: skip


def test_rlp_tiny_yaml(tiny_hf_dir, tmp_path, one_thread):
    out = tmp_path / "rlp"
    assert main(["rlp", "--config", str(EXAMPLES / "rlp_tiny.yaml"), *_rlp_small(tiny_hf_dir, out)]) == 0
    saved = json.loads((out / "rlp_job.json").read_text())
    assert saved["lr"] == 3e-5 and saved["position_weighting"] == "think_prob"  # the file's settings were used
    assert (out / "final" / "config.json").is_file()


def test_rlp_hf_lora_yaml(tiny_hf_dir, tmp_path, one_thread):
    pytest.importorskip("peft")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"The sum of {a} and {a + 1} is {2 * a + 1}, as anyone can check." for a in range(20))
    )
    out = tmp_path / "lora"
    argv = [
        "rlp",
        "--config",
        str(EXAMPLES / "rlp_hf_lora.yaml"),
        "--corpus",
        str(corpus),
        *_rlp_small(tiny_hf_dir, out),
    ]
    assert main(argv) == 0
    assert (out / "final" / "adapter_config.json").is_file()  # LoRA: the adapter is the result
    assert (out / "final" / "merged" / "config.json").is_file()  # lora_save_merged: true


def test_grpo_custom_reward_script(tiny_hf_dir, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "grpo"
    script = str(EXAMPLES / "grpo_custom_reward.py")
    monkeypatch.setattr(
        sys, "argv", [script, "--model", str(tiny_hf_dir), "--out", str(out), "--steps", "1", "--smoke"]
    )
    runpy.run_path(script, run_name="__main__")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/short_answer" in r for r in rows)  # the registered TRL-style reward was in the mix
    assert (out / "final" / "config.json").is_file()


def test_ttrl_yaml(tiny_hf_dir, tmp_path, one_thread):
    out = tmp_path / "ttrl"
    argv = ["ttrl", "--config", str(EXAMPLES / "ttrl.yaml"), "--model", str(tiny_hf_dir), *SMALL_RL, *SMALL_GRPO,
            "--group-size", "3", "--train-samples", "2", "--out", str(out), *RUN]  # fmt: skip
    assert main(argv) == 0
    assert (out / "final" / "config.json").is_file()


def test_audit_yaml(tiny_hf_dir, tmp_path, one_thread):
    out = tmp_path / "audit"
    argv = ["audit", "--config", str(EXAMPLES / "audit.yaml"), "--model", str(tiny_hf_dir), "--task", "add2",
            "--n", "2", "--samples", "2", "--diagnostics", "dtr,think_at_n", "--max-thought-tokens", "8",
            "--prefix-tokens", "4", "--out", str(out), *RUN]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "audit.json").read_text())
    assert {"dtr", "think_at_n"} <= set(report)
    assert (out / "report.html").is_file()


def test_plan_yaml(tiny_hf_dir, tmp_path, one_thread):
    out = tmp_path / "plan"
    argv = ["plan", "--config", str(EXAMPLES / "plan.yaml"), "--model", str(tiny_hf_dir), "--task", "add2",
            "--budget", "12", "--n-train", "2", "--n-heldout", "2", "--horizon", "2", "--warmup-edits", "2",
            "--candidates", "4", "--lm-proposals", "1", "--max-thought-tokens", "8", "--out", str(out), *RUN]  # fmt: skip
    assert main(argv) == 0
    assert (out / "best_chain.json").is_file()


@pytest.mark.slow
def test_torchrun_script_runs_two_ranks(tiny_hf_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    env = {**os.environ, "PATH": f"{Path(torchrun).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    run = subprocess.run(
        ["bash", str(EXAMPLES / "torchrun_rlp.sh"), *_rlp_small(tiny_hf_dir, out), "--docs-per-step", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads((out / "rlp_summary.json").read_text())
    assert summary["world_size"] == 2
