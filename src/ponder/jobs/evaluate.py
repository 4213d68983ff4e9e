"""``ponder eval``: accuracy of a model on a task, think and no-think."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ponder.config import SETTINGS
from ponder.data.registry import DEMO_TASK, get_task
from ponder.eval import EvalResult, evaluate
from ponder.jobs.base import thought_budget
from ponder.jobs.models import load_model


class EvalJob(BaseModel):
    """Settings of ``ponder eval``."""

    model_config = SETTINGS
    model: str = Field(
        "tiny",
        description="tiny, tiny-lazy, smollm2-135m, a random-init shape (smollm2-135m-shape, qwen3-0.6b-shape[:LAYERS]), a HF model directory or a .gguf file",
    )
    task: str = Field(
        DEMO_TASK, description="task name (see `ponder tasks`), rg:<reasoning-gym name> or a BIG-bench task.json"
    )
    n: int = Field(200, ge=1, description="held-out problems")
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
    lm = load_model(job.model, device=job.device)
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
    )
