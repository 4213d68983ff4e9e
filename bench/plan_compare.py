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

from ponder.config import add_model_arguments, config_from_args, parse_seeds
from ponder.data.registry import get_task
from ponder.errors import ConfigError, exit_code
from ponder.jobs.plan import METHODS, PlannerSettings, build_vocabulary, default_start, run_method, write_plan_report
from ponder.models.lookup import load_model
from ponder.plan.search import call_savings, calls_to_reach
from ponder.report.stats import compare as compare_paired
from ponder.report.tables import markdown_table

BASELINE_METHODS = ("random", "hill", "evolution")
PRIMARY = "mppi"


#: A repeat's search draws: repeat r of seed s searches with seed s + REPEAT_STRIDE * r (repeat 0 = seed s).
REPEAT_STRIDE = 1000


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
    repeat: int = 0,
    vocabulary=None,
) -> dict:
    """Every method from one start chain on the problems of ``seed``; ``repeat`` r > 0 draws the methods'
    own randomness anew (same problems, vocabulary and start). ``vocabulary``: ``(vocab, calls)`` built
    for this seed already."""
    task = get_task(task_name)
    lm = lm or load_model(model)
    vocab, vocab_calls = vocabulary or build_vocabulary(lm, task, seed, n_train=n_train)
    start = default_start(vocab, mode)
    env_kwargs = dict(n_train=n_train, n_heldout=n_heldout, seed=seed)
    runs = {}
    for method in methods:
        t0 = time.time()
        cfg = settings.planner_config(seed + REPEAT_STRIDE * repeat)
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
        "repeat": repeat,
        "vocabulary_calls": vocab_calls,
        "start": start.to_json(),
        "runs": runs,
    }


def summarize(result: dict, baseline_methods=BASELINE_METHODS) -> tuple[list[dict], float | None]:
    """Rows of the table and MPPI's call saving against the best baseline (among ``baseline_methods``)."""
    runs = result["runs"]
    finals = {m: r["best_heldout_accuracy"] or 0.0 for m, r in runs.items()}
    baselines = [m for m in baseline_methods if m in runs]
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


def censored_calls(row: dict, budget: int) -> int:
    """Calls a run needed to reach its cell's target; ``budget + 1`` when it never did (keeps medians defined)."""
    reached = row["calls_to_best_baseline_accuracy"]
    return budget + 1 if reached is None else reached


def cells_of(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """Rows grouped by cell: ``(model, task, seed, repeat)`` -> {method: row}."""
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["task"], row["seed"], row.get("repeat", 0)), {})[row["method"]] = row
    return cells


def method_distributions(rows: list[dict], budget: int) -> dict:
    """Per method, over the cells (model x task x seed x repeat) of ``rows``: the calls it needed to reach
    each cell's target (a method that never did counts ``budget + 1``, so medians stay defined) as
    ``median``, ``iqr``, ``q1``, ``q3``; ``win_share``: share of cells where it needed fewer calls than that
    cell's best baseline (ties, both never included, half); ``saving_*``: its call saving ``1 - calls /
    best baseline's calls`` (same censoring), its median, IQR and a bootstrap interval of the median."""
    cells = cells_of(rows)
    out = {}
    methods = dict.fromkeys(row["method"] for row in rows)
    for method in methods:
        mine, best = [], []
        for cell in cells.values():
            if method in cell and cell[method].get("best_baseline") in cell:
                mine.append(censored_calls(cell[method], budget))
                best.append(censored_calls(cell[cell[method]["best_baseline"]], budget))
        if not mine:
            continue
        savings = [1 - m / b for m, b in zip(mine, best)]
        calls_stats = compare_paired(mine, best, higher_is_better=False)
        saving_stats = compare_paired(savings, 0.0, statistic="median")
        out[method] = {
            "cells": len(mine),
            "never": sum(c > budget for c in mine),
            "median": calls_stats["median"],
            "iqr": calls_stats["iqr"],
            "q1": calls_stats["q1"],
            "q3": calls_stats["q3"],
            "win_share": calls_stats["win_share"],
            "saving_median": saving_stats["median"],
            "saving_iqr": saving_stats["iqr"],
            "saving_min": saving_stats["min"],
            "saving_median_low": saving_stats["diff_low"],
            "saving_median_high": saving_stats["diff_high"],
        }
    return out


