"""Teacher-refined data filtered by the student's own loss profile, on the tiny models.

Teacher: the default ``tiny`` base (think accuracy 0.86 on ``add3-5``). Student: a weaker model,
by default the same recipe stopped after 400 steps (``ponder.jobs.refine.weak_student_job``).
For each seed, ``--n-train`` training problems are written two ways: the original ``prompt
answer`` (the label, no reasoning) and the teacher's refinement ``prompt <think>its worked
thought</think> its answer`` (greedy, not checked against the label). The student scores both
(mean per-token loss of the response), and is then trained for the same steps on:

* ``originals``: originals only;
* ``all``: every refinement;
* ``loss-band``: the refinement where the student's loss on it is at most its loss on the
  original (band upper 0, ``ponder.data.refine.loss_band_mask``), else the original;
* ``quantile``: the refinement where its loss is at most the 0.75-quantile of the student's
  losses on all refinements (``quantile_mask``: its rank among them), else the original;
* ``quantile-gap``: the same rank rule on the gap ``refined - original`` (how much easier than
  the original the refinement is, for the student);
* ``oracle``: the refinement where the teacher's answer is right (uses labels: a diagnostic
  bound for what a filter could gain, not a method);
* ``quantile-gap-drop``, ``oracle-drop``: the same selections, but a dropped refinement is left out
  rather than replaced by its original (diagnostic: are the dropped refinements bad, or the
  originals put in their place?).

Measured: held-out think / no-think accuracy (greedy), refinements kept, and how many of the
teacher's wrong refinements each filter kept; per seed, the teacher's accuracy on the training
problems and how well the student's losses flag its errors (ROC AUC). A condition whose selection
equals an earlier one's (e.g. a band that keeps every refinement) reuses that run: training is
deterministic given the documents and the seed.

Usage (about 30 minutes on one core for 3 seeds, once the two base models are cached)::

    OMP_NUM_THREADS=1 python bench/refine_filter.py --json refine_filter.json
    python bench/refine_filter.py --quick --teacher DIR --student DIR     # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ponder.config import parse_choices, parse_seeds
from ponder.data.refine import RefineFilter, keep_mask
from ponder.data.registry import get_task
from ponder.data.task import thought_budget
from ponder.errors import PonderError
from ponder.eval.accuracy import evaluate
from ponder.jobs.refine import RefineJob, build_table, student_spec, train_on_selection
from ponder.models.lookup import load_model
from ponder.report.tables import markdown_table, seed_cells, seed_summary

FILTERS: dict[str, RefineFilter] = {
    "originals": RefineFilter(rule="none"),
    "all": RefineFilter(rule="all"),
    "loss-band": RefineFilter(rule="loss_band", upper=0.0),
    "quantile": RefineFilter(rule="quantile", q=0.75),
    "quantile-gap": RefineFilter(rule="quantile", q=0.75, statistic="gap"),
}
CONDITIONS = (*FILTERS, "oracle", "quantile-gap-drop", "oracle-drop")
#: Suffix of a condition that trains on the kept refinements only (nothing in place of a dropped one).
DROP = "-drop"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="add3-5")
    p.add_argument("--teacher", default="tiny", help="tiny (default) or a HF model directory")
    p.add_argument("--student", default=None, help="model name or HF directory (default: the weak student)")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="subset of " + ", ".join(CONDITIONS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-train", type=int, default=1000, help="training problems per seed")
    p.add_argument("--teacher-temperature", type=float, default=0.0, help="0: greedy refinements")
    p.add_argument("--steps", type=int, default=120, help="student training steps (same for every condition)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help="a few problems and steps, one seed: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.n_train, args.steps, args.batch, args.eval_n = "0", 16, 2, 4, 8
    try:
        args.conditions = parse_choices(args.conditions, CONDITIONS, "conditions")
        args.seeds = parse_seeds(args.seeds)  # 0-9, 0,1,2 or a mix
    except PonderError as e:
        p.error(str(e))
    return args


def condition_mask(name: str, table) -> torch.Tensor:
    name = name.removesuffix(DROP)
    if name == "oracle":
        return table.teacher_correct >= 1
    return keep_mask(FILTERS[name], table.loss_original, table.loss_refined)


def detection_auc(scores: torch.Tensor, positive: torch.Tensor) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting half (the ROC AUC);
    None when either class is empty. Here: how well a loss table flags the teacher's wrong refinements."""
    pos, neg = scores[positive], scores[~positive]
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def table_stats(table) -> dict:
    wrong = table.teacher_correct < 1
    return {
        "auc_wrong_by_refined_loss": detection_auc(table.loss_refined, wrong),
        "auc_wrong_by_loss_gap": detection_auc(table.loss_refined - table.loss_original, wrong),
        "teacher_train_accuracy": float(table.teacher_correct.mean()),
        "loss_original_mean": float(table.loss_original.mean()),
        "loss_refined_mean": float(table.loss_refined.mean()),
        "loss_refined_mean_teacher_right": float(table.loss_refined[~wrong].mean()) if (~wrong).any() else None,
        "loss_refined_mean_teacher_wrong": float(table.loss_refined[wrong].mean()) if wrong.any() else None,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="refine-filter-"))
    task = get_task(args.task)
    rows: dict[str, list[dict]] = {name: [] for name in args.conditions}
    seeds_info, start = [], time.time()
    for seed in args.seeds:
        base = RefineJob()
        job = RefineJob(
            task=args.task,
            teacher=args.teacher,
            student=args.student,
            n_train=args.n_train,
            teacher_temperature=args.teacher_temperature,
            eval_n=args.eval_n,
            seed=seed,
            train=base.train.model_copy(
                update={
                    "steps": args.steps,
                    "batch_size": args.batch,
                    "lr": args.lr,
                    "save_every": args.steps,
                    "warmup_steps": min(base.train.warmup_steps, args.steps),
                }
            ),
        )
        table = build_table(job)
        student = load_model(student_spec(job))
        before = evaluate(
            student.model, student.tokenizer, task, n=args.eval_n, seed=seed, max_thought_tokens=thought_budget(task)
        )
        info = {"seed": seed, **table_stats(table), "student_before": before.to_json()}
        seeds_info.append(info)
        print(
            f"seed {seed}: teacher right on {info['teacher_train_accuracy']:.3f} of the training problems; student "
            f"think acc before {before.modes['think'].accuracy:.3f}; student loss original "
            f"{info['loss_original_mean']:.3f}, refined {info['loss_refined_mean']:.3f} "
            f"(teacher right {info['loss_refined_mean_teacher_right']}, wrong {info['loss_refined_mean_teacher_wrong']}); "
            f"AUC of the refined loss for the teacher's errors {info['auc_wrong_by_refined_loss']}",
            flush=True,
        )
        runs: dict[bytes, tuple[str, dict]] = {}
        for name in args.conditions:
            keep = condition_mask(name, table)
            fallback = "drop" if name.endswith(DROP) else "original"
            key = fallback.encode() + keep.numpy().tobytes()
            if key in runs:
                same, summary = runs[key]
                summary = {**summary, "same_selection_as": same}
            else:
                summary = train_on_selection(job, table, keep, root / f"s{seed}-{name}", fallback=fallback)
                runs[key] = (name, summary)
            summary["wrong_refinements"] = int((table.teacher_correct < 1).sum())
            rows[name].append(summary)
            ev = summary["eval"]
            print(
                f"  {name:10s} kept {summary['kept']:4d} (wrong {summary['kept_wrong']}/{summary['wrong_refinements']}) "
                f"think {ev['think']['accuracy']:.3f} no-think {ev['no_think']['accuracy']:.3f} "
                f"{'(same selection as ' + summary['same_selection_as'] + ') ' if 'same_selection_as' in summary else ''}"
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
    results = {name: summarize(r) for name, r in rows.items()}
    print_table(results, seeds_info, args)
    data = {
        "task": args.task,
        "seeds": args.seeds,
        "per_seed": seeds_info,
        "conditions": results,
        "seconds": time.time() - start,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return data


def summarize(rows: list[dict]) -> dict:
    think = [r["eval"]["think"]["accuracy"] for r in rows]
    return {
        "think": seed_summary(think),
        "no_think": statistics.mean(r["eval"]["no_think"]["accuracy"] for r in rows),
        "thought_tokens": statistics.mean(r["eval"]["think"]["mean_thought_tokens"] for r in rows),
        "kept": statistics.mean(r["kept"] for r in rows),
        "documents": statistics.mean(r["documents"] for r in rows),
        "kept_wrong": statistics.mean(r["kept_wrong"] for r in rows),
        "wrong_refinements": statistics.mean(r["wrong_refinements"] for r in rows),
        "tokens_seen": statistics.mean(r["tokens_seen"] for r in rows),
    }


def print_table(results: dict, seeds_info: list[dict], args) -> None:
    before = statistics.mean(s["student_before"]["think"]["accuracy"] for s in seeds_info)
    teacher = statistics.mean(s["teacher_train_accuracy"] for s in seeds_info)
    print(
        f"\n{args.task}: student think accuracy before {before:.3f}; teacher right on {teacher:.3f} of "
        f"{args.n_train} training problems; {len(args.seeds)} seed(s), {args.eval_n} held-out problems, greedy"
    )
    columns = [
        "training set",
        "documents",
        "refinements kept",
        "wrong ones kept",
        "think acc",
        "std",
        "per seed",
        "no-think acc",
    ]
    rows = [
        [
            name,
            f"{r['documents']:.0f}",
            f"{r['kept']:.0f}",
            f"{r['kept_wrong']:.0f} / {r['wrong_refinements']:.0f}",
            seed_cells(r["think"]),
            f"{r['no_think']:.3f}",
            f"{r['tokens_seen']:.0f}",
        ]
        for name, r in results.items()
    ]
    print(markdown_table([*columns, "tokens"], rows))


if __name__ == "__main__":
    main()
