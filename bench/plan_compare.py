"""Thoughts-as-Planning: real accuracy against real LM calls, world-model planners vs baselines.

For each model and task: one shared payload vocabulary (mined + LM proposals), one start
chain (a generic instruction and a solved exemplar in the direct answer format), then every
method searches from it on a fresh environment (fresh cache) within the same budget of real
LM calls. The curve of a method is the held-out accuracy of its best chain so far (by the
training value) against the real calls spent. Savings of the world-model planner (MPPI):
``1 - calls_mppi / calls_best`` where ``calls_x`` is the calls method ``x`` needed to reach the
best baseline's final held-out accuracy, and the best baseline is the one with the highest
final accuracy (ties: the one that got there with the fewest calls).

    OMP_NUM_THREADS=1 python bench/plan_compare.py [--quick] [--seeds 0,1,2] [--json PATH] [--report PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ponder.config import add_model_arguments, config_from_args
from ponder.data.registry import get_task
from ponder.jobs.models import load_model
from ponder.jobs.plan import METHODS, PlannerSettings, build_vocabulary, default_start, run_method, write_plan_report
from ponder.plan.search import call_savings, calls_to_reach

BASELINE_METHODS = ("random", "hill", "evolution")
PRIMARY = "mppi"


def compare(
    model: str,
    task_name: str,
    budget: int,
    n_train: int,
    n_heldout: int,
    seed: int,
    methods=METHODS,
    settings: PlannerSettings = PlannerSettings(),
    lm=None,
    log=print,
    mode: str = "prefix",
) -> dict:
    task = get_task(task_name)
    lm = lm or load_model(model)
    vocab, vocab_calls = build_vocabulary(lm, task, seed)
    start = default_start(vocab, mode)
    env_kwargs = dict(n_train=n_train, n_heldout=n_heldout, seed=seed)
    runs = {}
    for method in methods:
        t0 = time.time()
        cfg = settings.planner_config(seed)
        search, diag = run_method(lm, task, method, start, vocab, budget, env_kwargs, cfg)
        runs[method] = {**search.summary(), "seconds": time.time() - t0, "diagnostics": diag}
        log(
            f"  {model} {task_name} {method:9s} heldout acc {search.best_heldout:.3f}  calls {search.env.counters.calls}"
            f"  evals {search.env.counters.evaluations}  {time.time() - t0:.0f} s"
        )
    return {
        "model": model,
        "task": task_name,
        "mode": mode,
        "vocabulary_calls": vocab_calls,
        "start": start.to_json(),
        "runs": runs,
    }


def summarize(result: dict) -> tuple[list[dict], float | None]:
    """Rows of the table and MPPI's call saving against the best baseline."""
    runs = result["runs"]
    finals = {m: r["best_heldout_accuracy"] or 0.0 for m, r in runs.items()}
    baselines = [m for m in BASELINE_METHODS if m in runs]
    target = max(finals[m] for m in baselines) if baselines else None
    rows = []
    for m, r in runs.items():
        rows.append(
            {
                "model": result["model"],
                "task": result["task"],
                "method": m,
                "final_accuracy": finals[m],
                "calls_to_best_baseline_accuracy": None if target is None else calls_to_reach(r["curve"], target),
                "calls": r["calls"],
                "evaluations": r["evaluations"],
                "seconds": round(r["seconds"], 1),
            }
        )
    saving = None
    if baselines and PRIMARY in runs:
        reach = {row["method"]: row["calls_to_best_baseline_accuracy"] for row in rows}
        best = min((m for m in baselines if finals[m] >= target - 1e-9), key=lambda m: reach[m] or float("inf"))
        saving = call_savings(reach[PRIMARY], reach[best])
        for row in rows:
            row["best_baseline"] = best
    return rows, saving


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,smollm2-135m")
    p.add_argument("--tasks", default="add3-5,add5")
    p.add_argument("--smollm-tasks", default=None, help="tasks for smollm2-135m (default: --tasks)")
    p.add_argument("--budget", type=int, default=1600, help="real LM calls per method (tiny)")
    p.add_argument("--smollm-budget", type=int, default=240, help="real LM calls per method (smollm2-135m)")
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--n-heldout", type=int, default=32)
    add_model_arguments(p, PlannerSettings)  # the search settings of `ponder plan`, same flags and defaults
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds (training/held-out problems and every method's "
        "randomness); each seed is a separate comparison, and the minimum saving is over model x task x seed",
    )
    p.add_argument(
        "--mode",
        default="prefix",
        choices=("prefix", "instruction"),
        help="start chain for the tiny model (smollm2-135m always starts from instruction + exemplar lines)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="first model (tiny by default) and first task only, budget <= 320 calls (< 1 min)",
    )
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--report", metavar="PATH", help="HTML report with the curves")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = config_from_args(PlannerSettings, a)
    models, tasks = a.models.split(","), a.tasks.split(",")
    methods = tuple(a.methods.split(","))
    if a.quick:
        models, tasks, a.budget, a.n_heldout = models[:1], tasks[:1], min(a.budget, 320), 16
        settings = settings.model_copy(update={"candidates": 16})
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    results, rows, savings = [], [], {}
    for model in models:
        lm = load_model(model)
        smol = model.startswith("smollm")
        for task in a.smollm_tasks.split(",") if smol and a.smollm_tasks else tasks:
            for seed in seeds:
                res = compare(
                    model,
                    task,
                    a.smollm_budget if smol else a.budget,
                    a.n_train if not smol else min(a.n_train, 4),
                    a.n_heldout if not smol else min(a.n_heldout, 16),
                    seed,
                    methods,
                    settings if not smol else settings.model_copy(update={"candidates": min(settings.candidates, 16)}),
                    lm=lm,
                    mode="instruction" if smol else a.mode,
                )
                res["seed"] = seed
                results.append(res)
                r, s = summarize(res)
                rows += [{**row, "seed": seed} for row in r]
                savings[f"{model}/{task}/seed{seed}"] = s
    print(
        "\n| model | task | seed | method | final held-out accuracy | calls to best baseline's accuracy | calls | evaluations | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['task']} | {r['seed']} | {r['method']} | {r['final_accuracy']:.3f} | "
            f"{r['calls_to_best_baseline_accuracy'] if r['calls_to_best_baseline_accuracy'] is not None else 'never'} | "
            f"{r['calls']} | {r['evaluations']} | {r['seconds']} |"
        )
    known = [s for s in savings.values() if s is not None]
    overall = min(known) if known and len(known) == len(savings) else None
    print(
        "\ncall savings of mppi vs the best baseline:",
        {k: (None if v is None else round(v, 3)) for k, v in savings.items()},
        "minimum:",
        overall,
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "call_savings_vs_best_baseline": overall,
                    "call_savings_per_model_task": savings,
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
    if a.report:
        for res in results:
            path = Path(a.report)
            write_plan_report(
                res["runs"],
                path.with_name(f"{path.stem}_{res['model']}_{res['task']}_s{res['seed']}{path.suffix}"),
                f"plan_compare: {res['model']} on {res['task']}, seed {res['seed']}",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
