"""Does the tiny base depend on the machine's thread count? Train it under several, compare weights.

Each configuration ``P/J`` trains ``ponder base`` (the default recipe, ``--steps`` steps) in a fresh
process started with ``OMP_NUM_THREADS=P`` whose job pins ``J`` intra-op threads (``BaseJob.threads``),
then prints the weights' fingerprint, the largest weight difference from the first configuration and
held-out think accuracy (``--eval-n`` problems, greedy). ``1/1`` against ``2/2`` shows what another
thread count does to training; ``1/1`` against ``2/1`` shows that the pin makes it the same model.

    OMP_NUM_THREADS=1 python bench/base_repro.py --steps 30 --configs 1/1,2/2,2/1 --json repro.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def parse_config(text: str) -> tuple[int, int]:
    process, _, job = text.partition("/")
    return int(process), int(job or process)


def child(args) -> None:
    """Train in this process (its OMP_NUM_THREADS already set by the parent) and print one JSON line."""
    from ponder.models.tiny_base import BaseJob, run_base

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    job = BaseJob(threads=args.job_threads, eval_n=args.eval_n, seed=args.seed)
    job = job.model_copy(update={"train": job.train.model_copy(update={"steps": args.steps, "report_to": []})})
    summary = run_base(job, args.out, progress=False)
    print(
        json.dumps(
            {
                "fingerprint": summary["weights_fingerprint"],
                "think_accuracy": summary["eval"]["think"]["accuracy"],
                "seconds": summary["seconds"],
            }
        )
    )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="training steps (the default recipe has 800)")
    p.add_argument("--configs", default="1/1,2/2,2/1", help="PROCESS/JOB thread counts, comma-separated")
    p.add_argument("--eval-n", type=int, default=20, help="held-out problems for think accuracy")
    p.add_argument("--seed", type=int, default=0, help="seed of the base recipe")
    p.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    root = Path(args.out or tempfile.mkdtemp(prefix="base_repro-"))
    rows = []
    for text in args.configs.split(","):
        process, job = parse_config(text)
        out = root / f"p{process}-j{job}"
        cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--eval-n", str(args.eval_n)]
        cmd += ["--seed", str(args.seed), "--job-threads", str(job), "--out", str(out)]
        t0 = time.time()
        done = subprocess.run(
            cmd, env={**os.environ, "OMP_NUM_THREADS": str(process)}, capture_output=True, text=True, check=True
        )
        row = {"process_threads": process, "job_threads": job, **json.loads(done.stdout.strip().splitlines()[-1])}
        row["wall_s"] = round(time.time() - t0, 1)
        row["weights"] = str(out / "final" / "model.safetensors")
        rows.append(row)
        print(json.dumps(row), flush=True)
    first = load_file(rows[0]["weights"])
    from ponder.train.reproducible import max_abs_difference

    print(
        f"\n| process / job threads | fingerprint | max abs diff vs {rows[0]['process_threads']}/{rows[0]['job_threads']} "
        f"| think acc ({args.eval_n}) | train s |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        row["max_abs_diff_vs_first"] = max_abs_difference(first, load_file(row["weights"]))
        print(
            f"| {row['process_threads']} / {row['job_threads']} | {row['fingerprint']} | "
            f"{row['max_abs_diff_vs_first']:.3g} | {row['think_accuracy']:.3f} | {row['seconds']:.0f} |"
        )
    result = {"steps": args.steps, "eval_n": args.eval_n, "seed": args.seed, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
