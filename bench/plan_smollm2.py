"""Thoughts-as-Planning on SmolLM2-135M against the prompt optimizers users run (DSPy), cell by cell.

A cell is one task, one seed and one method: ponder's planners and baselines search from the
start chain of ``bench/plan_compare.py`` (instruction mode) within ``--budget`` real calls; DSPy's
optimizers (``mipro``: MIPROv2, ``bootstrap_rs``: BootstrapFewShotWithRandomSearch; optional extra
``dspy``) optimise the same task as a DSPy program on the same training and held-out problems,
every call counted by the same counter (``ponder.plan.dspy_program``). Each finished cell is
written to ``--json`` at once and skipped when the command is rerun, so a stopped run resumes.

What a call is, on each side (the same counter, ``ponder.plan.env.Counters``): for ponder's methods
one call per training input an evaluation reads (one prefill of the chain's prompt and the reference
answer gives the reference's log-likelihood, the prompt's KV cache then serves the greedy answer:
``ponder.plan.fused``), plus one per LM proposal sample (evolution's mutations); for DSPy one call
per request its optimizer sends (a task run, a bootstrapping rollout, an instruction proposal). The
tokens read and written are recorded beside the calls in every cell (``tokens``, ``generated_tokens``).
Before issue 28's third session a ponder evaluation cost two calls per input (the answer and the
reference's log-likelihood asked separately).

Per task and seed, the target is the best baseline's final held-out accuracy (baselines: random,
hill, evolution and the DSPy methods); a method's ``calls_to_target`` is the real calls at which its
held-out curve first reached it (DSPy returns one program at its end: its calls used, if that
program reaches the target). The summary gives per task and method the medians over seeds and the
saving ``1 - calls / best baseline's calls`` (a method that never reached the target counts
``budget + 1`` calls) with its median and 95% bootstrap interval (``ponder.report.stats``).

    OMP_NUM_THREADS=1 python bench/plan_smollm2.py --tasks rg:count_bits --seeds 0-4 --n-train 8 --n-heldout 32 \\
        --json bench/results/plan_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ponder.config import add_model_arguments, config_from_args, parse_seeds
from ponder.data.registry import get_task
from ponder.errors import ConfigError, exit_code
from ponder.jobs.plan import METHODS, PlannerSettings, build_vocabulary
from ponder.models.lookup import load_model
from ponder.plan.env import PlanEnv
from ponder.plan.state import distinct
from ponder.report.stats import rank_correlation
from ponder.report.tables import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from plan_compare import BASELINE_METHODS, compare, method_distributions, summarize  # noqa: E402  (a sibling script)

DSPY = ("mipro", "bootstrap_rs")
#: A ponder method under other settings, measured beside its default: name -> (method, settings changed).
VARIANTS = {"mppi_ridge": ("mppi", {"value_head": "ridge"})}
DEFAULT_METHODS = ("mppi", "gradient", "random", "hill", "evolution", *DSPY)


def load_cells(path: str | None) -> list[dict]:
    """The finished cells a previous run wrote to ``path``, as :func:`run_cell` returns them."""
    if not path or not Path(path).is_file():
        return []
    cells = json.loads(Path(path).read_text()).get("cells", [])
    # The file stores a cell under the names; summarize() reads a run's own.
    return [
        {
            **c,
            "best_heldout_accuracy": c.get("best_heldout_accuracy", c.get("final_heldout_accuracy")),
            "calls": c.get("calls", c.get("calls_used")),
            "evaluations": c.get("evaluations"),
        }
        for c in cells
    ]


def run_cell(lm, task: str, seed: int, method: str, a, settings, vocab) -> dict:
    """One method on one task and seed: its summary (``best_heldout_accuracy``, ``calls``, ``curve``, ...)."""
    t0 = time.time()
    if method in DSPY:
        from ponder.plan.dspy_program import DSPySettings, optimize  # the optional extra

        env = PlanEnv(lm, get_task(task), n_train=a.n_train, n_heldout=a.n_heldout, seed=seed)
        start = vocab[0].instructions[:1]
        _, run = optimize(method, env, start, DSPySettings(trials=a.dspy_trials, candidates=a.dspy_candidates), seed)
    else:
        method_run, changed = VARIANTS.get(method, (method, {}))
        res = compare(
            lm.name,
            task,
            a.budget,
            a.n_train,
            a.n_heldout,
            seed,
            (method_run,),
            settings.model_copy(update=changed),
            lm=lm,
            log=lambda *_: None,
            mode="instruction",
            vocabulary=vocab,
        )
        run = res["runs"][method_run]
        run.pop("trajectory", None)
        run.pop("diagnostics", None)
    # What the cell was measured on: distinct problems (PlanEnv never repeats one), so a task whose test split is
    # small (add1: 10 problems) shows it here.
    sizes = {"n_train": a.n_train, "n_heldout": len(distinct(get_task(task).problems(a.n_heldout, seed, "test")))}
    return {"task": task, "method": method, "seed": seed, **run, **sizes, "seconds": round(time.time() - t0, 1)}


def payload(cells: list[dict], budget: int, baselines) -> dict:
    """``cells`` with ``calls_to_target`` filled where every method of the cell's task and seed has run, and the summary."""
    by_cell: dict[tuple, dict[str, dict]] = {}
    for c in cells:
        by_cell.setdefault((c["task"], c["seed"]), {})[c["method"]] = c
    rows = []
    out_cells = []
    for (task, seed), runs in sorted(by_cell.items()):
        r, _ = summarize({"model": "smollm2-135m", "task": task, "runs": runs}, baselines)
        rows += [{**row, "seed": seed, "repeat": 0} for row in r]
        reach = {row["method"]: row["calls_to_best_baseline_accuracy"] for row in r}
        for m, c in runs.items():
            out_cells.append(
                {
                    "task": task,
                    "method": m,
                    "seed": seed,
                    "calls_to_target": reach.get(m),
                    "final_heldout_accuracy": c["best_heldout_accuracy"] or 0.0,
                    "calls_used": c["calls"],
                    "n_train": c.get("n_train"),
                    "n_heldout": c.get("n_heldout"),
                    "evaluations": c.get("evaluations"),
                    "tokens": c.get("tokens"),
                    "generated_tokens": c.get("generated_tokens"),
                    "seconds": c["seconds"],
                    "best_baseline": r[0].get("best_baseline"),
                    "best_chain": c.get("best_chain"),
                    "curve": c["curve"],
                }
            )
    summary = []
    for task in sorted({c["task"] for c in out_cells}):
        task_rows = [row for row in rows if row["task"] == task]
        dist = method_distributions(task_rows, budget)
        for m in dict.fromkeys(c["method"] for c in out_cells if c["task"] == task):
            mine = [c for c in out_cells if c["task"] == task and c["method"] == m]
            reached = [budget + 1 if c["calls_to_target"] is None else c["calls_to_target"] for c in mine]
            d = dist.get(m, {})
            summary.append(
                {
                    "task": task,
                    "method": m,
                    "seeds": len(mine),
                    "calls_to_target_median": statistics.median(reached),
                    "never": sum(c["calls_to_target"] is None for c in mine),
                    "final_heldout_accuracy_median": statistics.median(c["final_heldout_accuracy"] for c in mine),
                    "calls_used_median": statistics.median(c["calls_used"] for c in mine),
                    "seconds_median": statistics.median(c["seconds"] for c in mine),
                    "saving_vs_best_baseline_median": d.get("saving_median"),
                    "saving_interval": [d.get("saving_median_low"), d.get("saving_median_high")] if d else None,
                    "win_share": d.get("win_share"),
                }
            )
    return {
        "budget": budget,
        "baselines": list(baselines),
        "cells": out_cells,
        "summary": summary,
        "diagnostics": [
            noise(task, [c for c in out_cells if c["task"] == task]) for task in sorted({c["task"] for c in out_cells})
        ],
    }


