"""Compare verifier-free and verifiable rewards for GRPO on the built-in tiny model.

From the same base, trains one run per (reward, seed) for the same budget (steps x prompts x G
completions) and measures held-out think accuracy (greedy, ``ponder.eval.evaluate``) before and
after, the mean thought length, and the format shares of the sampled completions over the last
steps of training. Rewards:

* ``verifiable``: GRPO on training prompts, reward = task score against the label;
* ``majority_vote``: TTRL on the same training prompts with their labels ignored (n = m = G votes);
* ``self_certainty``, ``answer_confidence``: GRPO with the model's own confidence (no labels);
* ``answer_likelihood``: GRPO with the thought's gain in log-likelihood of the reference answer.

Usage (the full run takes about 25 minutes on one core)::

    OMP_NUM_THREADS=1 python bench/rewards_compare.py --json rewards_compare.json
    python bench/rewards_compare.py --quick            # < 1 minute smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ponder.config import parse_seeds
from ponder.errors import exit_code
from ponder.report.stats import compare
from ponder.report.tables import markdown_table

REWARDS = ("verifiable", "majority_vote", "self_certainty", "answer_confidence", "answer_likelihood")
#: Format metrics averaged over the last steps of each run (the shares of sampled completions).
FORMAT_KEYS = ("format/think_closed", "format/think_unclosed", "format/answer_number", "format/entropy")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="tiny-lazy",
        help="base model: tiny-lazy (default: the demo's base, which reasons in about half its thoughts), "
        "tiny (which always does, leaving no room), or a model directory",
    )
    p.add_argument("--task", default="add3-5")
    p.add_argument("--rewards", default=",".join(REWARDS), help="comma-separated subset of " + ", ".join(REWARDS))
    p.add_argument("--seeds", default="0,1,2", type=parse_seeds, help="a range 0-9, a list 0,1,2 or both")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt (G; TTRL votes)")
    p.add_argument("--pool", type=int, default=256, help="training prompts visited in epochs")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--eval-n", type=int, default=200, help="held-out problems (greedy think accuracy)")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per held-out problem for the sampled accuracy")
    p.add_argument("--last", type=int, default=5, help="final steps whose format shares are averaged")
    p.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help="2 steps, 1 seed, tiny batches: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.prompts, args.group, args.pool, args.eval_n, args.last = [0], 2, 4, 4, 8, 20, 2
        args.eval_samples = 2
    args.rewards = [r.strip() for r in args.rewards.split(",") if r.strip()]
    unknown = sorted(set(args.rewards) - set(REWARDS))
    if unknown:
        p.error(f"unknown rewards {unknown}; choose from {', '.join(REWARDS)}")
    return args


def sampled_accuracy(model, tokenizer, task, n: int, budget: int, k: int, temperature: float) -> float:
    """Mean accuracy of ``k`` think-mode samples per held-out problem at ``temperature`` (pass@1 estimate)."""
    import torch

    from ponder.lm.thinking import ThoughtFormat, think_then_answer

    problems = task.problems(n, seed=0, split="test")
    gen = torch.Generator().manual_seed(1234)
    fmt = ThoughtFormat.of(model, tokenizer)
    out = think_then_answer(
        model,
        tokenizer,
        fmt,
        fmt.prompt_ids(tokenizer, [p.prompt for p in problems]),
        n=k,
        max_thought_tokens=budget,
        temperature=temperature,
        generator=gen,
    )
    texts = out.texts(tokenizer)
    return sum(task.score(problems[i // k], t) for i, t in enumerate(texts)) / len(texts)


def measure(model, tokenizer, task, args, budget: int) -> dict:
    """Greedy held-out think accuracy and thought length, plus sampled accuracy at the training temperature."""
    from ponder.eval.accuracy import held_out_think_accuracy

    out = held_out_think_accuracy(model, tokenizer, task, args.eval_n, budget)
    out["sampled_accuracy"] = sampled_accuracy(
        model, tokenizer, task, args.eval_n, budget, args.eval_samples, args.temperature
    )
    return out


def train_one(args, reward: str, seed: int, base_dir: str, task, budget: int, run_dir: Path) -> dict:
    from ponder.models.lookup import load_model
    from ponder.rl.grpo import GRPOConfig, GRPOTrainer
    from ponder.rl.ttrl import TTRLConfig, TTRLTrainer
    from ponder.train.metrics import read_metrics

    lm = load_model(base_dir)
    common = dict(
        steps=args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        micro_batch=None,  # the whole step in one pass, as when the recorded figures were measured (tiny model)
        pool_size=args.pool,
        split="train",
        max_thought_tokens=budget,
        temperature=args.temperature,
        lr=args.lr,
        seed=seed,
        save_every=args.steps,
    )
    if reward == "majority_vote":
        trainer = TTRLTrainer(lm.model, lm.tokenizer, task, TTRLConfig(**common), run_dir)
    else:
        trainer = GRPOTrainer(lm.model, lm.tokenizer, task, GRPOConfig(reward=reward, **common), run_dir)
    t0 = time.time()
    summary = trainer.train(progress=False)
    after = measure(lm.model, lm.tokenizer, task, args, budget)
    rows = read_metrics(run_dir)[-args.last :]
    fmt = {k: statistics.fmean(r[k] for r in rows if r.get(k) is not None) for k in FORMAT_KEYS}
    extra = {
        k: statistics.fmean(r[k] for r in rows if r.get(k) is not None)
        for k in ("label_accuracy", "majority_ratio", "reward_accuracy")
        if any(r.get(k) is not None for r in rows)
    }
    return {
        "reward": reward,
        "seed": seed,
        **after,
        **fmt,
        **extra,
        "seconds": time.time() - t0,
        "groups_trained": summary["groups_trained"],
        "groups_equal_filtered": summary["groups_equal_filtered"],
        "groups_hard_set_aside": summary["groups_hard_set_aside"],
        "skipped_nonfinite": summary["skipped_nonfinite"],
    }


def aggregate(runs: list[dict], rewards: list[str], base_accuracy: float | None = None) -> list[dict]:
    """One row per reward: mean, std and per-seed greedy think accuracy and, against ``base_accuracy``
    (the base measured once), ``median``, ``iqr``, ``q1``, ``q3``, ``win_share`` (seeds above the base, ties
    half) and a bootstrap interval of the mean gain (``gain_low``, ``gain_high``)."""
    rows = []
    for reward in rewards:
        mine = [r for r in runs if r["reward"] == reward]
        accs = [r["think_accuracy"] for r in mine]
        row = {
            "reward": reward,
            **_against_base(accs, base_accuracy),
            "think_accuracy_mean": statistics.fmean(accs),
            "think_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "think_accuracy_per_seed": accs,
            "mean_thought_tokens": statistics.fmean(r["mean_thought_tokens"] for r in mine),
            "sampled_accuracy_mean": statistics.fmean(r["sampled_accuracy"] for r in mine),
            "sampled_accuracy_std": statistics.stdev(r["sampled_accuracy"] for r in mine) if len(mine) > 1 else 0.0,
        }
        for k in FORMAT_KEYS + ("label_accuracy", "majority_ratio", "reward_accuracy"):
            if all(k in r for r in mine):
                row[k] = statistics.fmean(r[k] for r in mine)
        rows.append(row)
    return rows


def _against_base(accs: list[float], base_accuracy: float | None) -> dict:
    if base_accuracy is None:
        return {}
    c = compare(accs, base_accuracy)
    return {
        **{k: c[k] for k in ("median", "iqr", "q1", "q3", "win_share")},
        "gain_mean": c["diff"],
        "gain_low": c["diff_low"],
        "gain_high": c["diff_high"],
        "gain_shown": c["shown"],
    }


def print_table(payload: dict) -> None:
    from rich.table import Table

    from ponder.report.tables import console

    table = Table(
        title=f"GRPO rewards on {payload['task']}: {payload['steps']} steps x {payload['prompts']} prompts x "
        f"G={payload['group']}, seeds {payload['seeds']}, held-out n={payload['eval_n']}"
    )
    for h in (
        "reward",
        "think acc before",
        "after (mean)",
        "std",
        "per seed",
        "sampled acc",
        "thought tokens",
        "think closed",
        "answer number",
        "format entropy",
    ):
        table.add_column(h, justify="right")
    base = payload["base_think_accuracy"]
    table.add_row(
        "(base)",
        f"{base:.3f}",
        f"{base:.3f}",
        "-",
        "-",
        f"{payload['base_sampled_accuracy']:.3f}",
        f"{payload['base_mean_thought_tokens']:.1f}",
        "-",
        "-",
        "-",
    )
    for r in payload["rows"]:
        table.add_row(
            r["reward"],
            f"{base:.3f}",
            f"{r['think_accuracy_mean']:.3f}",
            f"{r['think_accuracy_std']:.3f}",
            " ".join(f"{a:.3f}" for a in r["think_accuracy_per_seed"]),
            f"{r['sampled_accuracy_mean']:.3f}±{r['sampled_accuracy_std']:.3f}",
            f"{r['mean_thought_tokens']:.1f}",
            f"{r['format/think_closed']:.2f}",
            f"{r['format/answer_number']:.2f}",
            f"{r['format/entropy']:.2f}",
        )
    console.print(table)
    print(f"\nthink accuracy over seeds against the base ({base:.3f}):")
    print(
        markdown_table(
            ["reward", "seeds", "median", "IQR", "win share vs base", "mean gain", "95% bootstrap interval"],
            [
                [r["reward"], len(r["think_accuracy_per_seed"]), r["median"], r["iqr"], r["win_share"]]
                + [r["gain_mean"], f"[{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]"]
                for r in payload["rows"]
            ],
        )
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    from ponder.data.registry import get_task
    from ponder.data.task import task_thought_budget
    from ponder.models.lookup import load_model
    from ponder.models.tiny_base import builtin_tiny_path

    task = get_task(args.task)
    budget = task_thought_budget(task, None)
    base_dir = builtin_tiny_path(args.model)
    base_lm = load_model(base_dir)
    base = measure(base_lm.model, base_lm.tokenizer, task, args, budget)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rewards_compare-"))
    runs = []
    start = time.time()

    def payload() -> dict:
        done = [r for r in args.rewards if any(run["reward"] == r for run in runs)]
        return {
            "task": task.name,
            "model": base_dir,
            "steps": args.steps,
            "prompts": args.prompts,
            "group": args.group,
            "pool": args.pool,
            "lr": args.lr,
            "temperature": args.temperature,
            "seeds": args.seeds,
            "eval_n": args.eval_n,
            "base_think_accuracy": base["think_accuracy"],
            "base_sampled_accuracy": base["sampled_accuracy"],
            "base_mean_thought_tokens": base["mean_thought_tokens"],
            "rows": aggregate(runs, done, base["think_accuracy"]),
            "runs": runs,
            "seconds": time.time() - start,
        }

    for seed in args.seeds:  # seed-major: an interrupted run still covers every reward
        for reward in args.rewards:
            run = train_one(args, reward, seed, base_dir, task, budget, out / f"{reward}-s{seed}")
            runs.append(run)
            print(
                f"[{time.time() - start:6.0f}s] {reward} seed {seed}: think acc {run['think_accuracy']:.3f} "
                f"(base {base['think_accuracy']:.3f}), sampled {run['sampled_accuracy']:.3f} "
                f"(base {base['sampled_accuracy']:.3f}), thought {run['mean_thought_tokens']:.1f} tokens",
                flush=True,
            )
            if args.json:
                Path(args.json).write_text(json.dumps(payload(), indent=2))
    result = payload()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    raise SystemExit(exit_code(main))
