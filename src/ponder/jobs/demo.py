"""``ponder demo``: base -> RLP -> compute-matched CPT -> eval, on the built-in tiny model.

Nothing is downloaded. The base model is the cached ``tiny-lazy`` model (trained on first use,
:func:`~ponder.models.tiny_base.lazy_base_job`): the tiny model after a short next-token phase on
documents where most thoughts are a bare pause, so it can work the steps in a thought but about
half the time does not. (On the default ``tiny`` base, which always works the steps when it
thinks, RLP has nothing left to teach: ``bench/RESULTS.md``.)
For each seed, RLP and FLOP-matched CPT start from the base and read the same corpus: the
demo task's training problems written as plain text (``prompt answer``, no scratchpad), i.e.
ordinary text in which thinking could help but is never shown. Each model is then measured
on held-out problems (greedy think and no-think accuracy) and on held-out documents (the
information gain of its own thoughts at answer positions and elsewhere).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel, Field

from ponder.config import SETTINGS, SeedList
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.sources import TaskSource
from ponder.data.task import thought_budget
from ponder.eval.accuracy import evaluate
from ponder.eval.info_gain import information_gain
from ponder.jobs.rlp import CPTJob, RLPJob, run_cpt, run_rlp
from ponder.lm.load import load_hf_dir
from ponder.models.lookup import load_model, model_path
from ponder.models.tiny_base import ensure_lazy_tiny
from ponder.progress import console
from ponder.report.demo_report import write_demo_report
from ponder.report.stats import compare, iqr, median
from ponder.rl.positions import tokenize_docs
from ponder.rl.rlp import RLPConfig
from ponder.train.rundir import open_run, write_json_file


def _demo_rlp() -> RLPConfig:
    # lr 3e-5: 1e-4 collapsed think accuracy (0.84 -> 0.22 in 40 steps), 1e-5 left it unchanged.
    # think_prob: positions where the baseline would open a thought (the answer starts, here).
    return RLPConfig(
        steps=40,
        docs_per_step=16,
        group_size=8,
        micro_batch=None,  # the tiny model fits whole: one pass, as when the recorded results were measured
        max_thought_tokens=56,
        context_length=128,
        temperature=0.7,
        lr=3e-5,
        warmup_steps=5,
        ema_tau=0.999,
        save_every=20,
        position_weighting="think_prob",
    )


class DemoJob(BaseModel):
    """Settings of ``ponder demo``."""

    model_config = SETTINGS
    seeds: SeedList = Field(
        [0, 1, 2], min_length=1, description="seeds of the RLP and CPT runs: a range 0-9, a list 0,1,2 or both"
    )
    task: str = Field(DEMO_TASK, description="demo task")
    base: str | None = Field(
        None,
        description="base model: a directory, or a built-in name such as tiny-lazy@1 (the demo base retrained "
        "from base seed 1); default: the cached tiny-lazy model, trained on first use",
    )
    out: str = Field("runs/demo", description="output directory (runs, JSON, HTML report)")
    eval_n: int = Field(200, ge=1, description="held-out problems per evaluation")
    info_gain_docs: int = Field(32, ge=1, description="held-out documents for the information-gain measurement")
    cpt_batch_size: int = Field(64, ge=1, description="documents per CPT step")
    cpt_lr: float = Field(3e-5, gt=0, description="CPT learning rate")
    rlp: RLPConfig = Field(default_factory=_demo_rlp)

    @classmethod
    def quick(cls) -> DemoJob:
        """One seed, small budgets: a smoke run of the whole pipeline in a few minutes."""
        rlp = _demo_rlp().model_copy(update={"steps": 10, "docs_per_step": 8, "save_every": 5})
        return cls(seeds=[0], eval_n=100, info_gain_docs=16, rlp=rlp, out="runs/demo-quick")


def _measure(model, tokenizer, task, job: DemoJob, heldout_docs, seed: int = 0) -> dict:

    res = evaluate(model, tokenizer, task, n=job.eval_n, seed=0, max_thought_tokens=thought_budget(task))
    ig = information_gain(
        model, tokenizer, heldout_docs, group_size=4, max_thought_tokens=job.rlp.max_thought_tokens, seed=seed
    )
    return {
        "think_accuracy": res.modes["think"].accuracy,
        "no_think_accuracy": res.modes["no_think"].accuracy,
        "mean_thought_tokens": res.modes["think"].mean_thought_tokens,
        "info_gain_answer": ig["answer"],
        "info_gain_other": ig["other"],
    }


def _aggregate(per_seed: list[dict], seeds: list[int]) -> dict:
    """Means over seeds, and each figure's ``<key>_median`` and ``<key>_iqr`` beside them."""
    keys = per_seed[0].keys()
    out = {k: statistics.fmean(r[k] for r in per_seed) for k in keys}
    for k in keys:
        values = [r[k] for r in per_seed]
        out[f"{k}_median"], out[f"{k}_iqr"] = median(values), iqr(values)
    out["think_accuracy_per_seed"] = [r["think_accuracy"] for r in per_seed]
    out["think_accuracy_std"] = statistics.pstdev(out["think_accuracy_per_seed"]) if len(per_seed) > 1 else 0.0
    out["per_seed"] = {str(s): r for s, r in zip(seeds, per_seed)}
    return out


