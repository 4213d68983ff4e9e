"""Thought MDP: does thinking emerge under policy gradient, and from which initial policies?

Runs ``ponder thought-mdp`` (:func:`ponder.jobs.thought_mdp.run_thought_mdp`) over the given
seeds (goal layouts) and prints three tables: each initial policy's return and thinking before
and after training (means over seeds), the sub-policy strength sweep, and thinking length vs
return of the rich policy. Pure numpy; about a minute on one core.

Usage::

    OMP_NUM_THREADS=1 python bench/thought_mdp.py --seeds 0,1,2 --json thought_mdp.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ponder.jobs.thought_mdp import ThoughtMDPJob, run_thought_mdp
from ponder.report.tables import print_table
from ponder.report.thought_mdp_report import summary_table
from ponder.train.rundir import write_json_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="goal layouts (comma-separated)")
    p.add_argument("--iterations", type=int, default=ThoughtMDPJob.model_fields["iterations"].default)
    p.add_argument("--out", default="runs/thought-mdp-bench", help="where the report and JSON of the job go")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    job = ThoughtMDPJob(seeds=seeds, iterations=args.iterations, out=args.out)
    start = time.time()
    payload = run_thought_mdp(job, progress=lambda _: None)
    seconds = time.time() - start
    print_table(*summary_table(payload), title=f"initial policies (means over seeds {seeds})")
    sweep = payload["skill_sweep"]
    rows = []
    for skill in job.skills:
        group = [r for r in sweep if r["skill"] == skill]
        rows.append(
            [
                skill,
                float(np.mean([r["first_thought_end"] for r in group])),
                " ".join(f"{r['first_thought_end']:.2f}" for r in group),
                float(np.mean([r["value_end"] / r["optimal_value"] for r in group])),
            ]
        )
    print_table(
        ["sub-policy strength", "P(think first) end", "per seed", "return / optimum end"], rows, "richness sweep"
    )
    tvr = payload["thinking_vs_return"]
    for key in ("initial", "trained"):
        print_table(
            ["thoughts in episode", "share", "mean return"],
            [[r["thoughts"], r["share"], r["mean_return"]] for r in tvr[key]],
            f"rich policy, {key}: thinking length vs return",
        )
    print(f"{seconds:.1f} s; report: {payload['report']}")
    payload["seconds"] = seconds
    if args.json:
        write_json_file(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
