"""Cheap probe: smollm2-135m greedy accuracy on 8 training problems per task under five fixed chains.

Finds tasks where the chain matters for planning (bare input, one or three solved exemplars in the
direct format, three ``Q: .. A: ..`` exemplars, an instruction plus an exemplar); prints accuracy,
the reference's mean log-likelihood per token and the planning value of each:

    OMP_NUM_THREADS=1 python bench/plan_probe_smol.py add1,sort3,add2
"""

from __future__ import annotations

import json
import sys
import time

import torch

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
    torch.set_num_threads(1)
    tasks = (argv or sys.argv[1:] or ["add1,sort3,add2"])[0].split(",")
    lm = load_model("smollm2-135m")
    out = {}
    for name in tasks:
        task = get_task(name)
        env = PlanEnv(lm, task, n_train=8, n_heldout=1, seed=0)
        for label, chain in probe_chains(mine_vocabulary(task, seed=0)).items():
            t = time.time()
            o = env.evaluate(chain)
            out[f"{name}/{label}"] = {"accuracy": o.accuracy, "loglik": round(o.loglik, 2)}
            print(
                name,
                label,
                "acc",
                o.accuracy,
                "loglik",
                round(o.loglik, 2),
                "value",
                round(o.value, 3),
                f"{time.time() - t:.1f}s",
                flush=True,
            )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
