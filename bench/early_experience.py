"""Imitation vs early experience on the built-in tiny model, each then a warm start for GRPO.

Runs ``ponder early-experience`` (:func:`ponder.jobs.early_experience.run_early_experience`):
from the ``tiny-early`` base (the tiny model's base recipe run for 500 steps, not 800), the same expert
trajectories per seed, three recipes trained with the same steps and examples per step
(imitation; world modelling then imitation; reflection mixed with imitation), then the same
short GRPO from each. Prints held-out think accuracy (greedy) after each recipe and after its
GRPO, and what the collection saw (share of the base's own steps and answers that were right).

Usage (25 min of CPU; 37 min wall on the shared 2-core machine)::

    OMP_NUM_THREADS=1 python bench/early_experience.py --seeds 0,1,2 --json early_experience.json
    python bench/early_experience.py --quick          # one seed, tiny budgets: a smoke run
"""

from __future__ import annotations

import argparse
import time

from ponder.jobs.early_experience import EarlyExperienceJob, early_experience_table, run_early_experience
from ponder.report.tables import print_table
from ponder.train.rundir import write_json_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model", default=EarlyExperienceJob.model_fields["model"].default)
    p.add_argument("--experts", type=int, default=EarlyExperienceJob.model_fields["experts"].default)
    p.add_argument("--steps", type=int, default=EarlyExperienceJob().train.steps, help="training steps per recipe")
    p.add_argument("--grpo-steps", type=int, default=EarlyExperienceJob.model_fields["grpo_steps"].default)
    p.add_argument("--eval-n", type=int, default=EarlyExperienceJob.model_fields["eval_n"].default)
    p.add_argument("--out", default="runs/early-experience-bench")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help="one seed, 32 experts, 4 steps, 2 GRPO steps, 20 problems")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.experts, args.steps, args.grpo_steps, args.eval_n = "0", 32, 4, 2, 20
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    base = EarlyExperienceJob()
    job = EarlyExperienceJob(
        model=args.model,
        experts=args.experts,
        train=base.train.model_copy(update={"steps": args.steps}),
        grpo_steps=args.grpo_steps,
        eval_n=args.eval_n,
        seeds=[int(s) for s in args.seeds.split(",") if s.strip()],
        out=args.out,
    )
    start = time.time()
    payload = run_early_experience(job, progress=False)
    payload["seconds"] = time.time() - start
    print_table(*early_experience_table(payload), title=f"held-out think accuracy on {job.task} (n={job.eval_n})")
    keys = ("seed", "own_steps_right", "own_answers_right", "world_model_examples", "reflection_examples")
    print_table(
        [k.replace("_", " ") for k in keys],
        [[c[k] for k in keys] for c in payload["collection"]],
        "what the base's own actions led to",
    )
    print(f"{payload['seconds']:.0f} s")
    if args.json:
        write_json_file(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
