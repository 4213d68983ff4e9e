"""GRPO with your own reward, written in TRL's reward signature.

    python examples/grpo_custom_reward.py --model tiny-lazy --out runs/grpo-custom

A TRL reward is ``f(prompts, completions, **kwargs) -> list[float]``; ``register_reward`` makes it a
name the reward mix knows, next to ponder's own (``verifiable``, ``format``, ...). In ``ponder grpo``
the kwargs hold ``task``, ``model``, ``tokenizer``, the sampled ``prompt_ids`` / ``completion_ids`` and,
because this mix also uses ``verifiable``, ``reference_answers``.
"""

from __future__ import annotations

import argparse
import json

from ponder.jobs.grpo import GRPOJob, run_grpo
from ponder.lm.delimiters import strip_thoughts
from ponder.rewards import register_reward


def short_answer(prompts, completions, **kwargs) -> list[float]:
    """1 when the text after the thought is digits only (no stray words), else 0."""
    answers = [strip_thoughts(c).strip() for c in completions]
    return [1.0 if a.isdigit() else 0.0 for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-lazy")
    parser.add_argument("--out", default="runs/grpo-custom")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="the smallest run (the test suite's)")
    args = parser.parse_args()

    register_reward("short_answer", short_answer)
    # The smoke run's random model solves nothing: without the filters every group would be set aside and the
    # run would train nothing (and write no final model).
    sizes = dict(group_size=2, prompts_per_step=2, pool_size=4, max_thought_tokens=4, max_answer_tokens=3, eval_n=0)
    sizes.update(filter_hard=False, filter_equal=False)
    job = GRPOJob(
        model=args.model,
        task="add3-5",
        reward="verifiable=1,short_answer=0.2",
        steps=args.steps,
        lr=3e-5,
        out=args.out,
        **(sizes if args.smoke else {}),
    )
    summary = run_grpo(job, resume=True, progress=not args.smoke)
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, int | float)}))
    print(f"final model: {args.out}/final; per-step rewards (reward/short_answer, ...) in {args.out}/metrics.jsonl")


if __name__ == "__main__":
    main()
