"""TRELAWNEY on the tiny model: does training with lookahead spans teach it to walk toward a stated goal?

Task ``paths`` (``ponder.data.graphs``): a fixed random graph of 20 nodes, each with 2 outgoing
edges; a problem names a start node (``"c>"``) and its answer is a shortest walk to a goal node
2-4 hops away (``"qkd"``). The training text never states the goal before the walk, so a model
learns the edges but reaches a given goal only by chance. Written into a lookahead span after
the prompt, the goal determines the walk, but finding it is planning: the first step must be
the neighbour from which the goal is closest. Held out: a fifth of the (start, goal) pairs (47),
never trained as (start, goal). Each condition trains a fresh tiny model (128 wide, 3 layers;
``ponder.jobs.trelawney``) from the same initialisation on the same problem stream with the same
token budget (steps set so that steps x batch x mean document length is equal):

* ``plain``: next-token training on ``prompt answer`` (no spans, share 0);
* ``random-span``: TRELAWNEY with a random future piece (1-2 tokens) copied to a random point
  of the walk, in half the documents;
* ``goal-span``: TRELAWNEY with the outcome (the last node, the goal) copied to where the walk
  starts, in half the documents;
* ``goal-always``: every document carries the goal span: the goal-in-prompt format that
  supervised training on this task would use (the reference).

Columns: with the goal in a span, the share of walks that end at the goal (the task) and that
visit it (``reach``: they may go on past it); without the goal (the control); and the share of
answers that are valid walks at all.

Usage (about 15 minutes on one core for 3 seeds)::

    OMP_NUM_THREADS=1 python bench/trelawney.py --json trelawney.json
    python bench/trelawney.py --quick      # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from ponder.config import parse_choices, parse_seeds
from ponder.data.registry import get_task
from ponder.data.trelawney import LOOKAHEAD_CLOSE, LOOKAHEAD_OPEN, LookaheadConfig, iter_task_lookahead_documents
from ponder.errors import PonderError
from ponder.jobs.trelawney import TrelawneyJob, run_trelawney
from ponder.lm.tiny import build_char_tokenizer
from ponder.report.tables import markdown_table, seed_cells, seed_summary

CONDITIONS: dict[str, LookaheadConfig] = {
    "plain": LookaheadConfig(share=0.0),
    "random-span": LookaheadConfig(share=0.5, position="answer", goal="random", span_min=1, span_max=2),
    "goal-span": LookaheadConfig(share=0.5, position="answer_start", goal="end", span_min=1, span_max=1),
    "goal-always": LookaheadConfig(share=1.0, position="answer_start", goal="end", span_min=1, span_max=1),
}
METRICS = ("goal", "goal_reach", "no_goal", "no_goal_reach", "goal_valid", "no_goal_valid")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="paths")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="subset of " + ", ".join(CONDITIONS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=600, help="steps of the plain condition; the others match its tokens")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-n", type=int, default=47, help="held-out (start, goal) pairs (paths holds out 47)")
    p.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help="a few steps, one seed: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.batch, args.eval_n = "0", 4, 8, 8
    try:
        args.conditions = parse_choices(args.conditions, CONDITIONS, "conditions")
        args.seeds = parse_seeds(args.seeds)  # 0-9, 0,1,2 or a mix
    except PonderError as e:
        p.error(str(e))
    return args


def mean_document_tokens(task, cfg: LookaheadConfig, n: int = 2000) -> float:
    """Mean tokens per training document of a condition (EOS included), over its first ``n`` documents."""
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [LOOKAHEAD_OPEN, LOOKAHEAD_CLOSE]})
    docs = itertools.islice(iter_task_lookahead_documents(task, tok, cfg, seed=0), n)
    return statistics.mean(len(d) + 1 for d in docs)


def summarize(rows: list[dict]) -> dict:
    out = {key: seed_summary([r[key] for r in rows]) for key in METRICS}
    out["tokens_seen"] = statistics.mean(r["tokens_seen"] for r in rows)
    out["steps"] = rows[0]["steps"]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    task = get_task(args.task)
    root = Path(args.out or tempfile.mkdtemp(prefix="trelawney-"))
    lengths = {name: mean_document_tokens(task, CONDITIONS[name]) for name in args.conditions}
    budget = args.steps * args.batch * mean_document_tokens(task, CONDITIONS["plain"])
    results, start = {}, time.time()
    for name in args.conditions:
        steps = max(1, round(budget / (args.batch * lengths[name])))
        rows = []
        for seed in args.seeds:
            base = TrelawneyJob()
            job = TrelawneyJob(
                task=args.task,
                lookahead=CONDITIONS[name],
                out=str(root / f"{name}-s{seed}"),
                eval_n=args.eval_n,
                seed=seed,
                train=base.train.model_copy(
                    update={
                        "steps": steps,
                        "batch_size": args.batch,
                        "lr": args.lr,
                        "save_every": steps,
                        "warmup_steps": min(base.train.warmup_steps, steps),
                    }
                ),
            )
            summary = run_trelawney(job, progress=False)
            rows.append(summary)
            print(
                f"{name:12s} seed {seed}: goal {summary['goal']:.3f} (reach {summary['goal_reach']:.3f})  "
                f"no goal {summary['no_goal']:.3f}  valid {summary['goal_valid']:.3f}/{summary['no_goal_valid']:.3f}  "
                f"({summary['steps']} steps, {summary['tokens_seen']} tokens, {time.time() - start:.0f} s)",
                flush=True,
            )
        results[name] = {
            "lookahead": CONDITIONS[name].model_dump(),
            "mean_doc_tokens": lengths[name],
            **summarize(rows),
        }
    print_table(results, args)
    data = {"task": args.task, "seeds": args.seeds, "conditions": results, "seconds": time.time() - start}
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return data


def print_table(results: dict, args) -> None:
    print(f"\n{args.task}, {len(args.seeds)} seed(s), {args.eval_n} held-out (start, goal) pairs, greedy")
    columns = ["condition", "goal given: ends at goal", "std", "per seed", "goal given: reaches goal"]
    columns += ["no goal: ends / reaches", "valid walks (goal / none)", "steps", "tokens"]
    rows = [
        [
            name,
            seed_cells(r["goal"]),
            f"{r['goal_reach']['mean']:.3f}",
            f"{r['no_goal']['mean']:.3f} / {r['no_goal_reach']['mean']:.3f}",
            f"{r['goal_valid']['mean']:.3f} / {r['no_goal_valid']['mean']:.3f}",
            str(r["steps"]),
            f"{r['tokens_seen']:.0f}",
        ]
        for name, r in results.items()
    ]
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
