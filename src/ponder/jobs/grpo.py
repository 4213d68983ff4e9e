"""``ponder grpo`` and ``ponder ttrl``: group-relative RL on task prompts, with and without labels."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ponder.data.registry import DEMO_TASK
from ponder.rl.grpo import GRPOConfig, TTRLConfig


class ModelAndTask(BaseModel):
    """What a GRPO / TTRL job trains, on which task, and how the result is measured."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(DEMO_TASK, description="task whose problems give the prompts (see `ponder tasks`)")
    eval_n: int = Field(200, ge=0, description="held-out problems measured (greedy, think) before and after; 0: skip")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


class GRPOJob(GRPOConfig, ModelAndTask):
    """Settings of ``ponder grpo``."""

    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    out: str = Field("runs/grpo", description="run directory (checkpoints, metrics, final model)")


class TTRLJob(TTRLConfig, ModelAndTask):
    """Settings of ``ponder ttrl``."""

    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    out: str = Field("runs/ttrl", description="run directory (checkpoints, metrics, final model)")


def task_thought_budget(task, given: int | None) -> int:
    from ponder.jobs.base import thought_budget

    if given is not None:
        return given
    return thought_budget(task) if hasattr(task, "sample") else 256


def held_out_think_accuracy(model, tokenizer, task, n: int, budget: int) -> dict:
    """Greedy think-mode accuracy and mean thought tokens on ``n`` held-out problems (seed 0)."""
    from ponder.eval import evaluate

    think = evaluate(model, tokenizer, task, n=n, seed=0, modes=("think",), max_thought_tokens=budget).modes["think"]
    return {"think_accuracy": think.accuracy, "mean_thought_tokens": think.mean_thought_tokens}


def _run(job, config_cls, trainer_cls, resume: bool, progress: bool) -> dict:
    from ponder.data.registry import get_task
    from ponder.lm.load import load_model

    task = get_task(job.task)
    lm = load_model(job.model, device=job.device)
    budget = task_thought_budget(task, job.max_thought_tokens)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{trainer_cls.name}_job.json").write_text(job.model_dump_json(indent=2))
    cfg = config_cls(**{**job.model_dump(include=set(config_cls.model_fields)), "max_thought_tokens": budget})
    before = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget) if job.eval_n else {}
    summary = trainer_cls(lm.model, lm.tokenizer, task, cfg, out).train(resume=resume, progress=progress)
    if job.eval_n:
        after = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget)
        summary.update({f"{k}_before": v for k, v in before.items()})
        summary.update({f"{k}_after": v for k, v in after.items()})
    (out / f"{trainer_cls.name}_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_grpo(job: GRPOJob, resume: bool = True, progress: bool = True) -> dict:
    from ponder.rl.grpo import GRPOTrainer

    return _run(job, GRPOConfig, GRPOTrainer, resume, progress)


def run_ttrl(job: TTRLJob, resume: bool = True, progress: bool = True) -> dict:
    from ponder.rl.grpo import TTRLTrainer

    return _run(job, TTRLConfig, TTRLTrainer, resume, progress)
