"""RLP on SmolLM2-135M on real text, against the base and FLOP-matched continued pretraining (issue 17).

Per seed: ``ponder rlp`` from SmolLM2-135M-Instruct on the training split of a corpus written by
``ponder corpus build``, then ``ponder cpt --match-run`` (same start, same corpus, the RLP run's
counted budget), then the three models (the base once) are measured on the held-out split:

* ``heldout_info_gain``: mean over held-out positions of log p_M(x_t | x_<t, c) - log p_base(x_t | x_<t),
  c ~ M (G thoughts per position, the same positions and random streams for every model;
  :func:`ponder.eval.info_gain.heldout_information_gain`);
* ``heldout_self_info_gain``: the same against M's own no-think log-prob;
* ``heldout_ntp_loss``: M's next-token loss without thinking on the measured windows;
* ``think_accuracy``: greedy think-mode accuracy on ``--task`` (``--probe`` finds a task where the
  base is neither at 0 nor at ceiling);
* thought length and the share of thoughts the model closed itself.

Every phase writes its result under ``--out`` and is skipped when rerun, so an interrupted bench
resumes (the training runs resume through ``ponder``'s own checkpoints)::

    python -m ponder.cli corpus build --out data/realtext
    OMP_NUM_THREADS=1 python bench/rlp_smollm2.py --corpus data/realtext --seeds 0-2 --out runs/smol \\
        --json bench/results/rlp_smollm2.json
    OMP_NUM_THREADS=1 python bench/rlp_smollm2.py --corpus data/realtext --probe add1,sort3,rg:syllogism
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from ponder.config import parse_seeds  # noqa: E402
from ponder.data.corpus import read_documents  # noqa: E402
from ponder.data.registry import get_task  # noqa: E402
from ponder.eval.accuracy import evaluate_mode  # noqa: E402
from ponder.eval.info_gain import heldout_information_gain  # noqa: E402
from ponder.models.lookup import load_model  # noqa: E402
from ponder.report.stats import bootstrap_interval  # noqa: E402
from ponder.rl.positions import tokenize_docs  # noqa: E402
from smollm2_speed import ponder_command  # noqa: E402  (a sibling script: the one way a bench launches ponder)

MODEL = "smollm2-135m"
#: Per-model figures of the table (means over seeds, with their spread).
COLUMNS = (
    "heldout_info_gain",
    "heldout_self_info_gain",
    "heldout_ntp_loss",
    "think_accuracy",
    "thought_tokens_mean",
    "closed_fraction",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="folder written by `ponder corpus build`")
    p.add_argument("--out", default="runs/rlp_smollm2", help="run directories and per-phase results")
    p.add_argument("--seeds", default="0", type=parse_seeds, help="a range 0-2, a list 0,1,2 or both")
    # Training (RLP). Sized for a 2-core CPU: see bench/RESULTS.md for why each value.
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--docs-per-step", type=int, default=8)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-thought-tokens", type=int, default=32)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-5, help="RLP learning rate")
    p.add_argument("--ema-tau", type=float, default=0.999)
    p.add_argument("--rlp-args", default="", help="more `ponder rlp` flags, space separated")
    p.add_argument("--cpt-lr", type=float, default=1e-5, help="CPT peak learning rate")
    p.add_argument("--cpt-batch", type=int, default=8, help="CPT windows per step")
    p.add_argument("--match", default="flop", choices=["flop", "token", "compute"])
    add_launch_args(p)
    # Evaluation.
    p.add_argument("--eval-windows", type=int, default=24, help="held-out windows measured")
    p.add_argument("--eval-positions", type=int, default=2, help="positions per held-out window")
    p.add_argument("--eval-group", type=int, default=4, help="thoughts per held-out position")
    p.add_argument("--eval-batch", type=int, default=6, help="windows per evaluation rollout")
    p.add_argument("--task", default="add1", help="think-accuracy task")
    p.add_argument("--task-n", type=int, default=64)
    p.add_argument("--probe", help="comma-separated tasks: measure the base's think accuracy on each and stop")
    p.add_argument("--json", help="write the table's rows here")
    return p.parse_args(argv)


def add_launch_args(p: argparse.ArgumentParser) -> None:
    """How RLP and CPT are launched: processes and LoRA (both runs alike, so that FLOP matching compares like with like)."""
    p.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes per training run (torchrun, 1 thread each)"
    )
    p.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank in RLP and CPT (0: full)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale alpha / rank")


def heldout_windows(corpus: Path, tokenizer, context: int, n: int, split: str = "heldout"):
    """``n`` windows of ``context`` tokens spread evenly over the held-out split (or ``split``; a fixed choice)."""
    docs = read_documents(str(corpus / f"{split}.jsonl"))
    windows = [w for w in tokenize_docs(tokenizer, [(t, None) for t in docs], context) if len(w.ids) > 8]
    if len(windows) < n:
        raise SystemExit(f"the {split} split has {len(windows)} windows of {context} tokens; ask for fewer")
    stride = len(windows) / n
    return [windows[int(i * stride)] for i in range(n)]


def think_accuracy(lm, args, task_spec: str) -> dict:
    task = get_task(task_spec)
    problems = task.problems(args.task_n, seed=0, split="test")
    r = evaluate_mode(
        lm.model,
        lm.tokenizer,
        task,
        problems,
        think=True,
        max_thought_tokens=args.max_thought_tokens,
        max_answer_tokens=16,
        batch_size=64,
    )
    return {
        "task": task_spec,
        "n": len(problems),
        "think_accuracy": r.accuracy,
        "task_thought_tokens": r.mean_thought_tokens,
        "task_unclosed_fraction": r.unclosed_fraction,
        "task_no_answer_fraction": r.no_answer_fraction,
    }


def measure(name: str, path: str, base, args, out: Path) -> dict:
    """Held-out IG, loss and think accuracy of the model at ``path`` (cached in ``out/eval-<name>.json``)."""
    cached = out / f"eval-{name}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    t0 = time.time()
    lm = base if path == MODEL else load_model(path, device="cpu", dtype=torch.float32)
    windows = heldout_windows(Path(args.corpus), lm.tokenizer, args.context_length, args.eval_windows)
    hg = heldout_information_gain(
        lm.model,
        base.model,
        lm.tokenizer,
        windows,
        positions_per_doc=args.eval_positions,
        group_size=args.eval_group,
        max_thought_tokens=args.max_thought_tokens,
        temperature=0.7,
        seed=0,
        batch_size=args.eval_batch,
    )
    s = hg.summary()
    result = {
        "model": name,
        "path": path,
        "heldout_info_gain": s["info_gain"],
        "heldout_info_gain_stderr": s["info_gain_stderr"],
        "heldout_self_info_gain": s["self_info_gain"],
        "heldout_ntp_loss": s["ntp_loss"],
        "thought_tokens_mean": s["thought_tokens_mean"],
        "closed_fraction": s["closed_fraction"],
        "positions": s["positions"],
        "ntp_tokens": s["ntp_tokens"],
        "per_position_gain": [float(g) for g in hg.gains],
        **(think_accuracy(lm, args, args.task) if args.task_n else {}),  # 0: the caller measures accuracy
    }
    result["eval_wall_s"] = round(time.time() - t0, 1)
    cached.write_text(json.dumps(result, indent=1))
    print(
        f"[{name}] IG {result['heldout_info_gain']:+.3f} loss {result['heldout_ntp_loss']:.3f} "
        f"acc {result.get('think_accuracy', float('nan')):.3f} ({result['eval_wall_s']} s)",
        flush=True,
    )
    return result


def run_cli(argv: list[str], log: Path, nproc: int = 1) -> float:
    """Run ``ponder ARGV`` in a child process (resumable; its log in ``log``); the wall seconds.

    ``nproc`` > 1 launches it as a user would on this machine: ``torchrun --nproc_per_node nproc``, one
    torch thread per rank (data-parallel over gloo).
    """
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **({"OMP_NUM_THREADS": "1"} if nproc > 1 else {})}
    with open(log, "a") as f:
        rc = subprocess.call(ponder_command(argv, nproc), stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise SystemExit(f"`ponder {' '.join(argv)}` failed (exit {rc}); see {log}")
    return time.time() - t0


def flags(settings: dict) -> list[str]:
    """``{"steps": 3}`` -> ``["--steps", "3"]``."""
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def train(seed: int, args, out: Path, cpt: bool = True) -> dict:
    """RLP then (``cpt``) FLOP-matched CPT for ``seed``; wall times (0 when the run was already complete)."""
    rlp_dir, cpt_dir = out / f"rlp-s{seed}", out / f"cpt-s{seed}"
    common = flags(
        {
            "model": getattr(args, "start", None) or MODEL,  # a warm start's final/ when given
            "corpus": Path(args.corpus) / "train.jsonl",
            "seed": seed,
            "report_to": "none",
            "device": "cpu",
        }
    )
    rlp = {
        "steps": args.steps,
        "docs_per_step": args.docs_per_step,
        "group_size": args.group_size,
        "max_thought_tokens": args.max_thought_tokens,
        "context_length": args.context_length,
        "lr": args.lr,
        "ema_tau": args.ema_tau,
        "save_every": 10,
        "out": rlp_dir,
    }
    cpt_run = {
        "match_run": rlp_dir,
        "match": args.match,
        "lr": args.cpt_lr,
        "batch_size": args.cpt_batch,
        "max_length": args.context_length,
        "out": cpt_dir,
    }
    if getattr(args, "lora_rank", 0):  # the same adapters for both, so that the FLOP match compares like with like
        common += flags({"lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha})
    nproc = getattr(args, "nproc", 1)
    walls = {}
    if not (rlp_dir / "final").is_dir():
        argv = ["rlp", *common, *flags(rlp), "--quiet", *args.rlp_args.split()]
        walls["rlp_wall_s"] = run_cli(argv, out / f"rlp-s{seed}.log", nproc)
    if cpt and not (cpt_dir / "final").is_dir():
        walls["cpt_wall_s"] = run_cli(["cpt", *common, *flags(cpt_run), "--quiet"], out / f"cpt-s{seed}.log", nproc)
    return walls


def spread(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def rows_of(base: dict, runs: dict[str, list[dict]]) -> list[dict]:
    rows = [{"model": "base", "seeds": [], **{k: base[k] for k in COLUMNS}, "heldout_info_gain_std": 0.0}]
    for name, evals in runs.items():
        if not evals:
            continue
        row = {"model": name, "seeds": [e["seed"] for e in evals]}
        for k in COLUMNS:
            row[k] = statistics.fmean(e[k] for e in evals)
            row[f"{k}_std"] = spread([e[k] for e in evals])
            row[f"{k}_per_seed"] = [e[k] for e in evals]
        rows.append(row)
    return rows


def paired_gain(a: dict, b: dict) -> dict:
    """Mean per-position IG difference of ``a`` over ``b`` (same positions) with a bootstrap interval."""
    d = [x - y for x, y in zip(a["per_position_gain"], b["per_position_gain"])]
    lo, hi = bootstrap_interval(a["per_position_gain"], b["per_position_gain"])
    return {"mean": statistics.fmean(d), "ci95": [lo, hi], "positions": len(d)}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    corpus = Path(args.corpus)
    if not (corpus / "heldout.jsonl").is_file():
        raise SystemExit(f"{corpus} has no heldout.jsonl: build it with `ponder corpus build --out {corpus}`")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model(MODEL, device="cpu", dtype=torch.float32)
    if args.probe:
        for spec in args.probe.split(","):
            t0 = time.time()
            r = think_accuracy(base, args, spec)
            print(json.dumps({**r, "wall_s": round(time.time() - t0, 1)}), flush=True)
        return
    t_start = time.time()
    base_eval = measure("base", MODEL, base, args, out)
    runs: dict[str, list[dict]] = {"cpt": [], "rlp": []}
    walls: dict[int, dict] = {}
    for seed in args.seeds:
        walls[seed] = train(seed, args, out)
        for name in ("rlp", "cpt"):
            e = measure(f"{name}-s{seed}", str(out / f"{name}-s{seed}" / "final"), base, args, out)
            runs[name].append({**e, "seed": seed})
    rows = rows_of(base_eval, runs)
    paired = {
        f"rlp-s{r['seed']}": {"vs_base": paired_gain(r, base_eval), "vs_cpt": paired_gain(r, c)}
        for r, c in zip(runs["rlp"], runs["cpt"])
    }
    print("\n| model | seeds | " + " | ".join(COLUMNS) + " |")
    print("| --- " * (2 + len(COLUMNS)) + "|")
    for row in rows:
        cells = " | ".join(
            f"{row[c]:.3f}" + (f" ± {row[c + '_std']:.3f}" if f"{c}_std" in row and row["seeds"] else "")
            for c in COLUMNS
        )
        print(f"| {row['model']} | {','.join(map(str, row['seeds'])) or '-'} | {cells} |")
    for name, p in paired.items():
        print(
            f"{name}: IG over base {p['vs_base']['mean']:+.3f} {p['vs_base']['ci95']}, "
            f"over CPT {p['vs_cpt']['mean']:+.3f} {p['vs_cpt']['ci95']}"
        )
    manifest = json.loads((corpus / "manifest.json").read_text())
    payload = {
        "model": MODEL,
        "corpus_fingerprint": manifest.get("fingerprint"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "probe")},
        "rows": rows,
        "paired_info_gain": paired,
        "train_wall_s": walls,
        "bench_wall_s": round(time.time() - t_start, 1),
        "threads": torch.get_num_threads(),
        "base": {k: v for k, v in base_eval.items() if k != "per_position_gain"},
    }
    if math.isnan(payload["rows"][0]["heldout_info_gain"]):
        print("warning: no held-out position was measured", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