def build_payload(rows: list[dict], savings: dict, results: list[dict], budget: int) -> dict:
    known = [s for s in savings.values() if s is not None]
    return {
        "rows": rows,
        "call_savings_vs_best_baseline": min(known) if known and len(known) == len(savings) else None,
        "call_savings_per_model_task": savings,
        "methods": method_distributions(rows, budget),
        "results": results,
    }


def write_payload(path: str, rows: list[dict], savings: dict, results: list[dict], budget: int) -> dict:
    payload = build_payload(rows, savings, results, budget)
    Path(path).write_text(json.dumps(payload, indent=2, default=str))
    return payload


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
        type=parse_seeds,
        help="seeds: a range 0-9, a list 0,1,2 or both (training/held-out problems and every method's "
        "randomness); each seed is a separate comparison, and the minimum saving is over model x task x seed x repeat",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help=f"search draws per seed: repeat r searches the same problems from the same start with seed "
        f"seed + {REPEAT_STRIDE} * r (repeat 0 is the seed itself)",
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
    if a.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {a.repeats}")
    seeds = a.seeds
    results, rows, savings = [], [], {}
    budgets = []
    for model in models:
        lm = load_model(model)
        smol = model.startswith("smollm")
        budget = a.smollm_budget if smol else a.budget
        budgets.append(budget)
        for task in a.smollm_tasks.split(",") if smol and a.smollm_tasks else tasks:
            n_train = a.n_train if not smol else min(a.n_train, 4)
            for seed in seeds:
                vocabulary = build_vocabulary(lm, get_task(task), seed, n_train=n_train)
                for repeat in range(a.repeats):
                    res = compare(
                        model,
                        task,
                        budget,
                        n_train,
                        a.n_heldout if not smol else min(a.n_heldout, 16),
                        seed,
                        methods,
                        settings
                        if not smol
                        else settings.model_copy(update={"candidates": min(settings.candidates, 16)}),
                        lm=lm,
                        mode="instruction" if smol else a.mode,
                        repeat=repeat,
                        vocabulary=vocabulary,
                    )
                    res["seed"] = seed
                    results.append(res)
                    r, s = summarize(res)
                    rows += [{**row, "seed": seed, "repeat": repeat} for row in r]
                    savings[f"{model}/{task}/seed{seed}" + (f"/repeat{repeat}" if a.repeats > 1 else "")] = s
                    if a.json:  # after every cell: a long run stopped early keeps what it measured
                        write_payload(a.json, rows, savings, results, max(budgets))
    header = ["model", "task", "seed", "repeat", "method", "final held-out accuracy"]
    header += ["calls to best baseline's accuracy", "calls", "evaluations", "s"]
    print()
    print(
        markdown_table(
            header,
            [
                [r["model"], r["task"], r["seed"], r["repeat"], r["method"], r["final_accuracy"]]
                + [r["calls_to_best_baseline_accuracy"] or "never", r["calls"], r["evaluations"], r["seconds"]]
                for r in rows
            ],
        )
    )
    payload = write_payload(a.json, rows, savings, results, max(budgets)) if a.json else None
    payload = payload or build_payload(rows, savings, results, max(budgets))
    print(
        "\ncall savings of mppi vs the best baseline:",
        {k: (None if v is None else round(v, 3)) for k, v in savings.items()},
        "minimum:",
        payload["call_savings_vs_best_baseline"],
    )
    print(f"\nover {len(savings)} cells (never = budget + 1 calls):")
    print(
        markdown_table(
            ["method", "cells", "never", "calls median", "IQR", "win share vs best baseline", "saving median"]
            + ["saving IQR", "saving min", "95% interval of the median saving"],
            [
                [m, d["cells"], d["never"], d["median"], d["iqr"], d["win_share"], d["saving_median"]]
                + [d["saving_iqr"], d["saving_min"], f"[{d['saving_median_low']:.3f}, {d['saving_median_high']:.3f}]"]
                for m, d in payload["methods"].items()
            ],
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
    raise SystemExit(exit_code(main))