def noise(task: str, cells: list[dict]) -> dict:
    """Whether a task can separate the methods: does the training value of a returned chain predict its held-out
    accuracy (Spearman over the cells), and how large a held-out accuracy's binomial standard error is."""
    last = [c["curve"][-1] for c in cells]
    pairs = [
        (point.get("best_train_accuracy", point.get("best_value")), c["final_heldout_accuracy"])
        for point, c in zip(last, cells)
    ]
    pairs = [(t, h) for t, h in pairs if t is not None]  # a cell stored without its training figure
    held = [c["final_heldout_accuracy"] for c in cells]
    p, n = statistics.median(held), statistics.median(c.get("n_heldout") or 0 for c in cells)
    return {
        "task": task,
        "cells": len(cells),
        "train_heldout_rank_correlation": rank_correlation(*zip(*pairs)) if len(pairs) > 1 else None,
        "heldout_accuracy_median": p,
        "heldout_binomial_se": math.sqrt(p * (1 - p) / n) if n else None,
    }


def write(path: str | None, cells: list[dict], budget: int, baselines) -> dict:
    data = payload(cells, budget, baselines)
    if path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, path)  # a run killed while writing keeps the previous file
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="add1,add2")
    p.add_argument("--seeds", default="0", type=parse_seeds, help="a range 0-4, a list 0,1,2 or both")
    known = METHODS + DSPY + tuple(VARIANTS)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {known}")
    p.add_argument("--budget", type=int, default=240, help="real LM calls per ponder method")
    p.add_argument("--n-train", type=int, default=4, help="training inputs every evaluation averages over")
    p.add_argument("--n-heldout", type=int, default=16)
    p.add_argument("--dspy-trials", type=int, default=12, help="MIPROv2 trials")
    p.add_argument("--dspy-candidates", type=int, default=6, help="MIPROv2 candidates; random-search programs")
    add_model_arguments(p, PlannerSettings)
    p.add_argument("--json", metavar="PATH", help="cells and summary; finished cells found here are skipped")
    p.add_argument("--no-run", action="store_true", help="run no cell: rewrite --json's summary from its stored cells")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    methods = tuple(a.methods.split(","))
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"unknown methods {unknown}; known: {known}")
    settings = config_from_args(PlannerSettings, a)
    settings = settings.model_copy(update={"candidates": min(settings.candidates, 16)})
    # Every baseline a task and seed has run sets its target, whichever methods this invocation runs
    # (a rerun with --methods mppi must not lose the targets of the cells stored before).
    baselines = (*BASELINE_METHODS, *DSPY)
    cells = load_cells(a.json)
    done = {(c["task"], c["seed"], c["method"]) for c in cells}
    lm = None
    for task in [] if a.no_run else a.tasks.split(","):
        for seed in a.seeds:
            todo = [m for m in methods if (task, seed, m) not in done]
            if not todo:
                continue
            lm = lm or load_model(a.model)
            vocab = build_vocabulary(lm, get_task(task), seed, n_train=a.n_train)
            for m in todo:
                cell = run_cell(lm, task, seed, m, a, settings, vocab)
                cells.append(cell)
                write(a.json, cells, a.budget, baselines)
                print(
                    f"{task} seed {seed} {m:12s} held-out {cell['best_heldout_accuracy']:.3f} calls {cell['calls']}"
                    f"  {cell['seconds']:.0f} s",
                    flush=True,
                )
    print_summary(write(a.json, cells, a.budget, baselines))
    return 0


def print_summary(data: dict) -> None:
    print(
        markdown_table(
            ["task", "method", "seeds", "calls to target (median)", "never", "final held-out (median)", "calls used"]
            + ["saving median", "95% interval", "s (median)"],
            [
                [s["task"], s["method"], s["seeds"], s["calls_to_target_median"], s["never"]]
                + [s["final_heldout_accuracy_median"], s["calls_used_median"], s["saving_vs_best_baseline_median"]]
                + [s["saving_interval"], s["seconds_median"]]
                for s in data["summary"]
            ],
        )
    )
    for d in data.get("diagnostics", []):
        print(
            f"{d['task']}: {d['cells']} cells; rank correlation of the returned chain's training accuracy with its held-out "
            f"accuracy {d['train_heldout_rank_correlation']}; held-out median {d['heldout_accuracy_median']}, binomial "
            f"standard error {d['heldout_binomial_se']}"
        )


if __name__ == "__main__":
    raise SystemExit(exit_code(main))
