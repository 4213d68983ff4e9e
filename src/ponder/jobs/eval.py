"""``ponder eval``: accuracy of a model on a task, think and no-think."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.answers import ANSWER_RULE_HELP, check_rule
from ponder.data.bigbench import BigBenchTask
from ponder.data.registry import DEMO_TASK, get_task
from ponder.data.task import thought_budget
from ponder.errors import ConfigError
from ponder.eval.accuracy import EvalResult, evaluate
from ponder.lm.thinking import ThinkSettings
from ponder.models.lookup import load_model


class EvalJob(ThinkSettings, BaseModel):
    """Settings of ``ponder eval`` (the thought format: :class:`~ponder.lm.thinking.ThinkSettings`, as every
    job that samples)."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(
        DEMO_TASK, description="task name (see `ponder tasks`), rg:<reasoning-gym name> or a BIG-bench task.json"
    )
    n: int = Field(200, ge=1, description="problems evaluated (of --split)")
    split: Literal["test", "train", "all"] = Field(
        "test",
        description="problems drawn from: test (held out), train, or all (BIG-bench files only: every example, "
        "drawn as BIG-bench's max_examples; --seed 42 is BIG-bench's own draw)",
    )
    answer_rule: str | None = Field(None, description=ANSWER_RULE_HELP)
    shots: int = Field(
        0,
        ge=0,
        description="BIG-bench files: examples with their targets before each prompt, drawn as BIG-bench's "
        "few-shot format does (with --split all)",
    )
    samples: int | None = Field(
        None, ge=0, description="examples (prompt, raw output, answer, scores) stored per mode in --json; none: all"
    )
    seed: int = Field(0, description="seed of the problem draw and of sampling")
    k: int = Field(1, ge=1, description="samples per problem for pass@k and maj@k (1 = greedy only)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature for pass@k / maj@k")
    mode: Literal["both", "think", "no_think"] = Field("both", description="which modes to measure")
    max_thought_tokens: int | None = Field(None, ge=1, description="thought budget (default: from the task, else 256)")
    max_answer_tokens: int = Field(32, ge=1, description="answer budget")
    batch_size: int = Field(64, ge=1, description="prompts per generation batch")
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda when available)")


def run_eval(job: EvalJob, progress: bool = True) -> EvalResult:
    """Accuracy of ``job.model`` on ``job.n`` held-out problems of ``job.task``: what ``ponder eval`` runs.

    Args:
        job: the settings (model, task, n, k, temperature, mode, budgets).
        progress: show a progress bar.

    Returns:
        The ``EvalResult`` of each mode (think, no_think), with greedy accuracy and, for ``k > 1``,
            pass@k and maj@k; ``to_json()`` gives the figures ``--json`` writes.
    """
    task = get_task(job.task)
    if job.answer_rule is not None:
        task.answer_rule = check_rule(job.answer_rule)
    if job.split == "all" and not isinstance(task, BigBenchTask):
        raise ConfigError(f"--split all is for BIG-bench task files; {task.name} has a train and a test split")
    if job.shots:
        if not isinstance(task, BigBenchTask) or job.split != "all":
            raise ConfigError("--shots is for BIG-bench task files with --split all (BIG-bench's few-shot draw)")
        task.shots = job.shots
    lm = load_model(job.model, device=job.device, think_settings=job)
    budget = job.max_thought_tokens
    if budget is None:
        budget = thought_budget(task) if hasattr(task, "sample") else 256
    modes = ("think", "no_think") if job.mode == "both" else (job.mode,)
    return evaluate(
        lm.model,
        lm.tokenizer,
        task,
        n=job.n,
        seed=job.seed,
        modes=modes,
        model_name=job.model,
        k=job.k,
        temperature=job.temperature,
        max_thought_tokens=budget,
        max_answer_tokens=job.max_answer_tokens,
        batch_size=job.batch_size,
        progress=progress,
        split=job.split,
        think_settings=ThinkSettings.of(job),
    )
