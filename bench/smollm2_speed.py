"""RLP positions/s and GRPO completions/s on SmolLM2-135M: threads vs processes, LoRA vs full (issue 27).

Each configuration is a real ``ponder rlp`` / ``ponder grpo`` run of a few steps, launched as users launch
it: one process with ``OMP_NUM_THREADS`` threads, or ``torchrun --nproc_per_node N`` (gloo, one thread per
rank). The rate is the work the engine did (positions or completions, summed over ranks) over its training
seconds (sampling, scoring and updates; not the model load), read from the run's ``*_summary.json``. The
configurations run interleaved, ``--repeats`` rounds, so that a change in the machine's load falls on all
of them alike; the table gives each one's median and its ratio to the first configuration of its job.

    OMP_NUM_THREADS=1 python bench/smollm2_speed.py --corpus /tmp/realtext/train.jsonl --json speed.json
    python bench/smollm2_speed.py --model tiny --steps 1 --repeats 1     # a seconds-long check of the harness
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Config:
    """One way to run a job: ``ranks`` processes of ``threads`` torch threads each, LoRA of ``lora`` (0: full)."""

    job: str  # rlp | grpo
    ranks: int
    threads: int
    lora: int = 0

    @property
    def name(self) -> str:
        weights = f"LoRA r={self.lora}" if self.lora else "full"
        return f"{self.job}: {self.ranks} process{'es' if self.ranks > 1 else ''} x {self.threads} thread{'s' if self.threads > 1 else ''}, {weights}"


def default_configs(cores: int, lora: int) -> list[Config]:
    """Per job: 1 process x 1 thread (the reference), 1 x ``cores`` threads, ``cores`` processes x 1 thread,
    and the last two again with LoRA."""
    out = []
    for job in ("rlp", "grpo"):
        out += [Config(job, 1, 1), Config(job, 1, cores), Config(job, cores, 1)]
        out += [Config(job, 1, cores, lora), Config(job, cores, 1, lora)]
    return out


def job_argv(cfg: Config, args, out: Path) -> list[str]:
    """The ``ponder`` arguments of one run; every run of a job does the same work per step."""
    common = ["--model", args.model, "--steps", str(args.steps), "--out", str(out), "--quiet", "--save-every", "1000"]
    common += ["--lora-rank", str(cfg.lora)] if cfg.lora else []
    if cfg.job == "rlp":
        return ["rlp", *common, "--corpus", args.corpus, "--docs-per-step", str(args.docs), "--positions-per-doc",
                str(args.positions), "--group-size", str(args.group), "--max-thought-tokens", str(args.thought),
                "--context-length", str(args.context)]  # fmt: skip
    # self_certainty scores every completion differently, so every group trains (no group is dropped as equal).
    return ["grpo", *common, "--task", args.task, "--prompts-per-step", str(args.prompts), "--group-size",
            str(args.group), "--max-thought-tokens", str(args.thought), "--reward", "self_certainty",
            "--no-filter-hard", "--eval-n", "0"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ponder_command(argv: list[str], ranks: int = 1) -> list[str]:
    """The command that runs ``ponder ARGV``: in this process's Python, or with ``ranks`` > 1 under
    ``torch.distributed.run --nproc_per_node ranks`` on a free local port (gloo on CPU)."""
    if ranks <= 1:
        return [sys.executable, "-m", "ponder.cli", *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
            "--master_port", str(free_port()), "-m", "ponder.cli", *argv]  # fmt: skip


def launch(cfg: Config, argv: list[str]) -> float:
    """Run it; returns the wall seconds of the whole launch (model loads included)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "PYTHONPATH": str(ROOT / "src")}
    cmd = ponder_command(argv, cfg.ranks)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{cfg.name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - start


def rate(summary: dict) -> tuple[float, float]:
    """(work units, training seconds) of a run's summary: positions (RLP) or completions (GRPO) over all ranks."""
    key = "positions_per_rank" if "positions_per_rank" in summary else "completions_per_rank"
    return float(sum(summary[key])), float(summary["seconds"])


def run_all(args) -> list[dict]:
    cores = args.cores or os.cpu_count() or 1
    configs = [c for c in default_configs(cores, args.lora) if c.job in args.jobs]
    rows = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="smol-speed-") as tmp:
        for round_ in range(args.repeats):
            for i, cfg in enumerate(configs):
                out = Path(tmp) / f"r{round_}-{i}"
                wall = launch(cfg, job_argv(cfg, args, out))
                summary = json.loads((out / f"{cfg.job}_summary.json").read_text())
                work, seconds = rate(summary)
                rows[cfg].append({"work": work, "seconds": seconds, "wall": wall})
                print(f"round {round_} {cfg.name}: {work:.0f} in {seconds:.1f} s ({work / seconds:.3f}/s), wall {wall:.1f} s",
                      flush=True)  # fmt: skip
    results = []
    for cfg, runs in rows.items():
        per_s = statistics.median(r["work"] / r["seconds"] for r in runs)
        results.append({"config": cfg.name, "job": cfg.job, "ranks": cfg.ranks, "threads": cfg.threads,
                        "lora": cfg.lora, "per_second": per_s, "runs": runs})  # fmt: skip
    for job in args.jobs:
        ref = next((r["per_second"] for r in results if r["job"] == job), None)
        for r in results:
            if r["job"] == job and ref:
                r["ratio"] = r["per_second"] / ref
    return results


def table(results: list[dict]) -> str:
    lines = ["| configuration | work / s (median) | ratio to 1 x 1 full | training s per run (median) | wall s (median) |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in results:
        unit = "positions" if r["job"] == "rlp" else "completions"
        secs = statistics.median(x["seconds"] for x in r["runs"])
        wall = statistics.median(x["wall"] for x in r["runs"])
        lines.append(
            f"| {r['config']} | {r['per_second']:.3f} {unit} | {r.get('ratio', 1.0):.2f}x | {secs:.1f} | {wall:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default=str(ROOT / "data" / "realtext" / "train.jsonl"), help="RLP's documents")
    p.add_argument("--task", default="add1", help="GRPO's prompts")
    p.add_argument("--jobs", default="rlp,grpo", type=lambda s: s.split(","))
    p.add_argument("--steps", type=int, default=2, help="steps per run")
    p.add_argument("--docs", type=int, default=2, help="RLP documents per step (a multiple of the process count)")
    p.add_argument("--positions", type=int, default=2, help="RLP positions per document")
    p.add_argument("--prompts", type=int, default=2, help="GRPO prompts per step (a multiple of the process count)")
    p.add_argument("--group", type=int, default=4, help="thoughts (RLP) or completions (GRPO) per item")
    p.add_argument("--thought", type=int, default=16, help="thought budget")
    p.add_argument("--context", type=int, default=128, help="RLP context length")
    p.add_argument("--lora", type=int, default=16, help="LoRA rank of the LoRA configurations")
    p.add_argument("--cores", type=int, help="threads / processes of the parallel configurations (default: all cores)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = run_all(args)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
