"""Cheap probe: smollm2-135m greedy accuracy per task under five fixed chains.

Finds tasks where the chain matters for planning (bare input, one or three solved exemplars in the
direct format, three ``Q: .. A: ..`` exemplars, an instruction plus an exemplar); prints accuracy on
the 8 training problems, the reference's mean log-likelihood per token and the planning value of
each, and with ``--heldout N`` the accuracy on N distinct held-out problems, what a planning run's
curve measures (a chain that lifts 8 training problems can leave every held-out one wrong), per
seed of ``--seeds`` (each seed draws its own problems and exemplars, as a planning cell does):

    OMP_NUM_THREADS=1 python bench/plan_probe_smol.py add1,sort3,add2
    OMP_NUM_THREADS=1 python bench/plan_probe_smol.py add2,rg:basic_arithmetic --heldout 32 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ponder.config import parse_seeds
from ponder.data.registry import get_task
from ponder.models.lookup import load_model
from ponder.plan.edits import mine_vocabulary
from ponder.plan.env import PlanEnv
from ponder.plan.state import Chain


def probe_chains(vocab) -> dict[str, Chain]:
    direct = [e for e in vocab.exemplars if "<think>" not in e and not e.startswith("Q:")]
    qa = [e for e in vocab.exemplars if e.startswith("Q:")]
    return {
        "bare": Chain(answer_format="direct"),
        "ex1": Chain(exemplars=tuple(direct[:1]), answer_format="direct"),
        "ex3": Chain(exemplars=tuple(direct[:3]), answer_format="direct"),
        "qa3": Chain(exemplars=tuple(qa[:3]), answer_format="qa"),
        "instr+ex1": Chain(instructions=(vocab.instructions[1],), exemplars=tuple(direct[1:2]), answer_format="direct"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", nargs="?", default="add1,sort3,add2", help="comma-separated task names")
    p.add_argument("--heldout", type=int, default=0, help="also measure on this many distinct held-out problems")
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="problem and exemplar draws: 0-2 or 0,1")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    lm = load_model("smollm2-135m")
    out = {}
    for name in a.tasks.split(","):
        task = get_task(name)
        for seed in a.seeds:
            env = PlanEnv(lm, task, n_train=8, n_heldout=max(1, a.heldout), seed=seed)
            vocab = mine_vocabulary(task, seed=seed, exclude=[p.prompt for p in env.train])  # no evaluated input solved
            for label, chain in probe_chains(vocab).items():
                t = time.time()
                o = env.evaluate(chain)
                row = {"accuracy": o.accuracy, "loglik": round(o.loglik, 2)}
                if a.heldout:
                    row["heldout_accuracy"] = env.measure(chain).accuracy
                    row["heldout_n"] = len(env.heldout)
                out[f"{name}/{label}" + (f"/s{seed}" if len(a.seeds) > 1 else "")] = row
                held = f" held-out {row['heldout_accuracy']:.3f} of {row['heldout_n']}" if a.heldout else ""
                print(
                    f"{name} s{seed} {label:9s} acc {o.accuracy:.3f} loglik {o.loglik:.2f} value {o.value:.3f}{held}"
                    f"  {time.time() - t:.1f}s",
                    flush=True,
                )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
