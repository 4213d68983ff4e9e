"""``ponder grpo`` and ``ponder ttrl``: group-relative RL on task prompts, with and without labels."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK, get_task
from ponder.eval import evaluate
from ponder.jobs.base import thought_budget
from ponder.jobs.models import load_model
from ponder.rl import distributed
from ponder.rl.grpo import GRPOConfig, GRPOTrainer
from ponder.rl.ttrl import TTRLConfig, TTRLTrainer
from ponder.train.rundir import open_run, write_json_file


class ModelAndTask(BaseModel):
    """What a GRPO / TTRL job trains, on which task, and how the result is measured."""

    model_config = SETTINGS
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

    if given is not None:
        return given
    return thought_budget(task) if hasattr(task, "sample") else 256


def held_out_think_accuracy(model, tokenizer, task, n: int, budget: int, think_settings=None) -> dict:
    """Greedy think-mode accuracy and mean thought tokens on ``n`` held-out problems (seed 0).

    ``think_settings``: the run's prompt format and thought rules, so the accuracy before and after
    training is measured under the rules the run trained with.
    """

    think = evaluate(
        model, tokenizer, task, n=n, seed=0, modes=("think",), max_thought_tokens=budget, think_settings=think_settings
    ).modes["think"]
    return {"think_accuracy": think.accuracy, "mean_thought_tokens": think.mean_thought_tokens}


def _run(job, config_cls, trainer_cls, resume: bool, progress: bool, allow_config_change: bool) -> dict:
    # Under torchrun / accelerate launch: join the group first so each GPU rank loads onto its own device.
    rank, world = distributed.init_from_env()
    name = trainer_cls.recipe_class.name
    with open_run(job.out, name, job, resume, allow_config_change, rank) as out:
        task = get_task(job.task)
        lm = load_model(job.model, device=distributed.rank_device(job.device, world))
        budget = task_thought_budget(task, job.max_thought_tokens)
        cfg = config_cls(**{**job.model_dump(include=set(config_cls.model_fields)), "max_thought_tokens": budget})
        trainer = trainer_cls(lm.model, lm.tokenizer, task, cfg, out)  # checks the task has enough prompts
        measure = bool(job.eval_n) and rank == 0  # held-out accuracy is measured once, by rank 0
        before = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget, cfg) if measure else {}
        summary = trainer.train(resume=resume, progress=progress)
        if measure:
            after = held_out_think_accuracy(lm.model, lm.tokenizer, task, job.eval_n, budget, cfg)
            summary.update({f"{k}_before": v for k, v in before.items()})
            summary.update({f"{k}_after": v for k, v in after.items()})
        if rank == 0:
            write_json_file(out / f"{name}_summary.json", summary)
    return summary


def run_grpo(job: GRPOJob, resume: bool = True, progress: bool = True, allow_config_change: bool = False) -> dict:
    """GRPO on ``job.task``'s training prompts with the reward mix ``job.reward``: what ``ponder grpo`` runs.

    Data-parallel under ``torchrun`` / ``accelerate launch`` (whole prompt groups per rank). Held-out think
    accuracy is measured before and after when ``job.eval_n`` > 0. Writes checkpoints, ``metrics.jsonl``,
    ``final/`` and ``grpo_summary.json`` into ``job.out``.

    Args:
        job: the settings (every field is a flag of ``ponder grpo``).

    ``resume``, ``progress`` and ``allow_config_change`` are those of :func:`~ponder.jobs.rlp.run_rlp`.

    Returns:
        The summary: step and filter counts, the last metrics and ``think_accuracy_before`` / ``_after``.
    """
    return _run(job, GRPOConfig, GRPOTrainer, resume, progress, allow_config_change)


def run_ttrl(job: TTRLJob, resume: bool = True, progress: bool = True, allow_config_change: bool = False) -> dict:
    """Test-time RL with majority-vote rewards on unlabeled prompts: what ``ponder ttrl`` runs.

    Like :func:`run_grpo`, but ``job.group_size`` votes per prompt are rewarded by agreement with their
    majority answer and ``job.train_samples`` of them are trained on; labels never reach the reward.
    Writes ``ttrl_summary.json``.

    Args:
        job: the settings (every field is a flag of ``ponder ttrl``).

    ``resume``, ``progress`` and ``allow_config_change`` are those of :func:`~ponder.jobs.rlp.run_rlp`.

    Returns:
        The summary, with the majority ratio and (when the problems have labels) the label accuracy.
    """
    return _run(job, TTRLConfig, TTRLTrainer, resume, progress, allow_config_change)
