"""``ponder grpo`` and ``ponder ttrl``: group-relative RL on task prompts, with and without labels."""

from __future__ import annotations

from pydantic import BaseModel, Field
from rich.markup import escape

from ponder.config import SETTINGS
from ponder.data.answers import ANSWER_RULE_HELP, check_rule
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import task_thought_budget
from ponder.eval.accuracy import held_out_think_accuracy
from ponder.models.lookup import load_model
from ponder.progress import console
from ponder.rl.grpo import GRPOConfig, GRPOTrainer
from ponder.rl.ttrl import TTRLConfig, TTRLTrainer
from ponder.train import distributed
from ponder.train.rundir import open_run, write_json_file

#: Exit status of ``ponder grpo`` / ``ponder ttrl`` when no step trained (2 stays the status of bad input).
TRAINED_NOTHING_EXIT = 3
#: Most held-out problems the default evaluation measures.
EVAL_N_CAP = 200


def default_eval_n(steps: int, prompts_per_step: int) -> int:
    """Held-out problems measured before and after a run of ``steps`` x ``prompts_per_step`` prompts.

    ``min(EVAL_N_CAP, steps * prompts_per_step)``: a run samples G completions of each of its prompts,
    the two measurements one greedy completion per problem each, so they cost at most 2/G of training's
    sampling; a 2-step smoke run is not wrapped in 200 problems.
    """
    return min(EVAL_N_CAP, steps * prompts_per_step)


def untrained_steps_message(summary: dict) -> str | None:
    """One line on steps that trained nothing (None when every step trained), from a run's summary."""
    steps, trained = summary["steps"], summary["steps_trained"]
    if trained == steps:
        return None
    why = (
        f"groups over the run: {summary.get('groups_trained', 0)} trained, "
        f"{summary.get('groups_equal_filtered', 0)} set aside as equal-reward (no signal), "
        f"{summary.get('groups_hard_set_aside', 0)} as too hard (pass rate 0)"
    )
    if summary.get("skipped_nonfinite"):
        why += f"; {summary['skipped_nonfinite']} updates skipped as non-finite"
    if trained:
        return f"{steps - trained} of {steps} steps trained nothing ({why})"
    hints = []
    if summary.get("groups_hard_set_aside"):
        hints.append("a task or model that solves some problems (prompts with pass rate 0 are set aside)")
    if summary.get("groups_equal_filtered"):
        hints.append(
            "a reward that varies within a group (another --reward mix), a larger --group-size or a higher --temperature"
        )
    return (
        f"the run trained nothing: {f'none of its {steps} steps changed' if steps > 1 else 'its one step did not change'} "
        f"the weights ({why}), so no checkpoint and "
        "no final model were written" + (". Give it signal: " + "; or ".join(hints) if hints else "")
    )


class ModelAndTask(BaseModel):
    """What a GRPO / TTRL job trains, on which task, and how the result is measured."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(DEMO_TASK, description="task whose problems give the prompts (see `ponder tasks`)")
    # The reward reads answers as evaluation does: a chat model answers in a sentence ("5 + 9 = 14."), which the
    # default first_line rule never matches, so a verifiable reward would be 0 on every completion (issue 27).
    answer_rule: str | None = Field(None, description=ANSWER_RULE_HELP)
    eval_n: int | None = Field(
        None,
        ge=0,
        description=f"held-out problems measured (greedy, think) before and after; default min({EVAL_N_CAP}, steps x "
        "prompts-per-step): the two measurements then sample at most 2/G as many completions as training; 0: skip",
    )
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


class GRPOJob(GRPOConfig, ModelAndTask):
    """Settings of ``ponder grpo``."""

    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    out: str = Field("runs/grpo", description="run directory (checkpoints, metrics, final model)")


class TTRLJob(TTRLConfig, ModelAndTask):
    """Settings of ``ponder ttrl``."""

    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    out: str = Field("runs/ttrl", description="run directory (checkpoints, metrics, final model)")


def _run(job, config_cls, trainer_cls, resume: bool, progress: bool, allow_config_change: bool) -> dict:
    # Under torchrun / accelerate launch: join the group first so each GPU rank loads onto its own device.
    rank, world = distributed.init_from_env()
    name = trainer_cls.recipe_class.name
    rule = check_rule(job.answer_rule) if job.answer_rule is not None else None  # bad input: before the run exists
    with open_run(job.out, name, job, resume, allow_config_change, rank) as out:
        task = get_task(job.task)
        if rule is not None:
            task.answer_rule = rule
        # The job's thought format also says how new <think>/</think> rows start (a model without them).
        lm = load_model(job.model, device=distributed.rank_device(job.device, world), think_settings=job)
        budget = task_thought_budget(task, job.max_thought_tokens)
        cfg = config_cls(**{**job.model_dump(include=set(config_cls.model_fields)), "max_thought_tokens": budget})
        trainer = trainer_cls(lm.model, lm.tokenizer, task, cfg, out)  # checks the task has enough prompts
        eval_n = default_eval_n(job.steps, job.prompts_per_step) if job.eval_n is None else job.eval_n
        measure = bool(eval_n) and rank == 0  # held-out accuracy is measured once, by rank 0
        before = held_out_think_accuracy(lm.model, lm.tokenizer, task, eval_n, budget, cfg) if measure else {}
        summary = trainer.train(resume=resume, progress=progress)
        if measure:
            # Untrained weights are the input model's: the greedy measurement after would repeat the one before.
            trained = not summary["trained_nothing"]
            after = held_out_think_accuracy(lm.model, lm.tokenizer, task, eval_n, budget, cfg) if trained else before
            summary.update({"eval_n": eval_n, **{f"{k}_before": v for k, v in before.items()}})
            summary.update({f"{k}_after": v for k, v in after.items()})
        if rank == 0:
            write_json_file(out / f"{name}_summary.json", summary)
            message = untrained_steps_message(summary)
            if message:
                console.print(f"[yellow bold]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