def _versus(method: list[float], comparison: list[float] | float) -> dict:
    """Win share and the mean paired gain's bootstrap interval of ``method``'s think accuracy per seed."""
    c = compare(method, comparison)
    return {"win_share": c["win_share"], "gain_mean": c["diff"], "gain_low": c["diff_low"], "gain_high": c["diff_high"]}


def run_demo(job: DemoJob, progress: bool = True, allow_config_change: bool = False) -> dict:
    """Base, then RLP and CPT per seed (each resumed when rerun), measured; writes ``demo.json`` and the report."""

    with open_run(job.out, "demo", job) as out:
        return _demo(job, out, progress, allow_config_change)


def _demo(job: DemoJob, out: Path, progress: bool, allow_config_change: bool) -> dict:

    task = get_task(job.task)
    base_dir = Path(model_path(job.base)) if job.base else ensure_lazy_tiny(progress=progress)
    console.print(f"[bold]ponder demo[/]: base model {base_dir}; runs under {out}")
    base = load_model(str(base_dir))
    held = TaskSource(task, seed=0, split="test").stream()
    heldout_docs = tokenize_docs(
        base.tokenizer, [next(held) for _ in range(job.info_gain_docs)], job.rlp.context_length
    )

    results = {"base": _measure(base.model, base.tokenizer, task, job, heldout_docs)}
    rows = {"rlp": [], "cpt": []}
    for seed in job.seeds:
        rlp_dir, cpt_dir = out / f"rlp-s{seed}", out / f"cpt-s{seed}"
        rlp_job = RLPJob(
            **{**job.rlp.model_dump(), "seed": seed, "model": str(base_dir), "task": job.task, "out": str(rlp_dir)}
        )
        run_rlp(rlp_job, resume=True, progress=progress, allow_config_change=allow_config_change)
        cpt_job = CPTJob(
            model=str(base_dir),
            task=job.task,
            out=str(cpt_dir),
            seed=seed,
            match_run=str(rlp_dir),
            match="flop",
            batch_size=job.cpt_batch_size,
            lr=job.cpt_lr,
            warmup_steps=5,
            min_lr_ratio=1.0,
            max_length=job.rlp.context_length,
            save_every=10**6,
        )
        run_cpt(cpt_job, resume=True, progress=progress, allow_config_change=allow_config_change)
        for name, d in (("rlp", rlp_dir), ("cpt", cpt_dir)):
            model, tok = load_hf_dir(d / "final")
            rows[name].append(_measure(model.eval(), tok, task, job, heldout_docs, seed))
        # each finished seed on disk: a long run stopped early still leaves its distribution so far
        write_json_file(out / "demo_partial.json", {"seeds": job.seeds[: len(rows["rlp"])], **results, **rows})
    results["rlp"] = _aggregate(rows["rlp"], job.seeds)
    results["cpt"] = _aggregate(rows["cpt"], job.seeds)
    results["base"]["think_accuracy_per_seed"] = [results["base"]["think_accuracy"]]
    for k in list(rows["rlp"][0]):  # the base is measured once: its median is its figure, its IQR 0
        results["base"][f"{k}_median"], results["base"][f"{k}_iqr"] = results["base"][k], 0.0
    rlp_acc = results["rlp"]["think_accuracy_per_seed"]
    results["rlp"]["think_accuracy_vs_base"] = _versus(rlp_acc, results["base"]["think_accuracy"])
    results["rlp"]["think_accuracy_vs_cpt"] = _versus(rlp_acc, results["cpt"]["think_accuracy_per_seed"])
    results["cpt"]["think_accuracy_vs_base"] = _versus(
        results["cpt"]["think_accuracy_per_seed"], results["base"]["think_accuracy"]
    )
    payload = {"seeds": job.seeds, "task": job.task, "eval_n": job.eval_n, **results}
    write_json_file(out / "demo.json", payload)

    write_demo_report(payload, out, job)
    return payload
